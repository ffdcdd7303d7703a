"""The attention backends, their checks, and ``auto``: an ordered preference over them.

Every backend takes and returns ``(batch, seq, heads, head_dim)`` tensors ("BLHD"), scales by
``head_dim ** -0.5`` and, with ``causal=True``, lets query i see keys j <= i (square attention only).

- ``math``: float32 einsum + softmax, the reference every other backend is tested against; masked
  logits are ``-finfo(float32).max`` exactly as the official code writes them.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient / cuDNN /
  math kernels chosen by PyTorch).
- ``xformers``: ``xformers.ops.memory_efficient_attention``; CUDA only, when installed.
- ``triton``: the project's fused short-sequence kernel (:mod:`vc2_core.kernels.temporal_attention`):
  self-attention over at most 64 positions with head dims up to 128; CUDA, or the CPU under
  ``TRITON_INTERPRET=1``; needs Triton. The calls it does not cover (cross-attention, long spatial
  self-attention) run on SDPA, logged and counted (:mod:`.dispatch`), so a whole UNet can use it.

``requires`` checks decide whether a backend can run at all here (asking for it otherwise is an
error); ``covers`` checks decide which calls it computes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels import temporal_attention_limits as kernel_limits
from .constraints import (
    Check,
    dtypes_in,
    head_dim_at_most,
    installed,
    non_empty,
    on_cuda,
    on_cuda_or_triton_interpreter,
    self_attention,
    sequence_at_most,
    without_gradients,
)

Tensor = torch.Tensor
AttentionFn = Callable[[Tensor, Tensor, Tensor, bool], Tensor]  # (q, k, v, causal) -> out


@dataclass(frozen=True)
class Backend:
    name: str
    run: AttentionFn
    requires: tuple[Check, ...] = ()  # unmet: this backend cannot run here, asking for it is an error
    covers: tuple[Check, ...] = ()  # unmet: the call runs on ``fallback`` instead (logged once, counted)
    fallback: str | None = None


@dataclass(frozen=True)
class Preference:
    """A name for "the first backend of ``order`` that runs this call": its own checks and the conditions given
    with it all hold. The last entry has neither, so some backend always runs."""

    name: str
    order: tuple[tuple[str, tuple[Check, ...]], ...]  # (backend name, extra conditions)


def reference_dtype(x: Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs: the math paths never compute below float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _math(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    dtype = reference_dtype(q)
    scale = q.shape[-1] ** -0.5
    logits = torch.einsum("bqhd,bkhd->bhqk", q.to(dtype), k.to(dtype)) * scale  # (B, H, Lq, Lk)
    if causal:
        visible = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~visible, -torch.finfo(torch.float32).max)
    probs = logits.softmax(dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v.to(dtype))  # (B, Lq, H, D)
    return out.to(q.dtype)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    # SDPA wants (B, H, L, D); transposes are views, SDPA reads the strides.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


def _xformers(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    ops = importlib.import_module("xformers.ops")
    bias = ops.LowerTriangularMask() if causal else None
    return ops.memory_efficient_attention(q.contiguous(), k.contiguous(), v.contiguous(), attn_bias=bias)


def _triton(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    # an import statement, not importlib: torch.compile traces through it without a graph break
    from ..kernels import temporal_attention

    return temporal_attention.temporal_attention(q, k, v, causal)


# The calls the Triton kernel computes (it refuses others with these same checks).
TEMPORAL_KERNEL_COVERS = (self_attention, sequence_at_most(kernel_limits.MAX_SEQ),
                          head_dim_at_most(kernel_limits.MAX_HEAD_DIM), dtypes_in(kernel_limits.DTYPES), non_empty)

BACKENDS = (
    Backend("math", _math),
    Backend("sdpa", _sdpa),
    Backend("xformers", _xformers,
            requires=(on_cuda, installed("xformers", "xformers is not installed (pip install 'vc2[xformers]')"))),
    Backend("triton", _triton,
            requires=(on_cuda_or_triton_interpreter,
                      installed("triton", "Triton is not installed (it comes with PyTorch's CUDA builds; "
                                          "pip install triton)")),
            covers=TEMPORAL_KERNEL_COVERS, fallback="sdpa"),
)

AUTO = "auto"
# Measured (docs/benchmarks.md, one H100): in inference the kernel is 2x the best SDPA kernel on the largest
# temporal layer of VC2-512 and the UNet 5 % faster; in a training step SDPA's backward wins (283 vs 342 ms).
AUTO_PREFERENCE = Preference(AUTO, (
    ("triton", (on_cuda, dtypes_in((torch.float16, torch.bfloat16)), without_gradients)),
    ("sdpa", ()),
))
