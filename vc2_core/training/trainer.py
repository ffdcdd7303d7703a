"""The training loop: one loop for every stage, on accelerate (one process, DDP, FSDP, DeepSpeed).

    config -> model (checkpoint | preset [+ spatial init]) -> stage (freeze / LoRA) -> data streams
    -> for each step: micro-batches (videos or images) -> frozen VAE + text encoder -> eps MSE
       -> backward (gradient accumulation) -> clip -> AdamW -> lr schedule -> EMA
    -> logs, validation videos, atomic checkpoints, resume

Data parallelism: process r trains on its own slice of every global batch (see ItemStream);
accelerate averages the gradients. All randomness of an item is keyed by the item (see
:mod:`vc2_core.training.batches`), so runs are reproducible across process counts and resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..attention import attention_backend
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import preset
from ..model import VideoCrafter
from ..pipeline import GenerationSettings, generate, pixel_multiple
from ..video_io import to_frames, write_video
from . import run_dir
from .batches import BatchMaker, TrainBatch
from .config import TrainConfig
from .data import (
    Images,
    ItemStream,
    Skipped,
    SkipReport,
    VideoClips,
    draw_generator,
    read_image_index,
    read_video_index,
    stable_seed,
)
from .ema import EMA
from .latent_cache import LatentCache
from .lora import inject_lora, save_lora
from .objective import diffusion_loss, snr_weights
from .spatial_init import load_spatial_weights
from .stages import Stage, apply_stage, get_stage

Tensor = torch.Tensor


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite and the config says to stop."""


@dataclass
class Source:
    """One kind of training data for this process."""

    name: str  # "videos" | "images"
    stream: ItemStream
    pack: int  # one-frame items per pseudo-clip (1: no packing)
    cached: bool
    size: int  # items in the dataset


@dataclass(frozen=True)
class TrainSummary:
    output_dir: Path
    steps: int  # optimizer steps done (in total, across resumes)
    seconds: float  # this invocation's training time
    final_checkpoint: Path | None
    skipped_items: str  # the data skip report
    skipped_steps: int  # steps skipped for a non-finite loss (run.nan: skip)
    parameters_identical: bool  # the trained parameters are identical on every process
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
        # clearing it when a run ends lets one process (ComfyUI, a test session) run trainings one after another.
        AcceleratorState._reset_state(reset_partial_state=True)


def _train(config: TrainConfig, resume: str | None, show_progress: bool) -> TrainSummary:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out = Path(config.run.output_dir)
    start_from = run_dir.resolve_resume(out, resume)
    accelerator = Accelerator(
        cpu=config.run.cpu, mixed_precision=config.run.mixed_precision,
        log_with="tensorboard" if config.log.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        run_dir.remove_temporaries(out)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    accelerator.wait_for_everyone()

    stage = get_stage(config.stage.name)
    model = build_training_model(config)
    trainable = set_up_stage(model, stage, config)
    device = accelerator.device
    model.to(device)
    for frozen in (model.vae, model.text_encoder):
        frozen.requires_grad_(False).eval()
    model.unet.train()

    optim = config.optim
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=optim.lr, betas=optim.betas,
                                  weight_decay=optim.weight_decay, eps=optim.eps)
    scheduler = lr_schedule(optimizer, optim.schedule, optim.warmup_steps, config.run.max_steps)
    unet, optimizer = accelerator.prepare(model.unet, optimizer)
    ema = EMA(trainable, optim.ema_decay) if optim.ema_decay is not None else None

    progress = {"step": 0, "positions": {}, "reports": {}, "skipped_steps": 0}
    if start_from is not None:
        progress = _load_progress(accelerator, start_from, scheduler, ema)
    sources = open_sources(config, stage, model, accelerator.process_index, accelerator.num_processes, progress,
                           fresh=start_from is None)
    if config.data.cache is not None:
        uncond = LatentCache.open(config.data.cache, model.config).uncond().unsqueeze(0)  # (1, L, d)
    else:
        with torch.no_grad():
            uncond = model.text_encoder.encode([""])  # (1, L, d)
    maker = BatchMaker(model.vae, model.text_encoder, model.schedule.num_timesteps, seed=config.run.seed,
                       caption_dropout=config.data.caption_dropout, uncond=uncond, device=device)
    if main:
        accelerator.init_trackers("vc2")
        _describe_start(config, stage, model, trainable, sources, accelerator, start_from)

    loop = _Loop(config, accelerator, model, unet, optimizer, scheduler, ema, trainable, sources, maker, progress, out)
    try:
        seconds, last_loss = loop.run(show_progress and main)
    finally:
        for source in sources.values():
            source.stream.close()
    final = loop.last_checkpoint
    reports = _gather_reports(accelerator, sources)
    identical = _identical_across_processes(accelerator, trainable)
    # Free the DDP wrapper while the process group is still registered: if its reducer held the
    # group's last reference, the group's destructor (joining gloo's threads) could deadlock on the GIL.
    del loop, unet, optimizer
    accelerator.free_memory()
    accelerator.end_training()
    summary = TrainSummary(out, progress["step"], seconds, final, reports.summary(), progress["skipped_steps"],
                           identical, last_loss, main)
    if main:
        record = dataclasses.asdict(summary) | {
            "output_dir": str(out), "final_checkpoint": str(final) if final else None,
            "skip_report": reports.to_dict(), "processes": accelerator.num_processes,
            "parameter_digest": _digest(trainable)}
        (out / "summary.json").write_text(json.dumps(record, indent=2))
    return summary


