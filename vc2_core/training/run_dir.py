"""The layout of a training run's output folder, and its checkpoints' life cycle.

    OUTPUT_DIR/
      config.json                  the resolved config of the run
      metrics.jsonl                one line per logged step (loss, lr, grad norm, kind, it/s)
      logs/                        tensorboard event files
      samples/step-00000500/       validation videos
      checkpoints/step-00001000/   a complete checkpoint (see below); the last ``keep_last`` are kept
      summary.json                 written when the run ends

A checkpoint is written into ``step-N.tmp`` and renamed to ``step-N`` when complete, so a run
killed while writing leaves the previous checkpoints untouched and a ``.tmp`` folder that the
next start removes. Only folders with a ``progress.json`` count as checkpoints.

    model.safetensors        the full model in the official key layout (direct stages), loadable by
                             ``vc2 sample``, the ComfyUI loader and (as model.ckpt) the official code
    lora.safetensors         the adapters (LoRA stages); merge with ``vc2 lora merge``
    *-ema.safetensors        the same with the EMA weights, when EMA is on
    progress.json            step, data positions per process, skip reports, scheduler state
    ema.safetensors          the EMA shadow weights (for resuming)
    state/                   accelerate's engine state: trained weights, optimizer, RNG states
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

CHECKPOINTS = "checkpoints"
PROGRESS = "progress.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        match = _NAME.match(folder.name)
        if match and folder.is_dir() and (folder / PROGRESS).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: ``None`` (fresh start), ``"auto"`` (the latest, if any) or a path.

    A fresh start into a folder that already holds checkpoints is refused, so an earlier run is
    never overwritten by accident.
    """
    if resume is None:
        latest = latest_checkpoint(output_dir)
        if latest is not None:
            raise ValueError(f"{output_dir} already holds checkpoints of a run (latest {latest.name}); resume it "
                             "with --resume auto, or choose another run.output_dir")
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    folder = Path(resume)
    if not (folder / PROGRESS).is_file():
        raise ValueError(f"{folder}: not a complete training checkpoint (no {PROGRESS})")
    return folder


def remove_temporaries(output_dir: str | Path) -> list[Path]:
    """Delete checkpoint folders left half-written by a killed run; returns what was removed."""
    root = Path(output_dir) / CHECKPOINTS
    stale = [p for p in root.glob("step-*.tmp")] if root.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def prune(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; returns what was removed."""
    old = [folder for _, folder in complete_checkpoints(output_dir)[:-keep_last]]
    for folder in old:
        shutil.rmtree(folder)
    return old
