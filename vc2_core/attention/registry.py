"""Attention backends and preferences by name, and which backend runs a given call."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import AUTO_PREFERENCE, BACKENDS, Backend, Preference
from .constraints import AttentionCall, first_unmet

_BACKENDS: dict[str, Backend] = {backend.name: backend for backend in BACKENDS}
_PREFERENCES: dict[str, Preference] = {AUTO_PREFERENCE.name: AUTO_PREFERENCE}


def backend_names() -> tuple[str, ...]:
    """Every name :func:`vc2_core.attention.attention` accepts: ``auto`` first, then the backends."""
    return (*_PREFERENCES, *_BACKENDS)


class BackendUnavailable(RuntimeError, ValueError):
    """An attention backend asked for by name cannot run on these tensors (xformers or triton on a CPU):
    a RuntimeError where it happens, and a ValueError for the commands, which report bad input in one line."""


def check_backend_name(name: str) -> str:
    if name not in _PREFERENCES and name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(backend_names())}")
    return name


@dataclass(frozen=True)
class Fallback:
    """A call that the backend asked for does not cover, run by another one."""

    requested: str
    used: str
    check: str  # the name of the check the call failed
    reason: str  # what it said


def resolve_backend(name: str, call: AttentionCall) -> tuple[Backend, Fallback | None]:
    """The backend that runs ``call`` when ``name`` is asked for, and the fallback taken to it, if any.

    A preference (``auto``) takes its first backend that runs the call: that is a choice, not a fallback.
    A backend whose ``requires`` the call fails raises; one whose ``covers`` it fails hands it to its fallback.
    """
    check_backend_name(name)
    if name in _PREFERENCES:
        return _preferred(_PREFERENCES[name], call), None
    backend = _BACKENDS[name]
    unmet = first_unmet(backend.requires, call)
    if unmet is not None:
        raise BackendUnavailable(f"attention backend {name!r} cannot run here: {unmet[1]}")
    unmet = first_unmet(backend.covers, call)
    if unmet is None:
        return backend, None
    if backend.fallback is None:
        raise RuntimeError(f"attention backend {name!r} cannot run this call: {unmet[1]}")
    used, _ = resolve_backend(backend.fallback, call)
    check, reason = unmet
    return used, Fallback(name, used.name, check.__name__, reason)


def _preferred(preference: Preference, call: AttentionCall) -> Backend:
    for name, conditions in preference.order:
        backend = _BACKENDS[name]
        if first_unmet((*conditions, *backend.requires, *backend.covers), call) is None:
            return backend
    raise RuntimeError(f"no backend of {preference.name!r} runs this call ({call})")