# ---- model and stage ------------------------------------------------------------------------------------


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


def set_up_stage(model: VideoCrafter, stage: Stage, config: TrainConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Freeze by stage (or inject LoRA adapters); the (name, parameter)s the optimizer gets."""
    if stage.lora:
        return inject_lora(model.unet, stage.train, rank=config.stage.lora_rank, alpha=config.stage.lora_alpha,
                           targets=config.stage.lora_targets)
    return apply_stage(model.unet, stage)


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, warmup: int,
                total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``total``."""
    from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)


# ---- data ---------------------------------------------------------------------------------------------------


def data_sets(config: TrainConfig, mc, kinds: tuple[str, ...]) -> tuple[dict[str, object], dict[str, list[Skipped]]]:
    """The configured media datasets of these kinds, and the index lines each index skipped."""
    datasets: dict[str, object] = {}
    index_skips: dict[str, list[Skipped]] = {}
    if "videos" in kinds and config.videos.index is not None:
        v = config.videos
        entries, index_skips["videos"] = read_video_index(v.index, v.root)
        height, width = _size(v.height, v.width, mc, "videos")
        datasets["videos"] = VideoClips(entries, frames=v.frames or mc.frames, height=height, width=width,
                                        frame_stride=v.frame_stride, crop=v.crop, default_fps=v.fps)
    if "images" in kinds and config.images.index is not None:
        i = config.images
        entries, index_skips["images"] = read_image_index(i.index, i.root)
        height, width = _size(i.height, i.width, mc, "images")
        datasets["images"] = Images(entries, height=height, width=width, crop=i.crop, fps=i.fps or mc.fps)
    return datasets, index_skips


def open_sources(config: TrainConfig, stage: Stage, model: VideoCrafter, rank: int, world: int, progress: dict,
                 *, fresh: bool) -> dict[str, Source]:
    """This process's data streams (media or a latent cache), continuing at the saved positions."""
    mc = model.config
    kinds = tuple(kind for kind in ("videos", "images") if kind in stage.data)
    cached = config.data.cache is not None
    index_skips: dict[str, list[Skipped]] = {}
    if cached:
        cache = LatentCache.open(config.data.cache, mc)
        datasets = {kind: cache.items(kind) for kind in kinds if cache.count(kind)}
    else:
        datasets, index_skips = data_sets(config, mc, kinds)
    if not datasets:
        raise ValueError(f"stage {stage.name} trains on {stage.data}, but the config gives no such data"
                         + (f" (the cache {config.data.cache} has none)" if cached else ""))
    frames = config.videos.frames or mc.frames
    pack = frames if config.images.mode == "pack" else 1
    if pack > 1 and not mc.unet.temporal_selfatt_only:
        raise ValueError("images.mode pack needs temporal self-attention only (temporal_selfatt_only)")
    sources = {}
    for name, dataset in datasets.items():
        local_batch = config.videos.batch_size if name == "videos" else config.images.batch_size * pack
        positions = progress["positions"].get(name, [0] * world)
        if len(positions) != world:
            raise ValueError(f"the checkpoint was written by {len(positions)} processes; resume it with the same "
                             f"number (this run has {world}) so every process continues its own data exactly")
        saved = progress["reports"].get(name)
        report = SkipReport.from_dict(saved[rank]) if saved else SkipReport()
        if fresh and rank == 0:
            for skipped in index_skips.get(name, []):
                report.add(skipped)
        stream = ItemStream(dataset, seed=config.run.seed, local_batch=local_batch, rank=rank, world_size=world,
                            position=positions[rank], num_workers=config.data.num_workers, report=report)
        sources[name] = Source(name, stream, pack if name == "images" else 1, cached, len(dataset))
    return sources


