"""Training on a few samples encoded once and held in memory, on one device: the ComfyUI fine-tune node's run.

The samples, encoded by :func:`~.latent_cache.encode_sample`, are a latent cache in memory
(:class:`~.latent_cache.HeldItems`), drawn by an ItemStream and made into batches by the BatchMaker exactly
as ``vc2 train`` does from a cache on disk; the step is the trainer's (:class:`~.step.TrainStep`) on a
:class:`~.engine.LocalEngine`; the driver runs it with :func:`~.loop.run_loop`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..diffusion.schedule import DiffusionSchedule
from ..vae import VideoVAE
from .batches import BatchMaker, CachedSample
from .config import DataSection, OptimSection
from .data import ItemStream
from .engine import LocalEngine
from .latent_cache import HeldItems
from .stages import DataKind
from .step import MicroBatches, NamedParameters, Optimisation, Source, TrainStep

Tensor = torch.Tensor


def in_memory_step(unet: nn.Module, schedule: DiffusionSchedule, vae: VideoVAE, trainable: NamedParameters,
                   encoded: list[CachedSample], uncond: Tensor, *, batch_size: int, seed: int, total_steps: int,
                   optim: OptimSection, data: DataSection, device: torch.device) -> TrainStep:
    """The TrainStep of a run over ``encoded`` images, ``batch_size`` per step (the optimizer, lr schedule and
    EMA as ``optim`` says, caption dropout as ``data`` says)."""
    stream = ItemStream(HeldItems(encoded), seed=seed, local_batch=batch_size)
    sources = {DataKind.IMAGES: Source(DataKind.IMAGES, stream, pack=1, cached=True, size=len(encoded))}
    maker = BatchMaker(vae, None, schedule.num_timesteps, seed=seed, caption_dropout=data.caption_dropout,
                       uncond=uncond, device=device)
    optimisation = Optimisation.create(trainable, optim, total_steps)
    optimisation.start_ema()
    return TrainStep(LocalEngine(device), unet, schedule, optimisation, MicroBatches(sources, maker, seed, 1.0))
