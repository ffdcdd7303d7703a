"""Attention as one function with explicit backends (see :mod:`vc2_core.attention.dispatch`)."""

from .dispatch import (
    AUTO,
    AUTO_RULE,
    Backend,
    attention,
    backend_names,
    check_backend_name,
    default_backend,
    register_backend,
    relative_position_attention,
    resolve_backend,
    triton_installed,
)

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
