"""Runs on the embedded synthetic world, shared by ``vc2 demo`` and ``vc2 study coupling``.

- :func:`world_model_config`: the VideoCrafter2 architecture at toy size, with a 4x VAE so that a
  32x32 frame is an 8x8 latent (the UNet step is four times cheaper than at 16x16);
- :func:`write_data`: the world as files the trainer reads (low-quality videos and stills,
  high-quality images, each with a caption);
- stage 0, the stand-ins for the pretrained VAE and text encoder, is :mod:`vc2_core.experiments.stage0`;
- :func:`stage_config` / :func:`train_stage`: a run of ``vc2 train`` from a latent cache, and what its
  ``metrics.jsonl`` says (:func:`train_seconds`, :func:`smoothed_losses`);
- :func:`sample_videos`: videos of prompts from a model (:mod:`vc2_core.experiments.scoring` scores them);
- :class:`RunClock` and :func:`machine`: how long a resumable run took, and where.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..attention import attention_backend
from ..config import ModelConfig, VAEConfig
from ..config import preset as preset_config
from ..files import write_text_atomically
from ..pipeline import GenerationSettings, generate
from ..training.config import TrainConfig, config_from_dict
from ..training.latent_cache import build_cache
from ..training.stages import get_stage
from ..training.trainer import build_training_model, data_sets, train
from ..video_io import write_video
from .world import high_quality_image, low_quality_video

SIZE, FRAMES, FPS = 32, 8, 8
STAGE1_LR = 1e-3  # full training (and the image model) from a random UNet
# Fine-tuning a trained base. Stage 2's track jitter over stage 1's (demo, 16 videos, training seeds 0 and 1):
# 1.54x and 1.50x at 5e-4, 1.42x and 1.42x at 2.5e-4; the colours only the images show come when prompted in
# 0.42 and 0.34 of frames at 5e-4, 0.14 and 0.16 at 2.5e-4 (stage 1: 0.02): a gentler stage 2 keeps more of
# the motion and takes less of the images' appearance.
STAGE2_LR = 2.5e-4
SAMPLE_CFG = 3.0  # guidance scale of the samples: at 7.5 the world's frames come out over-saturated and cluttered
STAGE1_EMA = 0.999  # the base is the EMA of stage 1's weights (its model-ema.safetensors)
# Stage 1's noise-level weighting (training.objective.snr_weights). Measured on the world (2,000 steps, eps
# MSE at t = 950): 0.0167 with uniform weights, worse than predicting x0 = 0 (0.004); 0.0035 with the cap at
# 50, and the prompt then matters there (a wrong colour +75 % loss instead of +7 %).
STAGE1_SNR_CAP = 50.0


def world_model_config() -> ModelConfig:
    """The tiny VideoCrafter2 architecture with a three-level (4x) VAE: 32x32 frames, 8x8 latents, and causal
    temporal attention (the official ``use_causal_attention`` flag, off in the released configs).

    VideoCrafter2's temporal layers have no frame positions: self-attention over frames is blind to their
    order, and only the temporal convolutions' zero padding marks the ends. A model that cannot tell frame 0
    from frame 7 cannot tell "left" from "right". Measured on the world (1,500 steps, SNR cap 50, videos
    only, 16 held-out samples): direction agreement 0.54 without the causal mask, 0.87 with it."""
    tiny = preset_config("tiny")
    unet = dataclasses.replace(tiny.unet, use_causal_attention=True, temporal_length=FRAMES)
    return dataclasses.replace(tiny, name="tiny-world", unet=unet,
                               vae=VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1), height=SIZE, width=SIZE)


class RunClock:
    """The wall time of a resumable run, summed over the invocations that worked on it.

    Saved to ``path`` (JSON) whenever :meth:`save` is called, after each finished piece of work, so the work an
    interrupted invocation finished still counts when a later one resumes."""

    def __init__(self, path: Path):
        self.path = path
        prior = json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "invocations": 0}
        self.before, self.invocations = float(prior["seconds"]), int(prior["invocations"]) + 1
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def save(self) -> float:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps({"seconds": round(self.seconds, 1),
                                                     "invocations": self.invocations}))
        return self.seconds


def machine() -> str:
    """The CPU (or GPU), its cores and the torch build, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{cores} CPU cores"
    return f"{cpu}, {where}, torch {torch.__version__}"


