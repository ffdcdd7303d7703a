"""What every command shares: the usage error, the check of a file a command writes, and seeds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds up to 2**64 - 1 (and the nodes' seed inputs)


class UsageError(ValueError):
    """Bad command-line input; ``vc2`` prints it without a traceback and exits with status 1."""


def check_output_file(path: Path, suffix: str, flag: str = "--out") -> Path:
    """``flag``'s file, checked before any work: it ends in ``suffix``, is not a folder, and its folder exists and
    is writable.

    Videos are checked by :func:`vc2_core.video_io.check_output_path`, the check ``write_video`` makes."""
    if path.suffix != suffix:
        raise UsageError(f"{flag} must end in {suffix} (got {path})")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is not a folder")
    if not folder.is_dir():
        raise UsageError(f"{folder}: the output directory does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path}: the folder {folder} is not writable")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder")
    return path


def seed(text: str) -> int:
    """An argparse type: a seed in [0, 2**64 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64 - 1], got {value}")
    return value


def at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def check_seed_range(first: int, count: int, what: str) -> None:
    """Seeds ``first`` .. ``first + count - 1`` (one per video) all fit in [0, 2**64 - 1]."""
    last = first + count - 1
    if last > MAX_SEED:
        raise UsageError(f"--seed {first}: {what} need seeds up to {last}, over 2**64 - 1")
