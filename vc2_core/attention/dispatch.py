"""One attention function over the registered backends (:mod:`.backends`), the backend chosen per call.

Choosing a backend, strongest first: the ``backend`` argument of :func:`attention` (one call); the
innermost ``with attention_backend(name):`` block around the calls (the CLI's ``--attention``, the
training config's ``model.attention``, the ComfyUI loader's ``attention`` input, carried by the
VC2_MODEL and entered by the sampler and fine-tune nodes); else ``VC2_ATTENTION`` from the
environment, read at the call; else ``auto``. Modules store no backend.

The block's choice is kept per thread in a ``threading.local``, not a ``contextvars.ContextVar``:
torch.compile cannot trace ``ContextVar.get`` (a graph break at every attention call), while it reads a
thread-local attribute and guards on it, so a compiled UNet is retraced when a block changes the choice.
Under torch.compile, ``VC2_ATTENTION`` is read once, when the graph is traced.

Which backend ran is observable: inside ``with count_backend_calls() as counts:``, ``counts`` (a
``Counter``) counts this thread's eager calls by the backend that computed them (the parity tests use it
to show that a rerun with ``math`` or ``triton`` really ran on it). Calls inside a compiled graph are not
counted.

A fallback is never silent: when the asked-for backend does not cover a call (``triton`` and
cross-attention, say) and the call runs on another, a warning says so once per ``attention_backend``
block (once per process outside blocks) and :func:`fallback_counts` counts it: per call, and under
torch.compile per trace (see :mod:`.traced_fallbacks`). ``auto`` picking SDPA is its rule, not a fallback.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .backends import AUTO
from .constraints import AttentionCall
from .registry import backend_names, check_backend_name, resolve_backend

Tensor = torch.Tensor
log = logging.getLogger(__name__)

_BLOCK = threading.local()  # .name and .logged of this thread's innermost attention_backend block
_LOGGED_OUTSIDE_BLOCKS: set[tuple[str, str]] = set()  # (requested, check) warned about outside any block
_FALLBACKS: collections.Counter[tuple[str, str]] = collections.Counter()  # (requested, used) -> calls
_COUNTING = threading.local()  # .counts: the Counter of this thread's innermost count_backend_calls block


def default_backend() -> str:
    """The backend outside any block: ``VC2_ATTENTION`` from the environment (read now), else ``auto``."""
    name = os.environ.get("VC2_ATTENTION", AUTO)
    if name not in backend_names():
        raise ValueError(f"VC2_ATTENTION={name!r} is not an attention backend; "
                         f"choose one of {', '.join(backend_names())}")
    return name


def current_backend() -> str:
    """The backend attention calls of this thread use now (see the module docstring)."""
    name = getattr(_BLOCK, "name", None)
    return default_backend() if name is None else name


@contextmanager
def attention_backend(name: str | None) -> Iterator[str]:
    """Run the attention calls of the block (in this thread) with backend ``name``; None: :func:`default_backend`.

    Yields the name in use. Enter it around backward passes too where gradient checkpointing recomputes
    attention."""
    chosen = default_backend() if name is None else check_backend_name(name)
    outer = getattr(_BLOCK, "name", None), getattr(_BLOCK, "logged", None)
    _BLOCK.name, _BLOCK.logged = chosen, set()
    try:
        yield chosen
    finally:
        _BLOCK.name, _BLOCK.logged = outer


@contextmanager
def count_backend_calls() -> Iterator[collections.Counter[str]]:
    """Count the eager attention calls of the block (in this thread) by the backend that ran them.

    Yields a ``Counter`` {backend name: calls}, e.g. {"triton": 12, "sdpa": 4} when triton hands its
    cross-attention calls to SDPA. An enclosing block counts the calls of the blocks inside it too."""
    outer = getattr(_COUNTING, "counts", None)
    counts: collections.Counter[str] = collections.Counter()
    _COUNTING.counts = counts
    try:
        yield counts
    finally:
        _COUNTING.counts = outer
        if outer is not None:
            outer.update(counts)


def fallback_counts() -> dict[tuple[str, str], int]:
    """{(backend asked for, backend that ran): calls} of every fallback in this process so far."""
    return dict(_FALLBACKS)


def note_fallback(requested: str, used: str, check: str, reason: str) -> bool:
    """Count a call that ran on ``used`` for want of ``check`` in ``requested``; warn once per kind and block."""
    _FALLBACKS[requested, used] += 1
    logged = getattr(_BLOCK, "logged", None)
    logged = _LOGGED_OUTSIDE_BLOCKS if logged is None else logged
    if (requested, check) not in logged:
        logged.add((requested, check))
        log.warning("attention backend %r does not cover some calls (%s); they run on %r (logged once; "
                    "vc2_core.attention.fallback_counts() counts them)", requested, reason, used)
    return True


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, backend: str | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v over (batch, seq, heads, head_dim) tensors.

    q: (B, Lq, H, D); k, v: (B, Lk, H, D). Returns (B, Lq, H, D) in q's dtype. ``causal`` needs Lq == Lk.
    ``backend``: a name of :func:`backend_names`; None: :func:`current_backend`.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q (B,Lq,H,D) and k, v (B,Lk,H,D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal attention needs as many queries as keys; got {q.shape[1]} and {k.shape[1]}")
    name = current_backend() if backend is None else backend
    chosen, fallback = resolve_backend(name, AttentionCall.of(q, k, v))
    if fallback is not None and torch.compiler.is_compiling():
        from .traced_fallbacks import note_fallback_when_traced

        note_fallback_when_traced(fallback.requested, fallback.used, fallback.check)
    elif fallback is not None:
        note_fallback(fallback.requested, fallback.used, fallback.check, fallback.reason)
    counts = getattr(_COUNTING, "counts", None)  # None outside count_backend_calls: one attribute read per call
    if counts is not None and not torch.compiler.is_compiling():
        counts[chosen.name] += 1
    return chosen.run(q, k, v, causal)
