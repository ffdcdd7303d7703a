"""One optimizer step, the same for ``vc2 train`` and the ComfyUI fine-tune node.

    for each of ``gradient_accumulation`` micro-batches: videos or images (a seeded draw)
        -> TrainBatch (keyed latents, context, timesteps, noise) -> eps MSE (dropout RNG keyed by the micro-batch)
        -> finite on every process? -> backward (no gradient sync but for the last micro-batch)
    -> clip -> AdamW -> lr schedule -> EMA

A non-finite loss leaves the parameters untouched and returns a :class:`NonFinite` for the loop to act on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..diffusion.schedule import DiffusionSchedule
from .batches import BatchMaker, TrainBatch
from .config import OptimSection
from .data import ItemStream, draw_generator, stable_seed
from .ema import EMA
from .engine import Engine
from .objective import diffusion_loss, snr_weights
from .stages import DataKind

Tensor = torch.Tensor
NamedParameters = list[tuple[str, nn.Parameter]]


@dataclass
class Source:
    """One kind of training data for this process."""

    kind: DataKind
    stream: ItemStream
    pack: int  # one-frame items per pseudo-clip (1: no packing)
    cached: bool  # items are latent-cache samples (moments, contexts), not pixels
    size: int  # items in the dataset


@dataclass(frozen=True)
class StepResult:
    loss: float  # the mean over micro-batches and processes
    kinds: str  # the data kinds of its micro-batches, "images", "videos" or "images+videos"
    grad_norm: float  # before clipping; nan without clipping


@dataclass(frozen=True)
class NonFinite:
    """A step that found a NaN or infinite loss (on this or another process) and changed nothing."""

    loss: float  # this process's loss
    kind: DataKind
    keys: list[int]  # the item keys of this process's batch


def make_optimizer(trainable: NamedParameters, optim: OptimSection) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for _, p in trainable], lr=optim.lr, betas=optim.betas,
                             weight_decay=optim.weight_decay, eps=optim.eps)


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, warmup: int,
                total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``total``."""
    from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)


def choose_source(sources: dict[DataKind, Source], ratio: float, seed: int, micro_index: int) -> Source:
    """Videos or images for this micro-batch: images with probability ``ratio`` (the same on every process)."""
    if len(sources) == 1:
        return next(iter(sources.values()))
    draw = torch.rand((), generator=draw_generator(seed, micro_index, "source")).item()
    return sources[DataKind.IMAGES] if draw < ratio else sources[DataKind.VIDEOS]


@dataclass
class Optimisation:
    """What trains and how: the parameters, AdamW, its lr schedule, the EMA and the optim settings."""

    trainable: NamedParameters
    optimizer: torch.optim.Optimizer  # the engine may wrap it (accelerate.prepare) after create()
    scheduler: torch.optim.lr_scheduler.LRScheduler
    settings: OptimSection
    ema: EMA | None = None  # see start_ema

    @classmethod
    def create(cls, trainable: NamedParameters, optim: OptimSection, total_steps: int) -> Optimisation:
        optimizer = make_optimizer(trainable, optim)
        return cls(trainable, optimizer, lr_schedule(optimizer, optim.schedule, optim.warmup_steps, total_steps), optim)

    def start_ema(self) -> None:
        """Start the EMA when the settings ask for one; call it once the engine has wrapped the model, whose
        parameters (FSDP's views of its shards) the EMA then copies."""
        if self.settings.ema_decay is not None:
            self.ema = EMA(self.trainable, self.settings.ema_decay)


@dataclass
class MicroBatches:
    """Where micro-batches come from: this process's sources, drawn by a seeded choice, made into TrainBatches."""

    sources: dict[DataKind, Source]
    maker: BatchMaker
    seed: int
    image_ratio: float  # with videos and images: the share of image micro-batches

    def draw(self, micro_index: int) -> tuple[DataKind, TrainBatch]:
        source = choose_source(self.sources, self.image_ratio, self.seed, micro_index)
        drawn = source.stream.next_batch()
        make = self.maker.from_cache if source.cached else self.maker.from_pixels
        return source.kind, make(source.kind, drawn, source.pack)


@dataclass
class TrainStep:
    """What a step needs; :meth:`run` does step ``index`` (0-based, counted over the whole run)."""

    engine: Engine
    unet: nn.Module  # as the engine prepared it (a DDP / FSDP wrapper under accelerate)
    schedule: DiffusionSchedule
    optimisation: Optimisation
    batches: MicroBatches

    def __post_init__(self) -> None:
        cap = self.optimisation.settings.snr_weight_cap
        self.loss_weights = None if cap is None else snr_weights(self.schedule, cap)

    def run(self, index: int) -> StepResult | NonFinite:
        """One optimizer step over ``gradient_accumulation`` micro-batches."""
        engine, opt = self.engine, self.optimisation
        accumulation = opt.settings.gradient_accumulation
        losses, kinds = [], []
        for micro in range(accumulation):
            micro_index = index * accumulation + micro
            kind, batch = self.batches.draw(micro_index)
            last = micro == accumulation - 1
            with contextlib.nullcontext() if last else engine.no_sync(self.unet):
                with self._dropout_rng(micro_index), engine.autocast():
                    loss = self._loss(batch)
                if not self._finite_everywhere(loss):
                    opt.optimizer.zero_grad(set_to_none=True)
                    return NonFinite(loss.item(), kind, batch.keys)
                engine.backward(loss / accumulation)
            losses.append(loss.detach())
            kinds.append(kind)
        grad_norm = float("nan")
        if opt.settings.max_grad_norm is not None:
            grad_norm = float(engine.clip_grad_norm_([p for _, p in opt.trainable], opt.settings.max_grad_norm))
        opt.optimizer.step()
        opt.scheduler.step()
        opt.optimizer.zero_grad(set_to_none=True)
        if opt.ema is not None:
            opt.ema.update()
        mean_loss = engine.reduce(torch.stack(losses).mean(), reduction="mean").item()
        return StepResult(mean_loss, "+".join(sorted(set(kinds))), grad_norm)

    def lr(self) -> float:
        return self.optimisation.scheduler.get_last_lr()[0]

    @contextlib.contextmanager
    def _dropout_rng(self, micro_index: int) -> Iterator[None]:
        """The global RNG, which dropout draws from (the temporal convolutions' 0.1 is hard-coded in the
        official ResBlock), seeded by (seed, micro-batch, process) inside the block and restored after it:
        runs are reproducible and resume exactly, whatever ran before in the process."""
        device = self.engine.device
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(stable_seed(self.batches.seed, "dropout", micro_index, self.engine.process_index))
            yield

    def _loss(self, batch: TrainBatch) -> Tensor:
        return diffusion_loss(self.unet, self.schedule, batch.latents, batch.context, batch.fps, batch.timesteps,
                              batch.noise, weights=self.loss_weights)

    def _finite_everywhere(self, loss: Tensor) -> bool:
        flag = torch.tensor([1.0 if torch.isfinite(loss).item() else 0.0], device=loss.device)
        return bool(self.engine.reduce(flag, reduction="sum").item() == self.engine.num_processes)
