"""What every command shares: the usage error and the check of a file a command writes."""

from __future__ import annotations

from pathlib import Path


class UsageError(ValueError):
    """Bad command-line input; ``vc2`` prints it without a traceback and exits with status 1."""


def check_output_file(path: Path, suffix: str) -> Path:
    """``--out``, checked before any work: it ends in ``suffix`` and its folder exists.

    Videos are checked by :func:`vc2_core.video_io.check_output_path`, the check ``write_video`` makes."""
    if path.suffix != suffix:
        raise UsageError(f"--out must end in {suffix} (got {path})")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: the output directory does not exist")
    return path
