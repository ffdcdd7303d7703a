"""Reusable checks of what an attention backend can run, over the facts of one call (never tensor values).

A check takes an :class:`AttentionCall` and returns None when the call meets it, else what the call lacks
("CUDA tensors only (got cpu)"). The registry (:mod:`.backends`) lists each backend's checks; the same checks
guard the Triton kernel (:mod:`vc2_core.kernels.temporal_attention`). Checks built by a function with a limit
(``sequence_at_most(64)``) carry that call in their ``__name__``, which names them in fallback messages.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class AttentionCall:
    """What decides which backend may run one call: devices, dtypes, shapes, gradients."""

    device: str  # q's device type: "cuda", "cpu", ...
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype]  # of q, k, v
    q_shape: tuple[int, ...]  # (batch, Lq, heads, head_dim)
    k_shape: tuple[int, ...]  # (batch, Lk, heads, head_dim); v has the same
    needs_grad: bool  # autograd will differentiate through the call

    @classmethod
    def of(cls, q: Tensor, k: Tensor, v: Tensor) -> AttentionCall:
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        return cls(q.device.type, (q.dtype, k.dtype, v.dtype), tuple(q.shape), tuple(k.shape), needs_grad)


Check = Callable[[AttentionCall], str | None]


def first_unmet(checks: Iterable[Check], call: AttentionCall) -> tuple[Check, str] | None:
    """The first check ``call`` fails and what it says, or None when it meets them all."""
    for check in checks:
        reason = check(call)
        if reason is not None:
            return check, reason
    return None


def on_cuda(call: AttentionCall) -> str | None:
    return None if call.device == "cuda" else f"CUDA tensors only (got {call.device})"


def on_cuda_or_triton_interpreter(call: AttentionCall) -> str | None:
    """CUDA, or any device while ``TRITON_INTERPRET=1`` (read at the call) runs Triton's interpreter on the CPU."""
    if call.device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"CUDA tensors only (got {call.device}; TRITON_INTERPRET=1 runs Triton on the CPU)"


def self_attention(call: AttentionCall) -> str | None:
    if call.q_shape == call.k_shape:
        return None
    return f"self-attention shapes only (q {call.q_shape}, k {call.k_shape})"


def non_empty(call: AttentionCall) -> str | None:
    batch, _, heads, _ = call.q_shape
    return None if batch * heads else "non-empty batches only"


def without_gradients(call: AttentionCall) -> str | None:
    return "inference only (this call needs gradients)" if call.needs_grad else None


def sequence_at_most(limit: int) -> Check:
    def check(call: AttentionCall) -> str | None:
        length = max(call.q_shape[1], call.k_shape[1])
        return None if length <= limit else f"sequences of at most {limit} (got {length})"

    check.__name__ = f"sequence_at_most({limit})"
    return check


def head_dim_at_most(limit: int) -> Check:
    def check(call: AttentionCall) -> str | None:
        return None if call.q_shape[3] <= limit else f"head dims of at most {limit} (got {call.q_shape[3]})"

    check.__name__ = f"head_dim_at_most({limit})"
    return check


def dtypes_in(allowed: tuple[torch.dtype, ...]) -> Check:
    """q, k and v of one dtype, one of ``allowed``."""
    names = "/".join(str(dtype).removeprefix("torch.") for dtype in allowed)

    def check(call: AttentionCall) -> str | None:
        q_dtype = call.dtypes[0]
        if q_dtype in allowed and all(dtype == q_dtype for dtype in call.dtypes):
            return None
        got = ", ".join(str(dtype) for dtype in call.dtypes)
        return f"{names} inputs of one dtype only (got {got})"

    check.__name__ = f"dtypes_in({names})"
    return check


def installed(module: str, missing: str) -> Check:
    """Passes when ``import module`` can find the module; ``missing`` is the message when it cannot."""

    def check(call: AttentionCall) -> str | None:
        return None if module_installed(module) else missing

    check.__name__ = f"installed({module})"
    return check


_INSTALLED: dict[str, bool] = {}  # memo of facts that cannot change while the process runs


def module_installed(name: str) -> bool:
    if name not in _INSTALLED:
        _INSTALLED[name] = importlib.util.find_spec(name) is not None
    return _INSTALLED[name]
