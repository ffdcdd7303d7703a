"""The OpenCLIP ViT-H/14 text tower of VideoCrafter, on transformers' CLIPTextModel, and its tokenizer.

The UNet reads the *penultimate* layer: the residual stream after all transformer blocks but
the last, through the final LayerNorm, for all 77 tokens (no pooling, no projection). Only the
causal mask is used, so padding tokens (id 0) are encoded too and reach the UNet.

Weights load from and save to the official ``cond_stage_model.model.*`` layout (open_clip 2.22
names, q/k/v packed in ``in_proj_weight``), including the unused ``text_projection`` and
``logit_scale``, so a save is bit-exact.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from pathlib import Path

import ftfy
import torch
import torch.nn as nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .config import TextEncoderConfig

Tensor = torch.Tensor
TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip_tokenizer"
START, END, PAD = 49406, 49407, 0


class Tokenizer:
    """Token ids identical to ``open_clip.tokenize``: cleaned text, BPE, start/end tokens, padded with 0.

    Loaded from the files shipped in ``vc2_core/assets/clip_tokenizer`` (never from the network).
    A prompt longer than the context is cut, its last kept token set to the end token, as
    open_clip does, with a warning.
    """

    def __init__(self, context_length: int = 77):
        self.context_length = context_length
        self._bpe = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=10**6)

    @staticmethod
    def clean(text: str) -> str:
        """open_clip's cleaning: ftfy, HTML entities (twice), whitespace collapsed, lower case."""
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return re.sub(r"\s+", " ", text).strip().lower()

    def __call__(self, prompts: list[str]) -> Tensor:
        """(n, context_length) int64 token ids."""
        if isinstance(prompts, str):
            raise TypeError("pass a list of prompts, not a single string")
        rows = []
        for prompt in prompts:
            ids = self._bpe(self.clean(prompt), add_special_tokens=True)["input_ids"]  # [START, ..., END]
            if len(ids) > self.context_length:
                warnings.warn(f"prompt of {len(ids)} tokens cut to {self.context_length} (as the official "
                              f"encoder does): {prompt[:60]!r}...", stacklevel=2)
                ids = ids[: self.context_length - 1] + [END]
            rows.append(ids + [PAD] * (self.context_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.context_length)


def _official_block_keys(index: int) -> list[str]:
    prefix = f"model.transformer.resblocks.{index}."
    names = ["ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
             "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
             "mlp.c_proj.weight", "mlp.c_proj.bias"]
    return [prefix + name for name in names]


# open_clip name inside a block -> transformers name inside ``encoder.layers.N`` of the text tower
_BLOCK_RENAMES = {
    "ln_1": "layer_norm1", "attn.out_proj": "self_attn.out_proj", "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_TOP_RENAMES = {
    "model.token_embedding.weight": "embeddings.token_embedding.weight",
    "model.positional_embedding": "embeddings.position_embedding.weight",
    "model.ln_final.weight": "final_layer_norm.weight",
    "model.ln_final.bias": "final_layer_norm.bias",
}
_UNUSED = ("model.text_projection", "model.logit_scale")  # stored, kept for saving, not used by t2v


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.clip = CLIPTextModel(CLIPTextConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.width,
            intermediate_size=int(config.width * config.mlp_ratio),
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            max_position_embeddings=config.context_length,
            hidden_act="gelu",  # exact erf GELU, as ViT-H-14
            layer_norm_eps=1e-5,
            projection_dim=config.embed_dim,
            bos_token_id=START,
            eos_token_id=END,
            pad_token_id=PAD,
        ))
        # open_clip's initial values; real checkpoints overwrite them
        self.register_buffer("text_projection", torch.randn(config.width, config.embed_dim) * config.width**-0.5)
        self.register_buffer("logit_scale", torch.tensor(math.log(1 / 0.07)))
        self._tokenizer: Tokenizer | None = None

    @property
    def tower(self) -> nn.Module:
        """The module holding embeddings / encoder / final_layer_norm (``text_model`` before transformers 5)."""
        return getattr(self.clip, "text_model", self.clip)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.config.context_length)
        return self._tokenizer

    def hidden_states(self, tokens: Tensor) -> list[Tensor]:
        """Residual stream after each block, before the final LayerNorm: L tensors (n, 77, width)."""
        return list(self.clip(input_ids=tokens, output_hidden_states=True).hidden_states[1:])

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (n, 77) int64 -> (n, 77, width): the configured layer, through the final LayerNorm."""
        if tokens.ndim != 2 or tokens.shape[1] != self.config.context_length:
            raise ValueError(f"expected tokens (n, {self.config.context_length}); got {tuple(tokens.shape)}")
        out = self.clip(input_ids=tokens, output_hidden_states=self.config.layer == "penultimate")
        if self.config.layer == "last":
            return out.last_hidden_state
        return self.tower.final_layer_norm(out.hidden_states[-2])

    def encode(self, prompts: list[str]) -> Tensor:
        """Prompts -> (n, 77, width) on the encoder's device and dtype. The unconditional prompt is ""."""
        return self(self.tokenizer(prompts).to(self.text_projection.device))

    # ---- weights ---------------------------------------------------------------------------

    def official_keys(self) -> list[str]:
        blocks = [key for i in range(self.config.layers) for key in _official_block_keys(i)]
        return ["model.positional_embedding", *_UNUSED, *blocks, "model.token_embedding.weight",
                "model.ln_final.weight", "model.ln_final.bias"]

    def load_official_state_dict(self, state_dict: dict[str, Tensor], assign: bool = False) -> None:
        """Load official keys (``model.*``, i.e. ``cond_stage_model.`` stripped)."""
        expected = self.official_keys()
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in set(expected)]
        if missing or unexpected:
            raise ValueError(f"text encoder state dict does not match the config ({self.config.layers} blocks, "
                             f"width {self.config.width}): missing {missing[:8]}, unexpected {unexpected[:8]}")
        converted = {_TOP_RENAMES[k]: v for k, v in state_dict.items() if k in _TOP_RENAMES}
        for index in range(self.config.layers):
            source, target = f"model.transformer.resblocks.{index}.", f"encoder.layers.{index}."
            for old, new in _BLOCK_RENAMES.items():
                for param in ("weight", "bias"):
                    converted[f"{target}{new}.{param}"] = state_dict[f"{source}{old}.{param}"]
            for param, packed in (("weight", "attn.in_proj_weight"), ("bias", "attn.in_proj_bias")):
                q, k, v = state_dict[source + packed].chunk(3, dim=0)
                converted.update({f"{target}self_attn.{name}_proj.{param}": part
                                  for name, part in zip("qkv", (q, k, v))})
        own = self.tower.state_dict()
        wrong = [f"{k}: {list(v.shape)} vs {list(own[k].shape)}"
                 for k, v in converted.items() if v.shape != own[k].shape]
        for key, buffer in zip(_UNUSED, (self.text_projection, self.logit_scale)):
            if state_dict[key].shape != buffer.shape:
                wrong.append(f"{key}: {list(state_dict[key].shape)} vs {list(buffer.shape)}")
        if wrong:
            raise ValueError(f"text encoder tensors with the wrong shape: {wrong[:8]}")
        self.tower.load_state_dict(converted, strict=False, assign=assign)
        unset = set(own) - set(converted) - {"embeddings.position_ids"}
        if unset:
            raise ValueError(f"text encoder weights not covered by the checkpoint: {sorted(unset)[:8]}")
        if assign:
            self.text_projection = state_dict["model.text_projection"]
            self.logit_scale = state_dict["model.logit_scale"]
        else:
            self.text_projection.copy_(state_dict["model.text_projection"])
            self.logit_scale.copy_(state_dict["model.logit_scale"])

    def official_state_dict(self) -> dict[str, Tensor]:
        """The weights under the official keys, shapes and order (q/k/v packed again)."""
        own = self.tower.state_dict()
        state = {"model.positional_embedding": own[_TOP_RENAMES["model.positional_embedding"]],
                 "model.text_projection": self.text_projection, "model.logit_scale": self.logit_scale}
        for index in range(self.config.layers):
            source, target = f"model.transformer.resblocks.{index}.", f"encoder.layers.{index}."
            for param, packed in (("weight", "attn.in_proj_weight"), ("bias", "attn.in_proj_bias")):
                state[source + packed] = torch.cat([own[f"{target}self_attn.{n}_proj.{param}"] for n in "qkv"])
            for old, new in _BLOCK_RENAMES.items():
                for param in ("weight", "bias"):
                    state[f"{source}{old}.{param}"] = own[f"{target}{new}.{param}"]
        for official in ("model.token_embedding.weight", "model.ln_final.weight", "model.ln_final.bias"):
            state[official] = own[_TOP_RENAMES[official]]
        return {key: state[key] for key in self.official_keys()}

    @staticmethod
    def config_from_official_state_dict(state_dict: dict[str, Tensor], heads: int | None = None,
                                        layer: str = "penultimate") -> TextEncoderConfig:
        """Width, depth, vocabulary, context and projection from the shapes.

        The head count is not stored in the weights: without ``heads`` it is width // 64, the
        head width of every OpenCLIP text tower (ViT-H/14: 1024 / 16).
        """
        vocab, width = state_dict["model.token_embedding.weight"].shape
        layers = 1 + max(int(k.split(".")[3]) for k in state_dict if k.startswith("model.transformer.resblocks."))
        hidden = state_dict["model.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        return TextEncoderConfig(width=width, layers=layers, heads=heads or max(1, width // 64), vocab_size=vocab,
                                 context_length=state_dict["model.positional_embedding"].shape[0],
                                 mlp_ratio=hidden / width, embed_dim=state_dict["model.text_projection"].shape[1],
                                 layer=layer)
