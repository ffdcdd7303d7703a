"""A run's data: the configured datasets (or a latent cache) as this process's item streams."""

from __future__ import annotations

import torch

from ..config import ModelConfig, size_problems
from .config import TrainConfig
from .data import Images, ItemStream, Skipped, SkipReport, VideoClips, read_image_index, read_video_index
from .latent_cache import LatentCache
from .loop import Progress
from .stages import DataKind, Stage
from .step import Source

Tensor = torch.Tensor


def data_sets(config: TrainConfig, mc: ModelConfig,
              kinds: tuple[str, ...]) -> tuple[dict[DataKind, VideoClips | Images], dict[DataKind, list[Skipped]]]:
    """The configured media datasets of these kinds, and the index lines each index skipped."""
    datasets: dict[DataKind, VideoClips | Images] = {}
    index_skips: dict[DataKind, list[Skipped]] = {}
    if DataKind.VIDEOS in kinds and config.videos.index is not None:
        v = config.videos
        entries, index_skips[DataKind.VIDEOS] = read_video_index(v.index, v.root)
        height, width = _size(v.height, v.width, mc, "videos")
        datasets[DataKind.VIDEOS] = VideoClips(entries, frames=v.frames or mc.frames, height=height, width=width,
                                               frame_stride=v.frame_stride, crop=v.crop, default_fps=v.fps)
    if DataKind.IMAGES in kinds and config.images.index is not None:
        i = config.images
        entries, index_skips[DataKind.IMAGES] = read_image_index(i.index, i.root)
        height, width = _size(i.height, i.width, mc, "images")
        datasets[DataKind.IMAGES] = Images(entries, height=height, width=width, crop=i.crop, fps=i.fps or mc.fps)
    return datasets, index_skips


def open_sources(config: TrainConfig, stage: Stage, mc: ModelConfig, rank: int, world: int, progress: Progress,
                 *, fresh: bool) -> dict[DataKind, Source]:
    """This process's data streams (media or a latent cache), continuing at the saved positions."""
    cached = config.data.cache is not None
    index_skips: dict[DataKind, list[Skipped]] = {}
    if cached:
        cache = LatentCache.open(config.data.cache, mc)
        datasets = {kind: cache.items(kind) for kind in stage.kinds() if cache.count(kind)}
    else:
        datasets, index_skips = data_sets(config, mc, stage.kinds())
    if not datasets:
        raise ValueError(f"stage {stage.name} trains on {'+'.join(stage.kinds())}, but the config gives no such "
                         "data" + (f" (the cache {config.data.cache} has none)" if cached else ""))
    pack = (config.videos.frames or mc.frames) if config.images.mode == "pack" else 1
    if pack > 1 and not mc.unet.temporal_selfatt_only:
        raise ValueError("images.mode pack needs temporal self-attention only (temporal_selfatt_only)")
    sources = {}
    for kind, dataset in datasets.items():
        images = kind == DataKind.IMAGES
        local_batch = config.images.batch_size * pack if images else config.videos.batch_size
        positions = progress.positions.get(kind, [0] * world)
        if len(positions) != world:
            raise ValueError(f"the checkpoint was written by {len(positions)} processes; resume it with the same "
                             f"number (this run has {world}) so every process continues its own data exactly")
        saved = progress.reports.get(kind)
        report = SkipReport.from_dict(saved[rank]) if saved else SkipReport()
        if fresh and rank == 0:
            for skipped in index_skips.get(kind, []):
                report.add(skipped)
        stream = ItemStream(dataset, seed=config.run.seed, local_batch=local_batch, rank=rank, world_size=world,
                            position=positions[rank], num_workers=config.data.num_workers, report=report)
        sources[kind] = Source(kind, stream, pack if images else 1, cached, len(dataset))
    return sources


def _size(height: int | None, width: int | None, mc: ModelConfig, what: str) -> tuple[int, int]:
    height, width = height or mc.height, width or mc.width
    problems = size_problems(mc, height, width)
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))
    return height, width
