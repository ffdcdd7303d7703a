"""One attention function over registered backends.

Every backend takes and returns the same layout, ``(batch, seq, heads, head_dim)`` ("BLHD"),
uses the scale ``head_dim ** -0.5`` and, with ``causal=True``, lets query i see keys j <= i
(square attention only). Nothing is probed at import time: a backend checks that it can run
when it is asked to, and says why not.

Backends:
- ``math``: float32 einsum + softmax, the reference every other backend is tested against;
  masked logits are ``-finfo(float32).max`` exactly as the official code writes them.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient /
  cuDNN / math kernels chosen by PyTorch); the default on every device.
- ``xformers``: ``xformers.ops.memory_efficient_attention``; CUDA only, when installed.
- ``triton``: the project's fused short-sequence kernel (:mod:`vc2_core.kernels.temporal_attention`)
  for self-attention over at most 64 positions with head dims up to 128, and SDPA for the
  calls it does not cover (so a whole UNet can be set to it); CUDA, or the CPU under
  ``TRITON_INTERPRET=1``; needs Triton installed.

``auto`` (:data:`AUTO_RULE`) picks ``triton`` for short self-attention (the temporal layers) on
CUDA in fp16/bf16 in inference when Triton is installed, and ``sdpa`` for everything else,
training included. Choosing a
backend: the ``backend`` argument here, ``unet.set_attention_backend(name)``, the CLI's
``--attention``, the training config's ``model.attention``, the ComfyUI loader's ``attention``
input; the environment variable ``VC2_ATTENTION`` sets the default of layers when they are built.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# ``auto`` resolves by DEFAULT_RULE below; the other names are registered backends.
AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[[Tensor, Tensor, Tensor, bool], Tensor]
    # Returns None when the backend can run these inputs, else the reason it cannot.
    unsupported: Callable[[Tensor, Tensor, Tensor, bool], str | None]


def _reference_dtype(x: Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs: the math paths never compute below float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _math(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    dtype = _reference_dtype(q)
    scale = q.shape[-1] ** -0.5
    logits = torch.einsum("bqhd,bkhd->bhqk", q.to(dtype), k.to(dtype)) * scale  # (B, H, Lq, Lk)
    if causal:
        visible = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~visible, -torch.finfo(torch.float32).max)
    probs = logits.softmax(dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v.to(dtype))  # (B, Lq, H, D)
    return out.to(q.dtype)


def _math_unsupported(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> str | None:
    return None


def _sdpa(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    # SDPA wants (B, H, L, D); transposes are views, SDPA reads the strides.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


def _sdpa_unsupported(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> str | None:
    return None


def _xformers(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    ops = importlib.import_module("xformers.ops")
    bias = ops.LowerTriangularMask() if causal else None
    return ops.memory_efficient_attention(q.contiguous(), k.contiguous(), v.contiguous(), attn_bias=bias)


def _xformers_unsupported(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> str | None:
    if q.device.type != "cuda":
        return f"xformers runs on CUDA tensors only (got {q.device.type})"
    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed (pip install 'vc2[xformers]')"
    return None


def _kernel_module():
    # an import statement, not importlib: torch.compile traces through it without a graph break
    from ..kernels import temporal_attention

    return temporal_attention


def _triton(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """The fused kernel where it applies (short self-attention), SDPA for the other calls of a UNet."""
    kernel = _kernel_module()
    if kernel.unsupported_reason(q, k, v) is None:
        return kernel.temporal_attention(q, k, v, causal)
    return _sdpa(q, k, v, causal)


def _triton_unsupported(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> str | None:
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"the Triton kernel runs on CUDA tensors (got {q.device.type}; TRITON_INTERPRET=1 runs it on the CPU)"
    if not triton_installed():
        return "Triton is not installed (it comes with PyTorch's CUDA builds; pip install triton)"
    return None


_TRITON_INSTALLED: list[bool] = []  # memo of a fact that cannot change while the process runs


def triton_installed() -> bool:
    if not _TRITON_INSTALLED:
        _TRITON_INSTALLED.append(importlib.util.find_spec("triton") is not None)
    return _TRITON_INSTALLED[0]


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Add a backend (the Triton kernels register themselves through this)."""
    _REGISTRY[backend.name] = backend


register_backend(Backend("math", _math, _math_unsupported))
register_backend(Backend("sdpa", _sdpa, _sdpa_unsupported))
register_backend(Backend("xformers", _xformers, _xformers_unsupported))
register_backend(Backend("triton", _triton, _triton_unsupported))

