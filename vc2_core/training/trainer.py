"""``vc2 train``: the training loop (:mod:`.loop`) on accelerate (one process, DDP, FSDP, DeepSpeed).

    config -> model (checkpoint | preset [+ spatial init]) -> stage (freeze / LoRA) -> data streams
    -> run_loop: for each step, micro-batches (videos or images) -> frozen VAE + text encoder -> eps MSE
       -> backward (gradient accumulation) -> clip -> AdamW -> lr schedule -> EMA      (step.py)
    -> hooks: progress bar, logs, validation videos, atomic checkpoints (checkpoints.py), resume

Data parallelism: process r trains on its own slice of every global batch (see ItemStream);
accelerate averages the gradients. All randomness of an item is keyed by the item (see
:mod:`vc2_core.training.batches`), so runs are reproducible across process counts and resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attention import attention_backend
from ..checkpoint import load_checkpoint
from ..config import preset
from ..files import write_text_atomically
from ..model import VideoCrafter
from . import run_dir
from .batches import BatchMaker
from .checkpoints import gather, load_run_checkpoint
from .config import TrainConfig
from .data import SkipReport
from .latent_cache import LatentCache
from .launch_check import check_launch
from .loop import Cadence, Progress, run_loop
from .run_hooks import NonFiniteLoss, RunHooks
from .sources import data_sets, open_sources
from .spatial_init import load_spatial_weights
from .stages import DataKind, Stage, get_stage, set_up_stage
from .step import MicroBatches, NamedParameters, Optimisation, Source, TrainStep, lr_schedule

__all__ = ["NonFiniteLoss", "TrainSummary", "build_training_model", "data_sets", "lr_schedule", "train"]


@dataclass(frozen=True)
class TrainSummary:
    output_dir: Path
    steps: int  # optimizer steps done (in total, across resumes)
    seconds: float  # this invocation's training time
    final_checkpoint: Path | None
    skipped_items: str  # the data skip report
    skipped_steps: int  # steps skipped for a non-finite loss (run.nan: skip)
    parameters_identical: bool | None  # the trained parameters are identical on every process; None under FSDP
    last_loss: float
    main_process: bool  # this process reports the run (the others stay quiet)


def train(config: TrainConfig, *, resume: str | None = None, show_progress: bool = True) -> TrainSummary:
    """Run (or resume: ``"auto"`` or a checkpoint folder) the training a config describes."""
    from accelerate.state import AcceleratorState

    try:
        with attention_backend(config.model.attention):
            return _train(config, resume, show_progress)
    finally:
        # accelerate keeps its settings (mixed precision, ...) in a process-wide state that refuses to change;
        # clearing it when a run ends lets one process (a test session, the demo) run trainings one after
        # another. accelerate (1.16) offers no public call for this: _reset_state is the only way.
        AcceleratorState._reset_state(reset_partial_state=True)


def _train(config: TrainConfig, resume: str | None, show_progress: bool) -> TrainSummary:
    out = Path(config.run.output_dir)
    start_from = run_dir.resolve_resume(out, resume)
    accelerator = _accelerator(config, out)
    stage = get_stage(config.stage.name)
    model = build_training_model(config)
    trainable = set_up_stage(model.unet, stage, config.stage)
    model.to(accelerator.device)
    for frozen in (model.vae, model.text_encoder):
        frozen.requires_grad_(False).eval()
    model.unet.train()

    optimisation = Optimisation.create(trainable, config.optim, config.run.max_steps)
    unet, optimisation.optimizer = accelerator.prepare(model.unet, optimisation.optimizer)
    optimisation.start_ema()
    progress = Progress() if start_from is None else load_run_checkpoint(accelerator, start_from, optimisation)
    sources = open_sources(config, stage, model.config, accelerator.process_index, accelerator.num_processes,
                           progress, fresh=start_from is None)
    maker = BatchMaker(model.vae, model.text_encoder, model.schedule.num_timesteps, seed=config.run.seed,
                       caption_dropout=config.data.caption_dropout, uncond=_uncond(config, model),
                       device=accelerator.device)
    train_step = TrainStep(accelerator, unet, model.schedule, optimisation,
                           MicroBatches(sources, maker, config.run.seed, config.images.ratio))
    if accelerator.is_main_process:
        accelerator.init_trackers("vc2")
        _describe_start(config, stage, model, trainable, sources, accelerator, start_from)

    hooks = RunHooks(accelerator, config, model, train_step, progress, out, show_progress)
    started = time.perf_counter()
    try:
        run_loop(train_step, progress, config.run.max_steps, hooks,
                 Cadence(save_every=config.checkpoint.every, validate_every=config.validation.every))
    finally:
        hooks.close()
        for source in sources.values():
            source.stream.close()
    seconds, final, last_loss = time.perf_counter() - started, hooks.last_checkpoint, hooks.last_loss
    # Free the DDP wrapper while the process group is still registered: if its reducer held the
    # group's last reference, the group's destructor (joining gloo's threads) could deadlock on the GIL.
    del hooks, train_step, unet, optimisation
    return _finish(accelerator, out, trainable, sources, progress, seconds, final, last_loss)


def _accelerator(config: TrainConfig, out: Path):
    """The run's Accelerator; the output folder prepared (config.json written, half-written checkpoints removed)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # before accelerate sets up an engine this machine cannot run
    check_launch(config.run.cpu, ema=config.optim.ema_decay is not None,
                 accumulation=config.optim.gradient_accumulation)
    accelerator = Accelerator(
        cpu=config.run.cpu, mixed_precision=config.run.mixed_precision,
        log_with="tensorboard" if config.log.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        run_dir.remove_temporaries(out)
        write_text_atomically(out / "config.json", json.dumps(config.to_dict(), indent=2))
    accelerator.wait_for_everyone()
    return accelerator


def _finish(accelerator, out: Path, trainable: NamedParameters, sources: dict[DataKind, Source], progress: Progress,
            seconds: float, final: Path | None, last_loss: float) -> TrainSummary:
    """End the run's trackers; the summary (written to summary.json by the main process)."""
    from accelerate.utils import DistributedType

    reports = SkipReport()
    for per_process in gather(accelerator, {k: s.stream.report.to_dict() for k, s in sources.items()}):
        for report in per_process.values():
            reports.merge(SkipReport.from_dict(report))
    digest = _digest(trainable)
    identical = len(set(gather(accelerator, digest))) == 1
    if accelerator.distributed_type == DistributedType.FSDP:  # each process holds its own shard: not comparable
        identical = None
    accelerator.free_memory()
    accelerator.end_training()
    summary = TrainSummary(out, progress.step, seconds, final, reports.summary(), progress.skipped_steps,
                           identical, last_loss, accelerator.is_main_process)
    if summary.main_process:
        record = dataclasses.asdict(summary) | {
            "output_dir": str(out), "final_checkpoint": str(final) if final else None,
            "skip_report": reports.to_dict(), "processes": accelerator.num_processes, "parameter_digest": digest}
        write_text_atomically(out / "summary.json", json.dumps(record, indent=2))
    return summary


# ---- model ------------------------------------------------------------------------------------------------


def build_training_model(config: TrainConfig) -> VideoCrafter:
    """The model a run starts from, in float32 on the CPU: a checkpoint, or a preset's random init
    (optionally with the spatial weights of an image model)."""
    section = config.model
    if section.checkpoint is not None:
        model, _ = load_checkpoint(section.checkpoint)
    else:
        torch.manual_seed(config.run.seed)  # the same initial weights on every process
        model = VideoCrafter(preset(section.preset))
        if section.spatial_init is not None:
            load_spatial_weights(model, section.spatial_init)
    if section.gradient_checkpointing is not None:
        model.unet.set_gradient_checkpointing(section.gradient_checkpointing)
    return model


def _uncond(config: TrainConfig, model: VideoCrafter) -> torch.Tensor:
    """(1, L, d): the text embedding of "" (caption dropout), from the latent cache when there is one."""
    if config.data.cache is not None:
        return LatentCache.open(config.data.cache, model.config).uncond().unsqueeze(0)
    with torch.no_grad():
        return model.text_encoder.encode([""])


def _digest(trainable: NamedParameters) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, param in trainable:
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _describe_start(config: TrainConfig, stage: Stage, model: VideoCrafter, trainable: NamedParameters,
                    sources: dict[DataKind, Source], accelerator, start_from: Path | None) -> None:
    count = sum(p.numel() for _, p in trainable)
    total = sum(p.numel() for p in model.unet.parameters())
    data = ", ".join(f"{s.kind} ({s.size} items{', cached' if s.cached else ''})" for s in sources.values())
    where = f"resuming from {start_from}" if start_from else "fresh start"
    print(f"vc2 train: stage {stage.name} ({stage.summary}); training {count:,} of {total:,} UNet parameters; "
          f"data: {data}; {accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
          f"{config.run.mixed_precision}; {where}; output {config.run.output_dir}", flush=True)
