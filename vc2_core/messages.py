"""Wording shared by error messages."""

from __future__ import annotations

from collections.abc import Sequence


def first_few(items: Sequence[object], limit: int = 8, separator: str = ", ") -> str:
    """``items`` joined, at most ``limit`` of them, then how many were left out: ``a, b, c (+5 more)``."""
    shown = separator.join(str(item) for item in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
