"""``text_encoder`` cases: the OpenCLIP text tower (tokens, its causal mask, every block's residual stream, both
layers)."""

from __future__ import annotations

import dataclasses

import torch

from vc2_core.config import TextEncoderConfig
from vc2_core.text import TextEncoder, Tokenizer

ATOL = 1e-4  # FORMAT.md section 3
SEES = 1e-6  # a change above float32 rounding at |x| ~ 1: position i sees token j (measured changes >= 3.7e-3)
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


def visible_tokens(encoder: TextEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """(L, L) bool, [i, j]: whether the first block's output at position i changes when token j of ``tokens``
    (L,) changes. Besides its own token (the residual path), a position sees tokens only through attention,
    so this is the mask the encoder applies, however transformers builds it (it may pass no mask tensor)."""
    length = tokens.shape[0]
    changed = tokens.repeat(length, 1)  # (L, L): row j has token j replaced
    positions = torch.arange(length)
    changed[positions, positions] = (tokens + 1) % encoder.config.vocab_size
    first_block = encoder.hidden_states(torch.cat([tokens[None], changed]))[0]  # (1 + L, L, width)
    change = (first_block[1:] - first_block[:1]).abs().amax(-1)  # (L changed tokens j, L positions i)
    return change.T > SEES


def _check_attention_mask(case, encoder: TextEncoder, tokens: torch.Tensor) -> None:
    """``buf.model.attn_mask`` (0 where query i sees key j, -inf elsewhere) against what our encoder does."""
    buffers = case.with_prefix("buf.")
    unknown = sorted(set(buffers) - {"model.attn_mask"})
    assert not unknown, f"buffers not reproduced by vc2: {['buf.' + k for k in unknown]}"
    if "model.attn_mask" not in buffers:
        return
    mask = buffers["model.attn_mask"]
    sees, hidden = mask == 0, mask == float("-inf")
    assert bool((sees | hidden).all()), "buf.model.attn_mask: entries other than 0 and -inf"
    ours = visible_tokens(encoder, tokens[0])
    assert ours.shape == mask.shape, f"buf.model.attn_mask: shape {tuple(mask.shape)} != ours {tuple(ours.shape)}"
    wrong = (ours != sees).nonzero().tolist()
    assert not wrong, (f"buf.model.attn_mask: our encoder differs at {len(wrong)} (query, key) pairs, e.g. "
                       f"{wrong[0]} (the golden {'sees' if sees[tuple(wrong[0])] else 'hides'} it)")


def produce(case) -> dict[str, torch.Tensor]:
    embedder = case.config["FrozenOpenCLIPEmbedder"]
    config = encoder_config(case.config, embedder.get("layer", "last"))
    encoder = TextEncoder(config).eval()
    encoder.load_official_state_dict(case.with_prefix("sd."))
    tokens = Tokenizer(config.context_length)(case.sidecar["prompts"])
    recorded = case.tensors["in.tokens"]
    differing = (tokens != recorded).any(1).nonzero().flatten().tolist()
    assert not differing, f"token ids differ from open_clip's in prompts {differing}"
    _check_attention_mask(case, encoder, tokens)
    out = {f"hidden_{i}": h for i, h in enumerate(encoder.hidden_states(tokens))}
    for layer in ("penultimate", "last"):
        other = TextEncoder(dataclasses.replace(config, layer=layer)).eval()
        other.load_state_dict(encoder.state_dict())
        out[f"z_{layer}"] = other(tokens)
    return out
