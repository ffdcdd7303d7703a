"""Attention as one function with explicit backends (see :mod:`vc2_core.attention.dispatch`)."""

from .dispatch import (
    AUTO,
    Backend,
    attention,
    backend_names,
    check_backend_name,
    register_backend,
    relative_position_attention,
    resolve_backend,
)

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
