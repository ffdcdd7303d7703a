"""Attention as one function over a registry of backends, chosen per call (see :mod:`.dispatch`)."""

from .backends import AUTO
from .constraints import AttentionCall
from .dispatch import (
    attention,
    attention_backend,
    count_backend_calls,
    current_backend,
    default_backend,
    fallback_counts,
)
from .registry import backend_names, check_backend_name, resolve_backend
from .relative_position import relative_position_attention

__all__ = [
    "AUTO",
    "AttentionCall",
    "attention",
    "attention_backend",
    "backend_names",
    "check_backend_name",
    "count_backend_calls",
    "current_backend",
    "default_backend",
    "fallback_counts",
    "relative_position_attention",
    "resolve_backend",
]
