"""Atomic file writing helpers: temporary names in the destination folder, with ordinary permissions."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temporary_file(path: Path, suffix: str) -> str:
    """An empty hidden file beside ``path`` (rename it over ``path`` when complete), with the permissions a
    plain ``open`` would give (``mkstemp`` alone makes it 0600, which would survive the rename)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent or ".")
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())
    return temporary


def publish(temporary: str | Path, path: Path) -> None:
    """Give a finished temporary file ordinary permissions (writers such as safetensors' ``save_file``
    recreate it as 0600) and rename it over ``path``."""
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)


def temporary_folder(path: Path) -> str:
    """An empty hidden folder beside ``path``, with ordinary permissions (``mkdtemp`` makes it 0700)."""
    temporary = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent or ".")
    os.chmod(temporary, 0o777 & ~_umask())
    return temporary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
