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
"""

from __future__ import annotations

import importlib
import importlib.util
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


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Add a backend (the Triton kernels register themselves through this)."""
    _REGISTRY[backend.name] = backend


register_backend(Backend("math", _math, _math_unsupported))
register_backend(Backend("sdpa", _sdpa, _sdpa_unsupported))
register_backend(Backend("xformers", _xformers, _xformers_unsupported))


def backend_names() -> tuple[str, ...]:
    """Names accepted by :func:`attention` (``auto`` plus every registered backend)."""
    return (AUTO, *_REGISTRY)


def check_backend_name(name: str) -> str:
    if name != AUTO and name not in _REGISTRY:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(backend_names())}")
    return name


def resolve_backend(name: str, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Backend:
    """The backend that will run these inputs. ``auto`` is SDPA everywhere (it picks its own kernel)."""
    check_backend_name(name)
    chosen = _REGISTRY["sdpa" if name == AUTO else name]
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
    "Backend",
    "attention",
    "backend_names",
    "check_backend_name",
    "register_backend",
    "relative_position_attention",
    "resolve_backend",
]
