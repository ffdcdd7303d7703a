"""Compute dtypes by name, and the per-network dtypes of inference. Light: imports torch only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model import VideoCrafter

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def inference_dtypes(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """Per network compute dtype: all in ``dtype``, but the VAE stays float32 under fp16 (its decoder
    overflows fp16 at video sizes; bf16 has the range)."""
    return {"unet": dtype, "text_encoder": dtype, "vae": torch.float32 if dtype == torch.float16 else dtype}


def cast_for_inference(model: VideoCrafter, dtype: torch.dtype) -> VideoCrafter:
    """Cast the networks to their :func:`inference_dtypes` in place; returns the model."""
    for name, module_dtype in inference_dtypes(dtype).items():
        getattr(model, name).to(dtype=module_dtype)
    return model
