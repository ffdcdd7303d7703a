"""``text_encoder`` cases: the OpenCLIP text tower (tokens, every block's residual stream, both layers)."""

from __future__ import annotations

import dataclasses

import torch

from vc2_core.config import TextEncoderConfig
from vc2_core.text import TextEncoder, Tokenizer

ATOL = 1e-4  # FORMAT.md section 3
# open_clip text_cfg fields -> TextEncoderConfig fields (the others must keep open_clip's defaults)
TEXT_CFG = {"width": "width", "heads": "heads", "layers": "layers", "vocab_size": "vocab_size",
            "context_length": "context_length", "mlp_ratio": "mlp_ratio"}


def tolerance(name, expected):
    return "abs", ATOL


def encoder_config(config: dict, layer: str) -> TextEncoderConfig:
    clip = config["open_clip_model_config"]
    text_cfg = clip["text_cfg"]
    unknown = sorted(set(text_cfg) - set(TEXT_CFG))
    if unknown:
        raise AssertionError(f"open_clip text_cfg fields not reproduced by vc2: {unknown}")
    fields = {TEXT_CFG[k]: v for k, v in text_cfg.items()}
    return TextEncoderConfig(**fields, embed_dim=clip["embed_dim"], layer=layer)


def produce(case) -> dict[str, torch.Tensor]:
    embedder = case.config["FrozenOpenCLIPEmbedder"]
    config = encoder_config(case.config, embedder.get("layer", "last"))
    encoder = TextEncoder(config).eval()
    encoder.load_official_state_dict(case.with_prefix("sd."))
    tokens = Tokenizer(config.context_length)(case.sidecar["prompts"])
    recorded = case.tensors["in.tokens"]
    differing = (tokens != recorded).any(1).nonzero().flatten().tolist()
    assert not differing, f"token ids differ from open_clip's in prompts {differing}"
    out = {f"hidden_{i}": h for i, h in enumerate(encoder.hidden_states(tokens))}
    for layer in ("penultimate", "last"):
        other = TextEncoder(dataclasses.replace(config, layer=layer)).eval()
        other.load_state_dict(encoder.state_dict())
        out[f"z_{layer}"] = other(tokens)
    return out
