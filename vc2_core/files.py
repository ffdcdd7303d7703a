"""Atomic file writing helpers: temporary names in the destination folder, with ordinary permissions.

The temporaries are created with mode 0o666 / 0o777 through ``os.open`` / ``os.mkdir``, so the
process's umask applies as for any file the user writes (``mkstemp`` / ``mkdtemp`` would give
0600 / 0700, which survive the rename). The umask is never read with ``os.umask``, which would
change it process-wide for a moment, under other threads (ComfyUI's server).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path


def _free_name(path: Path, suffix: str) -> Path:
    return (path.parent or Path(".")) / f".{path.name}.{secrets.token_hex(4)}{suffix}"


def temporary_file(path: Path, suffix: str) -> str:
    """An empty hidden file beside ``path`` (rename it over ``path`` with :func:`publish` when complete)."""
    while True:
        temporary = _free_name(path, suffix)
        try:
            os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return str(temporary)


def publish(temporary: str | Path, path: Path) -> None:
    """Give a finished temporary file ordinary permissions (writers such as safetensors' ``save_file``
    recreate it as 0600) and rename it over ``path``."""
    probe = temporary_file(path, ".mode")  # a fresh file shows the mode the umask gives
    try:
        mode = stat.S_IMODE(os.stat(probe).st_mode)
    finally:
        os.unlink(probe)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def temporary_folder(path: Path) -> str:
    """An empty hidden folder beside ``path``, with ordinary permissions."""
    while True:
        temporary = _free_name(path, "")
        try:
            os.mkdir(temporary, 0o777)
        except FileExistsError:
            continue
        return str(temporary)


def write_atomically(path: Path, write: Callable[[str], object], suffix: str = ".tmp") -> Path:
    """Call ``write(temporary)`` on a hidden file beside ``path``, then rename it over ``path``: a reader
    sees the old file or the complete new one, never half of it; a failed write leaves nothing behind."""
    temporary = temporary_file(path, suffix)
    try:
        write(temporary)
        publish(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    return write_atomically(path, lambda temporary: Path(temporary).write_text(text))
