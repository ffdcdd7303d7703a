"""Atomic and durable file writing: temporary names in the destination folder, fsync, rename, fsync.

Atomic: a file (or folder) is written under a temporary hidden name beside its destination and
renamed over it when complete, so a reader or a killed process sees the old one or the complete new
one, never half of it. Durable: before the rename the new data is flushed to the disk (``fsync`` of
the file, or of every file and folder of a folder), and after it the rename itself (``fsync`` of the
parent folder), so a power loss or an OS crash after a write returns cannot leave a complete name
over incomplete data, or lose a name that a later file depends on. Every writer of the project
goes through :func:`publish` or :func:`publish_folder`; :func:`sync_path` is their one fsync.

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


def sync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk (``fsync``). On Windows (not tested here)
    ``os.open`` cannot open a folder, so folders are skipped, and a file is flushed only through a handle
    open for writing."""
    flags = os.O_RDONLY
    if os.name == "nt":
        if os.path.isdir(path):
            return
        flags = os.O_RDWR
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
    recreate it as 0600), flush it to the disk, rename it over ``path`` and flush the rename."""
    probe = temporary_file(path, ".mode")  # a fresh file shows the mode the umask gives
    try:
        mode = stat.S_IMODE(os.stat(probe).st_mode)
    finally:
        os.unlink(probe)
    os.chmod(temporary, mode)
    sync_path(temporary)
    os.replace(temporary, path)
    sync_path(path.parent)


def temporary_folder(path: Path) -> str:
    """An empty hidden folder beside ``path``, with ordinary permissions."""
    while True:
        temporary = _free_name(path, "")
        try:
            os.mkdir(temporary, 0o777)
        except FileExistsError:
            continue
        return str(temporary)


def make_folder(path: Path) -> None:
    """Create ``path`` and its missing parents, each new folder's name flushed to the disk (its parent's fsync)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):  # outermost first
        folder.mkdir(exist_ok=True)
        sync_path(folder.parent)


def publish_folder(temporary: str | Path, path: Path) -> None:
    """Flush every file and folder inside a finished temporary folder (deepest first, the folder itself
    last), rename it to ``path`` (which must not exist, or be an empty folder) and flush the rename."""
    for folder, _, files in os.walk(temporary, topdown=False):
        for name in files:
            sync_path(os.path.join(folder, name))
        sync_path(folder)
    os.replace(temporary, path)
    sync_path(path.parent)


def write_atomically(path: Path, write: Callable[[str], object], suffix: str = ".tmp") -> Path:
    """Call ``write(temporary)`` on a hidden file beside ``path``, then publish it over ``path`` (:func:`publish`):
    a reader sees the old file or the complete new one, never half of it; a failed write leaves nothing behind."""
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