# ---- data --------------------------------------------------------------------------------------------------


def write_data(folder: Path, seed: int, videos: int, stills: int, images: int, show_progress: bool) -> Path:
    """The synthetic world as files: videos/ (mp4 + .txt), stills/ and images/ (png + .txt)."""
    done = folder / "done.json"
    record = {"seed": seed, "videos": videos, "stills": stills, "images": images, "size": SIZE, "frames": FRAMES}
    if done.is_file() and json.loads(done.read_text()) == record:
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # another world, or an interrupted write
    for name in ("videos", "stills", "images"):
        (folder / name).mkdir(parents=True)
    with tqdm(total=videos + stills + images, desc="data", unit="item", disable=not show_progress) as bar:
        for index in range(videos):
            clip = low_quality_video(seed, index, frames=FRAMES, size=SIZE)
            write_video(folder / "videos" / f"{index:05d}.mp4", to_uint8(clip.frames), FPS)
            (folder / "videos" / f"{index:05d}.txt").write_text(clip.caption + "\n")
            bar.update(1)
        for index in range(stills):  # a frame of further low-quality clips, captioned by the object
            clip = low_quality_video(seed, videos + index, frames=FRAMES, size=SIZE)
            _write_png(folder / "stills" / f"{index:05d}.png", clip.frames[0])
            (folder / "stills" / f"{index:05d}.txt").write_text(f"a {clip.thing.colour} {clip.thing.shape}\n")
            bar.update(1)
        for index in range(images):
            picture = high_quality_image(seed, index, size=SIZE)
            _write_png(folder / "images" / f"{index:05d}.png", picture.pixels)
            (folder / "images" / f"{index:05d}.txt").write_text(picture.caption + "\n")
            bar.update(1)
    write_text_atomically(done, json.dumps(record))
    return folder


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(to_uint8(pixels)).save(path)


# ---- training ----------------------------------------------------------------------------------------------


