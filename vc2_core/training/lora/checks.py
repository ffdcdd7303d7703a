"""Argument checks of the LoRA functions, and the error they raise."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ...messages import first_few
from ...parameter_groups import Group

SHOWN = 5  # names listed in an error message


class LoRAError(ValueError):
    """A file that is not a usable vc2 LoRA, or a LoRA that does not fit a UNet."""


def check_groups(groups: Iterable[Group | str]) -> frozenset[Group]:
    if isinstance(groups, (str, Group)):
        groups = [groups]
    chosen = set()
    for group in groups:
        try:
            chosen.add(Group(group))
        except ValueError:
            raise LoRAError(f"unknown parameter group {group!r}; choose from {', '.join(g.value for g in Group)}") \
                from None
    if not chosen:
        raise LoRAError(f"no parameter groups given; choose from {', '.join(g.value for g in Group)}")
    return frozenset(chosen)


def ordered(groups: frozenset[Group]) -> tuple[Group, ...]:
    return tuple(g for g in Group if g in groups)


def check_rank(rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LoRAError(f"LoRA rank must be a whole number >= 1; got {rank!r}")


def check_alpha(alpha: float | None, rank: int) -> float:
    if alpha is None:
        return float(rank)
    value = check_finite(alpha, "LoRA alpha")
    if value <= 0:
        raise LoRAError(f"LoRA alpha must be > 0; got {alpha!r}")
    return value


def check_finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LoRAError(f"{what} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise LoRAError(f"{what} must be finite; got {value!r}")
    return number


def key_report(unknown: list[str], missing: list[str], unknown_label: str = "unknown keys",
                missing_label: str = "missing keys") -> str:
    parts = []
    for label, names in ((unknown_label, unknown), (missing_label, missing)):
        if names:
            parts.append(f"{len(names)} {label}: {first_few(names, SHOWN)}")
    return "; ".join(parts)