def _size(height: int | None, width: int | None, mc, what: str) -> tuple[int, int]:
    height, width = height or mc.height, width or mc.width
    multiple = pixel_multiple(mc)
    if height % multiple or width % multiple:
        raise ValueError(f"{what}: {height}x{width} is not a multiple of {multiple} (the VAE factor times the UNet's)")
    return height, width


def choose_source(sources: dict[str, Source], ratio: float, seed: int, micro_index: int) -> Source:
    """Videos or images for this micro-batch: images with probability ``ratio`` (the same on every process)."""
    if len(sources) == 1:
        return next(iter(sources.values()))
    draw = torch.rand((), generator=draw_generator(seed, micro_index, "source")).item()
    return sources["images"] if draw < ratio else sources["videos"]


# ---- the loop -----------------------------------------------------------------------------------------


class _Loop:
    def __init__(self, config, accelerator, model, unet, optimizer, scheduler, ema, trainable, sources, maker,
                 progress, out):
        self.config, self.accelerator, self.model, self.unet = config, accelerator, model, unet
        self.optimizer, self.scheduler, self.ema, self.trainable = optimizer, scheduler, ema, trainable
        cap = config.optim.snr_weight_cap
        self.loss_weights = None if cap is None else snr_weights(model.schedule, cap)
        self.sources, self.maker, self.progress, self.out = sources, maker, progress, out
        self.last_checkpoint = run_dir.latest_checkpoint(out)

    def run(self, show: bool) -> tuple[float, float]:
        config, progress = self.config, self.progress
        total = config.run.max_steps
        started, loss_value = time.perf_counter(), float("nan")
        bar = tqdm(total=total, initial=progress["step"], desc="train", unit="step", disable=not show,
                   dynamic_ncols=True)
        while progress["step"] < total:
            step_started = time.perf_counter()
            result = self._step()
            progress["step"] += 1
            step = progress["step"]
            if result is None:
                progress["skipped_steps"] += 1
                bar.write(f"step {step}: non-finite loss, step skipped (run.nan: skip)")
            else:
                loss_value, kind, grad_norm = result
                lr = self.scheduler.get_last_lr()[0]
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
                if step % config.log.every == 0 or step == total:
                    self._log(step, loss_value, lr, grad_norm, kind, time.perf_counter() - step_started)
            bar.update(1)
            if config.validation.every and step % config.validation.every == 0:
                self._validate(step)
            if step % config.checkpoint.every == 0 or step == total:
                self._save(step)
        bar.close()
        return time.perf_counter() - started, loss_value

    def _step(self) -> tuple[float, str, float] | None:
        """One optimizer step over ``gradient_accumulation`` micro-batches; None if skipped (non-finite)."""
        config, accelerator = self.config, self.accelerator
        accumulation = config.optim.gradient_accumulation
        losses, kinds = [], []
        for micro in range(accumulation):
            micro_index = self.progress["step"] * accumulation + micro
            source = choose_source(self.sources, config.images.ratio, config.run.seed, micro_index)
            drawn = source.stream.next_batch()
            make = self.maker.from_cache if source.cached else self.maker.from_pixels
            batch = make(source.name, drawn, source.pack)
            last = micro == accumulation - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(self.unet):
                with self._dropout_rng(micro_index), accelerator.autocast():
                    loss = self._loss(batch)
                if not self._finite_everywhere(loss):
                    return self._non_finite(loss, source.name, batch)
                accelerator.backward(loss / accumulation)
            losses.append(loss.detach())
            kinds.append(source.name)
        grad_norm = float("nan")
        if config.optim.max_grad_norm is not None:
            grad_norm = float(accelerator.clip_grad_norm_([p for _, p in self.trainable], config.optim.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        return mean_loss, "+".join(sorted(set(kinds))), grad_norm

    @contextlib.contextmanager
    def _dropout_rng(self, micro_index: int) -> Iterator[None]:
        """The global RNG, which dropout draws from (the temporal convolutions' 0.1 is hard-coded in the
        official ResBlock), seeded by (seed, micro-batch, process) inside the block and restored after it:
        runs are reproducible and resume exactly, whatever ran before in the process."""
        device = self.accelerator.device
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(stable_seed(self.config.run.seed, "dropout", micro_index, self.accelerator.process_index))
            yield

    def _loss(self, batch: TrainBatch) -> Tensor:
        return diffusion_loss(self.unet, self.model.schedule, batch.latents, batch.context, batch.fps, None,
                              timesteps=batch.timesteps, noise=batch.noise, weights=self.loss_weights)

    def _finite_everywhere(self, loss: Tensor) -> bool:
        flag = torch.tensor([1.0 if torch.isfinite(loss).item() else 0.0], device=loss.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() == self.accelerator.num_processes)

    def _non_finite(self, loss: Tensor, kind: str, batch: TrainBatch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.run.nan == "skip":
            return None
        step = self.progress["step"] + 1
        last = self.last_checkpoint
        raise NonFiniteLoss(
            f"the loss is {loss.item()} at step {step} (a {kind} batch, item keys {batch.keys} on this process; "
            f"possibly another process). Stopped without saving: the last good checkpoint is "
            f"{last if last else 'none (no checkpoint was written yet)'}. Resume from it with --resume auto after "
            "lowering optim.lr, enabling optim.max_grad_norm or using bf16 instead of fp16; or set run.nan: skip "
            "to skip such steps.")

    def _log(self, step: int, loss: float, lr: float, grad_norm: float, kind: str, seconds: float) -> None:
        values = {"loss": loss, "lr": lr, "step_seconds": seconds}
        if not math.isnan(grad_norm):
            values["grad_norm"] = grad_norm
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with (self.out / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")

    # ---- validation ----------------------------------------------------------------------------------------

    def _validate(self, step: int) -> None:
        accelerator = self.accelerator
        if accelerator.is_main_process:
            val = self.config.validation
            settings = GenerationSettings(height=val.height, width=val.width, frames=val.frames, fps=val.fps,
                                          steps=val.steps, cfg=val.cfg, sampler=val.sampler, eta=val.eta)
            seeds = list(val.seeds) or list(range(len(val.prompts)))
            folder = self.out / "samples" / run_dir.checkpoint_name(step)
            folder.mkdir(parents=True, exist_ok=True)
            self.model.unet.eval()
            try:
                with self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
                    videos = generate(self.model, list(val.prompts), seeds, settings, device=accelerator.device,
                                      offload=False)
            finally:
                self.model.unet.train()
            fps = settings.resolve(self.model.config).fps
            for index, (prompt, video) in enumerate(zip(val.prompts, videos)):
                write_video(folder / f"{index:02d}-{_slug(prompt)}.mp4", to_frames(video), fps)
        accelerator.wait_for_everyone()

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def _save(self, step: int) -> None:
        accelerator, config = self.accelerator, self.config
        root = self.out / run_dir.CHECKPOINTS
        final = root / run_dir.checkpoint_name(step)
        if final.exists():  # written before this run resumed from it
            return
        temporary = root / (final.name + ".tmp")
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary / "state"))
        unet_state = accelerator.get_state_dict(self.unet)  # gathered (FSDP); every process takes part
        positions = _gather(accelerator, {name: s.stream.position for name, s in self.sources.items()})
        reports = _gather(accelerator, {name: s.stream.report.to_dict() for name, s in self.sources.items()})
        if accelerator.is_main_process:
            self._write_weights(temporary, unet_state)
            if self.ema is not None:
                save_file({k: v.contiguous() for k, v in self.ema.shadow.items()}, str(temporary / "ema.safetensors"))
                with self.ema.swapped_in():
                    self._write_weights(temporary, None, suffix="-ema")
            record = {
                "step": step, "stage": config.stage.name, "world_size": accelerator.num_processes,
                "positions": {name: [p[name] for p in positions] for name in self.sources},
                "reports": {name: [r[name] for r in reports] for name in self.sources},
                "skipped_steps": self.progress["skipped_steps"], "scheduler": self.scheduler.state_dict(),
                "ema_updates": self.ema.updates if self.ema is not None else None,
            }
            (temporary / run_dir.PROGRESS).write_text(json.dumps(record, indent=1))
            os.replace(temporary, final)  # the checkpoint exists only once it is complete
            run_dir.prune(self.out, config.checkpoint.keep_last)
        self.last_checkpoint = final
        accelerator.wait_for_everyone()

    def _write_weights(self, folder: Path, unet_state: dict | None, suffix: str = "") -> None:
        stage = get_stage(self.config.stage.name)
        if stage.lora:
            s = self.config.stage
            save_lora(self.model.unet, folder / f"lora{suffix}.safetensors", family=self.model.config.name,
                      groups=sorted(g.value for g in stage.train), rank=s.lora_rank,
                      alpha=s.lora_alpha if s.lora_alpha is not None else float(s.lora_rank), targets=s.lora_targets)
            return
        for kind in self.config.checkpoint.formats:
            save_checkpoint(self.model, folder / f"model{suffix}.{kind}", unet_state=unet_state)


def _load_progress(accelerator, folder: Path, scheduler, ema: EMA | None) -> dict:
    """Restore the engine state and return the saved progress record."""
    record = json.loads((folder / run_dir.PROGRESS).read_text())
    accelerator.load_state(str(folder / "state"))
    scheduler.load_state_dict(record["scheduler"])
    if ema is not None:
        if record.get("ema_updates") is None:
            raise ValueError(f"{folder}: this checkpoint has no EMA state, but optim.ema_decay is set")
        shadow = load_file(str(folder / "ema.safetensors"))
        ema.load_state_dict({"decay": ema.decay, "updates": record["ema_updates"], "shadow": shadow})
    return {"step": record["step"], "positions": record["positions"], "reports": record["reports"],
            "skipped_steps": record["skipped_steps"]}


def _gather(accelerator, value: object) -> list:
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def _gather_reports(accelerator, sources: dict[str, Source]) -> SkipReport:
    merged = SkipReport()
    for per_process in _gather(accelerator, {n: s.stream.report.to_dict() for n, s in sources.items()}):
        for report in per_process.values():
            merged.merge(SkipReport.from_dict(report))
    return merged


def _digest(trainable: list[tuple[str, torch.nn.Parameter]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, param in trainable:
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _identical_across_processes(accelerator, trainable) -> bool:
    return len(set(_gather(accelerator, _digest(trainable)))) == 1


def _slug(text: str, limit: int = 40) -> str:
    words = "".join(c if c.isalnum() else "-" for c in text.lower()).split("-")
    return "-".join(w for w in words if w)[:limit] or "prompt"


def _describe_start(config, stage, model, trainable, sources, accelerator, start_from) -> None:
    count = sum(p.numel() for _, p in trainable)
    total = sum(p.numel() for p in model.unet.parameters())
    data = ", ".join(f"{s.name} ({s.size} items{', cached' if s.cached else ''})"
                     for s in sources.values())
    where = f"resuming from {start_from}" if start_from else "fresh start"
    print(f"vc2 train: stage {stage.name} ({stage.summary}); training {count:,} of {total:,} UNet parameters; "
          f"data: {data}; {accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
          f"{config.run.mixed_precision}; {where}; output {config.run.output_dir}", flush=True)