def stage_config(folder: Path, cache: Path, stage: str, start: Path, seed: int, steps: int, *, lr: float,
                 videos: Path | None = None, images: Path | None = None, batch: int = 8,
                 image_ratio: float = 0.2, every: int | None = None, keep_last: int = 1,
                 ema_decay: float | None = None, snr_weight_cap: float | None = None,
                 image_mode: str = "frame") -> TrainConfig:
    """A ``vc2 train`` config for one stage of a synthetic run: videos and/or images at the world's size,
    AdamW at ``lr`` with a short warm-up, a checkpoint every ``every`` steps (default: a quarter of the run),
    an EMA of the weights when ``ema_decay`` is given (written beside them as ``model-ema.safetensors``), the
    loss weighted by noise level when ``snr_weight_cap`` is given. Images enter as ``image_mode`` says
    (``images.mode`` of ``vc2 train``): one-frame clips ("frame", the fine-tuning images) or packed FRAMES to
    a pseudo-clip ("pack", the bases' stills)."""
    raw: dict = {
        "run": {"output_dir": str(folder), "seed": seed, "max_steps": steps, "cpu": not torch.cuda.is_available()},
        "model": {"checkpoint": str(start), "gradient_checkpointing": False},
        "stage": {"name": stage},
        "data": {"num_workers": 0, "cache": str(cache)},
        "checkpoint": {"every": every or max(steps // 4, 1), "keep_last": keep_last},
        "log": {"every": 1, "tensorboard": False},
        "optim": {"lr": lr, "warmup_steps": min(100, steps // 4), "max_grad_norm": 1.0, "ema_decay": ema_decay,
                  "snr_weight_cap": snr_weight_cap},
    }
    if videos is not None:
        raw["videos"] = {"index": str(videos), "frames": FRAMES, "height": SIZE, "width": SIZE,
                         "frame_stride": [1, 1], "fps": FPS, "batch_size": batch}
    if images is not None:
        if videos is not None:  # as many images (or pseudo-clips) as a video batch has clips
            size = batch
        else:  # images only: twice the batch in images
            size = 2 * batch if image_mode == "frame" else max(1, 2 * batch // FRAMES)
        raw["images"] = {"index": str(images), "height": SIZE, "width": SIZE, "fps": FPS, "mode": image_mode,
                         "batch_size": size, "ratio": image_ratio}
    return config_from_dict(raw, f"synthetic run {folder}")


def train_stage(config: TrainConfig, show_progress: bool) -> Path:
    """The stage's final checkpoint folder: trained now, continued from its last checkpoint, or already there.

    The stage's data is encoded once into a latent cache (VAE moments and caption embeddings, by the
    model the stage starts from), so steps neither decode files nor run the frozen encoders."""
    summary = Path(config.run.output_dir) / "summary.json"
    if summary.is_file():
        record = json.loads(summary.read_text())
        if record["steps"] == config.run.max_steps and record["final_checkpoint"]:
            return Path(record["final_checkpoint"])
    ensure_cache(config, show_progress)
    result = train(config, resume="auto", show_progress=show_progress)
    return Path(result.final_checkpoint)


def ensure_cache(config: TrainConfig, show_progress: bool) -> Path:
    """The stage's latent cache (``config.data.cache``), built now unless a finished one is there."""
    cache = Path(config.data.cache)
    if not (cache / "cache.json").is_file():
        shutil.rmtree(cache, ignore_errors=True)  # an interrupted build
        model = build_training_model(config)
        kinds = tuple(kind for kind in ("videos", "images") if kind in get_stage(config.stage.name).data
                      and getattr(config, kind).index is not None)
        datasets, _ = data_sets(config, model.config, kinds)
        build_cache(model, datasets, cache, seed=config.run.seed, show_progress=show_progress)
    return cache


def _step_records(folder: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, one per logged step (every step: the runs log every step)."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def train_seconds(folder: Path) -> float:
    """The training time of a run, summed over every invocation that resumed it: the step times its
    metrics.jsonl records (a step logged twice, after a resume from an earlier checkpoint, counts once)."""
    per_step = {record["step"]: record["step_seconds"] for record in _step_records(folder)}
    return float(sum(per_step.values()))


def smoothed_losses(folder: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) of a run, the losses as a running mean over a twentieth of the run: single-step losses
    are very noisy."""
    records = _step_records(folder)
    steps, losses = [record["step"] for record in records], [record["loss"] for record in records]
    window = max(1, len(losses) // 20)
    smooth = [float(np.mean(losses[max(0, i - window + 1):i + 1])) for i in range(len(losses))]
    return steps, smooth


def loss_curve(folder: Path, points: int) -> list[list[float]]:
    """The running-mean loss of a run at about ``points`` evenly spaced steps: [[step, loss], ...]."""
    steps, smooth = smoothed_losses(folder)
    keep = sorted(set(np.linspace(0, len(steps) - 1, min(points, len(steps))).round().astype(int).tolist()))
    return [[steps[i], round(smooth[i], 6)] for i in keep]


# ---- evaluation --------------------------------------------------------------------------------------------


def sample_videos(model, prompts: tuple[str, ...], seeds: tuple[int, ...], steps: int,
                  show_progress: bool, label: str) -> dict[tuple[str, int], np.ndarray]:
    """{(prompt, seed): frames (t, h, w, 3) in [0, 1]}: DDIM with ``steps`` steps, eta 0, cfg :data:`SAMPLE_CFG`."""
    settings = GenerationSettings(height=SIZE, width=SIZE, frames=FRAMES, fps=FPS, steps=steps, cfg=SAMPLE_CFG,
                                  eta=0.0)
    pairs = [(prompt, seed) for prompt in prompts for seed in seeds]  # one batch: CPU steps are cheaper wide
    with tqdm(total=steps, desc=f"sample {label}", unit="step", disable=not show_progress) as bar:
        with attention_backend("sdpa"):
            frames = generate(model, [p for p, _ in pairs], [s for _, s in pairs], settings,
                              callback=lambda step: bar.update(1))
    return {pair: ((video.permute(1, 2, 3, 0).numpy() + 1) / 2).clip(0, 1) for pair, video in zip(pairs, frames)}
