"""Compute dtypes by name, and the per-network dtypes of inference. Light: imports torch only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model import VideoCrafter

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def inference_dtypes(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """Per network compute dtype: the UNet and the text encoder in ``dtype``, the VAE always in float32 (its
    decoder overflows fp16 at video sizes, and it is a small share of the work: bf16 would only round the
    pictures)."""
    return {"unet": dtype, "text_encoder": dtype, "vae": torch.float32}


def cast_for_inference(model: VideoCrafter, dtype: torch.dtype) -> VideoCrafter:
    """Cast the networks to their :func:`inference_dtypes` in place; returns the model."""
    for name, module_dtype in inference_dtypes(dtype).items():
        getattr(model, name).to(dtype=module_dtype)
    return model
