"""Writing and reading a ``vc2 train`` checkpoint folder (its layout is described in :mod:`.run_dir`).

Every process takes part (accelerate's engine state and FSDP's gathered weights need them all); the
main process writes the folder under a temporary name, flushes it to the disk and renames it when it
is complete (:func:`vc2_core.files.publish_folder`).

Test-only fault injection: with ``VC2_TEST_EXIT_INSIDE_CHECKPOINT_WRITE=N`` in the environment, the
main process exits at once (``os._exit``: no cleanup, as under SIGKILL) in the middle of writing
checkpoint N, after its engine state and weights and before its ``progress.json``, so a test can
kill a run inside a checkpoint write deterministically. Nothing else reads the variable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..checkpoint import save_checkpoint
from ..files import make_folder, publish_folder
from ..model import VideoCrafter
from . import run_dir
from .config import StageSection, TrainConfig
from .engine_state import check_engine_state
from .loop import Progress
from .lora import save_lora
from .stages import get_stage
from .step import Optimisation, TrainStep

EXIT_INSIDE_WRITE = "VC2_TEST_EXIT_INSIDE_CHECKPOINT_WRITE"
EXIT_INSIDE_WRITE_STATUS = 86  # the exit status of that fault, which a test can tell from a crash


def save_run_checkpoint(accelerator, config: TrainConfig, model: VideoCrafter, train_step: TrainStep,
                        progress: Progress, out: Path) -> Path:
    """Write ``checkpoints/step-N`` for ``progress.step`` (nothing if it exists: written before a resume)."""
    step = progress.step
    root = out / run_dir.CHECKPOINTS
    final = root / run_dir.checkpoint_name(step)
    if final.exists():
        return final
    temporary = root / (final.name + ".tmp")
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(temporary, ignore_errors=True)
        make_folder(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary / "state"))
    unet_state = accelerator.get_state_dict(train_step.unet)  # gathered (FSDP); every process takes part
    sources, ema = train_step.batches.sources, train_step.optimisation.ema
    positions = gather(accelerator, {kind: s.stream.position for kind, s in sources.items()})
    reports = gather(accelerator, {kind: s.stream.report.to_dict() for kind, s in sources.items()})
    if main:
        write_weights(model, config, temporary, unet_state)
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(temporary / "ema.safetensors"))
            with ema.swapped_in():
                write_weights(model, config, temporary, None, suffix="-ema")
        if os.environ.get(EXIT_INSIDE_WRITE) == str(step):
            os._exit(EXIT_INSIDE_WRITE_STATUS)  # the test-only fault (see the module's docstring)
        record = {
            "step": step, "stage": config.stage.name, "world_size": accelerator.num_processes,
            "positions": {kind: [p[kind] for p in positions] for kind in sources},
            "reports": {kind: [r[kind] for r in reports] for kind in sources},
            "skipped_steps": progress.skipped_steps, "scheduler": train_step.optimisation.scheduler.state_dict(),
            "ema_updates": ema.updates if ema is not None else None,
        }
        (temporary / run_dir.PROGRESS).write_text(json.dumps(record, indent=1))
        publish_folder(temporary, final)  # the checkpoint exists only once it is complete (a folder: one rename)
        run_dir.prune(out, config.checkpoint.keep_last)
    accelerator.wait_for_everyone()
    return final


def write_weights(model: VideoCrafter, config: TrainConfig, folder: Path, unet_state: dict | None,
                  suffix: str = "") -> None:
    """The trained weights: the stage's LoRA adapters, or the model in each configured format."""
    if get_stage(config.stage.name).lora:
        write_stage_lora(model.unet, model.config.name, config.stage, folder / f"lora{suffix}.safetensors")
        return
    for kind in config.checkpoint.formats:
        save_checkpoint(model, folder / f"model{suffix}.{kind}", unet_state=unet_state)


def write_stage_lora(unet: nn.Module, family: str, section: StageSection, path: str | Path) -> Path:
    """The LoRA adapters a stage injected (:func:`vc2_core.training.stages.set_up_stage`), to ``path``."""
    groups = sorted(g.value for g in get_stage(section.name).train)
    return save_lora(unet, path, family=family, groups=groups, rank=section.lora_rank, alpha=section.alpha(),
                     targets=section.lora_targets)


def load_run_checkpoint(accelerator, folder: Path, optimisation: Optimisation) -> Progress:
    """Restore the engine, scheduler and EMA state of a checkpoint; the progress to continue from.

    ``state/`` is checked first (:func:`.engine_state.check_engine_state`): a file that is not plain data
    stops the resume with an :class:`.engine_state.UntrustedState` naming it, before accelerate reads any.
    """
    record = json.loads((folder / run_dir.PROGRESS).read_text())
    check_engine_state(folder / "state")
    accelerator.load_state(str(folder / "state"), load_kwargs={"weights_only": True})
    optimisation.scheduler.load_state_dict(record["scheduler"])
    ema = optimisation.ema
    if ema is not None:
        if record.get("ema_updates") is None:
            raise ValueError(f"{folder}: this checkpoint has no EMA state, but optim.ema_decay is set")
        shadow = load_file(str(folder / "ema.safetensors"))
        ema.load_state_dict({"decay": ema.decay, "updates": record["ema_updates"], "shadow": shadow})
    return Progress(step=record["step"], positions=record["positions"], reports=record["reports"],
                    skipped_steps=record["skipped_steps"])


def gather(accelerator, value: object) -> list:
    """``value`` of every process, in process order."""
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])