# Longest self-attention ``auto`` sends to the Triton kernel (measured: docs/benchmarks.md).
AUTO_TRITON_MAX_SEQ = 64
AUTO_RULE = (f"triton for self-attention of at most {AUTO_TRITON_MAX_SEQ} positions on CUDA in fp16/bf16 "
             "without gradients (inference) when Triton is installed and the kernel supports the head dim; "
             "sdpa otherwise (training: a VC2-512 step is faster with SDPA's backward on an H100)")


def backend_names() -> tuple[str, ...]:
    """Names accepted by :func:`attention` (``auto`` plus every registered backend)."""
    return (AUTO, *_REGISTRY)


def check_backend_name(name: str) -> str:
    if name != AUTO and name not in _REGISTRY:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(backend_names())}")
    return name


def default_backend() -> str:
    """The backend layers start with: ``VC2_ATTENTION`` from the environment, else ``auto``."""
    name = os.environ.get("VC2_ATTENTION", AUTO)
    if name != AUTO and name not in _REGISTRY:
        raise ValueError(f"VC2_ATTENTION={name!r} is not an attention backend; "
                         f"choose one of {', '.join(backend_names())}")
    return name


def auto_prefers_triton(device_type: str, dtype: torch.dtype, q_shape: tuple[int, ...], k_shape: tuple[int, ...],
                        needs_grad: bool) -> bool:
    """The measured part of :data:`AUTO_RULE`: short half-precision self-attention on CUDA, in inference."""
    short_self_attention = tuple(q_shape) == tuple(k_shape) and q_shape[1] <= AUTO_TRITON_MAX_SEQ
    return (device_type == "cuda" and dtype in (torch.float16, torch.bfloat16) and short_self_attention
            and not needs_grad)


def _auto(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Backend:
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if (auto_prefers_triton(q.device.type, q.dtype, q.shape, k.shape, needs_grad)
            and triton_installed() and _kernel_module().unsupported_reason(q, k, v) is None):
        return _REGISTRY["triton"]
    return _REGISTRY["sdpa"]


def resolve_backend(name: str, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Backend:
    """The backend that will run these inputs; ``auto`` follows :data:`AUTO_RULE`."""
    check_backend_name(name)
    if name == AUTO:
        return _auto(q, k, v, causal)
    chosen = _REGISTRY[name]
    reason = chosen.unsupported(q, k, v, causal)
    if reason is not None:
        raise RuntimeError(f"attention backend {chosen.name!r} cannot run here: {reason}")
    return chosen


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, backend: str = AUTO) -> Tensor:
    """softmax(q k^T / sqrt(d)) v over (batch, seq, heads, head_dim) tensors.

    q: (B, Lq, H, D); k, v: (B, Lk, H, D). Returns (B, Lq, H, D) in q's dtype.
    ``causal`` needs Lq == Lk.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q (B,Lq,H,D) and k, v (B,Lk,H,D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal attention needs as many queries as keys; got {q.shape[1]} and {k.shape[1]}")
    return resolve_backend(backend, q, k, v, causal).run(q, k, v, causal)


def relative_position_attention(q: Tensor, k: Tensor, v: Tensor, rel_k: Tensor, rel_v: Tensor,
                                *, causal: bool = False) -> Tensor:
    """Attention with VideoCrafter1's relative-position terms (math in float32, or float64 for float64 inputs).

    q: (B, G, Lq, H, D) where the G groups share the keys and query i has position i;
    k, v: (B, Lk, H, D); rel_k, rel_v: (Lq, Lk, D) tables gathered at clamp(j - i).
    logits[i, j] = (q_i . k_j + q_i . rel_k[i, j]) / sqrt(D);  out_i = sum_j p_ij (v_j + rel_v[i, j]).
    Returns (B, G, Lq, H, D).
    """
    dtype = _reference_dtype(q)
    scale = q.shape[-1] ** -0.5
    qf, kf, vf = q.to(dtype), k.to(dtype), v.to(dtype)
    logits = torch.einsum("bgihd,bjhd->bghij", qf, kf) * scale
    logits = logits + torch.einsum("bgihd,ijd->bghij", qf, rel_k.to(dtype)) * scale
    if causal:
        visible = torch.ones(q.shape[2], k.shape[1], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~visible, -torch.finfo(torch.float32).max)
    probs = logits.softmax(dim=-1)  # (B, G, H, Lq, Lk)
    out = torch.einsum("bghij,bjhd->bgihd", probs, vf)
    out = out + torch.einsum("bghij,ijd->bgihd", probs, rel_v.to(dtype))
    return out.to(q.dtype)


__all__ = [
    "AUTO",
    "AUTO_RULE",
    "Backend",
    "attention",
    "backend_names",
    "check_backend_name",
    "default_backend",
    "register_backend",
    "relative_position_attention",
    "resolve_backend",
    "triton_installed",
]
