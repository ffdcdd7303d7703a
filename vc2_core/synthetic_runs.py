"""Runs on the embedded synthetic world, shared by ``vc2 demo`` and ``vc2 study coupling``.

- :func:`world_model_config`: the VideoCrafter2 architecture at toy size, with a 4x VAE so that a
  32x32 frame is an 8x8 latent (the UNet step is four times cheaper than at 16x16);
- :func:`write_data`: the world as files the trainer reads (low-quality videos and stills,
  high-quality images, each with a caption);
- :func:`pretrain_autoencoder`: stage 0, a VAE trained on the world's pictures, standing in for the
  pretrained VAE VideoCrafter2 starts from;
- :func:`seeded_start`: that model with a fresh UNet drawn from a seed;
- :func:`stage_config` / :func:`train_stage`: a run of ``vc2 train`` from a latent cache;
- :func:`sample_and_score`: videos of prompts from a model, and their metrics.
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

from .analysis.metrics import alignment_scores, motion_scores, quality_scores
from .attention import attention_backend
from .config import ModelConfig, VAEConfig
from .config import preset as preset_config
from .pipeline import GenerationSettings, generate
from .text import END, PAD, START
from .training.config import TrainConfig, config_from_dict
from .training.latent_cache import build_cache
from .training.stages import get_stage
from .training.synthetic import all_captions, high_quality_image, low_quality_video
from .training.trainer import build_training_model, data_sets, lr_schedule, train
from .video_io import write_video

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
        self.path.write_text(json.dumps({"seconds": round(self.seconds, 1), "invocations": self.invocations}))
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
    done.write_text(json.dumps(record))
    return folder


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(to_uint8(pixels)).save(path)


# ---- stage 0: an autoencoder ----------------------------------------------------------------------------------


AUTOENCODER_LR = 2e-3
# A 50-step warm-up, then a cosine decay to 0. At a constant rate the decoder ends with a coloured streak along
# the frame's top-left edge that the object count takes for a second object: 71 % of reconstructed world clips
# have one object after 600 steps at a constant rate, 98 % with the decay (the clips themselves: 100 %).
AUTOENCODER_WARMUP = 50
# Pictures per step. Squares and triangles of low-quality world clips reconstructed as such after 1,500 steps:
# 46 % and 65 % at batch 16, 70 % and 95 % at batch 64 (the clips themselves: 98 %); 3,000 steps at batch 16:
# 52 % and 79 %.
AUTOENCODER_BATCH = 64


def pretrain_autoencoder(path: Path, data: Path, steps: int, text_steps: int, seed: int,
                         show_progress: bool) -> Path:
    """The starting model: the world's architecture with random UNet and text encoder, and a VAE trained to
    reconstruct the world's pictures (VideoCrafter2 starts from Stable Diffusion's trained VAE; a random
    one would make every video noise). The latent is rescaled so that ``scale_factor * z`` has unit
    standard deviation, as SD's 0.18215 does for its VAE. The text encoder, its word embeddings
    :data:`WORD_EMBEDDING_GAIN` times open_clip's initial scale (:func:`distinct_word_embeddings`), is trained
    for ``text_steps`` so that every output position carries the caption (:func:`pretrain_text_encoder`)."""
    from PIL import Image

    from .checkpoint import save_checkpoint
    from .model import VideoCrafter

    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = VideoCrafter(world_model_config())
    distinct_word_embeddings(model.text_encoder)
    pretrain_text_encoder(model.text_encoder, text_steps, seed, show_progress)
    files = sorted((data / "stills").glob("*.png")) + sorted((data / "images").glob("*.png"))
    pictures = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32) / 127.5 - 1)
                            .permute(2, 0, 1) for f in files])  # (n, 3, H, W) in [-1, 1]
    vae = model.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=AUTOENCODER_LR, weight_decay=0.0)
    schedule = lr_schedule(optimizer, "cosine", AUTOENCODER_WARMUP, steps)
    generator = torch.Generator().manual_seed(seed)
    with tqdm(range(steps), desc="autoencoder", unit="step", disable=not show_progress) as bar:
        for _ in bar:
            batch = pictures[torch.randint(len(pictures), (AUTOENCODER_BATCH,), generator=generator)]
            mean, logvar = vae.posterior(batch)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
            reconstruction = vae.decode(z)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
            loss = reconstruction_loss(reconstruction, batch) + 1e-4 * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(l1=f"{loss.item():.4f}", refresh=False)
    vae.eval()
    with torch.no_grad():
        std = float(vae.posterior(pictures)[0].std())
        gain = 1.0 / (vae.scale_factor * std)  # mean -> gain * mean, so scale_factor * z has unit std
        quant, post = vae.autoencoder.quant_conv, vae.autoencoder.post_quant_conv
        z = quant.out_channels // 2
        quant.weight[:z] *= gain
        quant.bias[:z] *= gain
        quant.bias[z:] += 2 * np.log(gain)  # log-variance of the rescaled latent
        post.weight /= gain
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    return path


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 weighted towards the pixels that differ from the picture's background, plus MSE (both (n, 3, H, W)).

    The world's objects cover a few percent of a frame: plain L1 is minimised early by a grey frame with
    the watermark (objects reconstructed at an IoU of 0.0 after 300 steps); weighted, the objects come
    back (IoU 0.70 at 300 steps on held-out low-quality frames)."""
    background = target.flatten(2).median(dim=2).values[:, :, None, None]  # (n, 3, 1, 1)
    weight = 1 + 8 * (target - background).abs().sum(dim=1, keepdim=True)  # (n, 1, H, W)
    error = (reconstruction - target).abs()
    return (error * weight).mean() / weight.mean() + (reconstruction - target).pow(2).mean()


WORD_EMBEDDING_GAIN = 10.0


@torch.no_grad()
def distinct_word_embeddings(text_encoder: torch.nn.Module) -> None:
    """Scale a random text encoder's word embeddings by :data:`WORD_EMBEDDING_GAIN`.

    At open_clip's initial scale (std 0.02, as the position embeddings) a random transformer's outputs are
    dominated by what every caption shares: "moving left" and "moving right" give outputs with cosine
    0.94 at the direction word, and the UNet can barely tell the directions apart. At ten times that
    scale the differing word's output has cosine near 0 while the other positions still mix their context."""
    embedding = text_encoder.tower.embeddings.token_embedding.weight
    embedding.mul_(WORD_EMBEDDING_GAIN)


def pretrain_text_encoder(text_encoder: torch.nn.Module, steps: int, seed: int, show_progress: bool) -> None:
    """Train the stand-in for OpenCLIP's text tower so that every output position carries the whole caption.

    A trained CLIP spreads a caption's meaning over the positions after its words (the 70-odd padding
    positions that dominate VideoCrafter2's cross-attention). A random encoder does not: there, "moving
    left" and "moving right" differ at one position of 77 (the padding outputs have cosine 0.99), and a UNet
    trained on it never learns which way to move (direction agreement 0.0 after 1,500 steps on a world of
    left and right only). Here every output position learns, through a linear head that is then discarded,
    to tell which of the world's words its caption contains (:func:`all_captions`; "" contains none)."""
    captions = all_captions()
    tokens = text_encoder.tokenizer(captions)  # (n, 77)
    words = sorted({int(t) for t in tokens.flatten().tolist()} - {PAD, START, END})
    index = {word: i for i, word in enumerate(words)}
    targets = torch.zeros(len(captions), len(words))
    for row, caption_tokens in enumerate(tokens.tolist()):
        for token in caption_tokens:
            if token in index:
                targets[row, index[token]] = 1.0
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the head's initial weights from ``seed``, the global RNG untouched
        torch.manual_seed(seed)
        head = torch.nn.Linear(text_encoder.config.width, len(words))
    parameters = [p for p in text_encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=0.0)
    text_encoder.train()
    with tqdm(range(steps), desc="text encoder", unit="step", disable=not show_progress) as bar:
        for _ in bar:
            batch = torch.randint(len(captions), (64,), generator=generator)
            logits = head(text_encoder(tokens[batch]))  # (64, 77, words)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets[batch][:, None].expand_as(logits))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(bce=f"{loss.item():.4f}", refresh=False)
    text_encoder.eval()


def seeded_start(autoencoder: Path, seed: int, path: Path) -> Path:
    """The stage-0 model (trained VAE, text encoder) with a fresh UNet drawn from ``seed``, at ``path``."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .model import VideoCrafter

    if path.is_file():
        return path
    model, _ = load_checkpoint(autoencoder)
    torch.manual_seed(seed)
    model.unet.load_state_dict(VideoCrafter(model.config).unet.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    return path


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
    cache = Path(config.data.cache)
    if not (cache / "cache.json").is_file():
        shutil.rmtree(cache, ignore_errors=True)  # an interrupted build
        model = build_training_model(config)
        kinds = tuple(kind for kind in ("videos", "images") if kind in get_stage(config.stage.name).data
                      and getattr(config, kind).index is not None)
        datasets, _ = data_sets(config, model.config, kinds)
        build_cache(model, datasets, cache, seed=config.run.seed, show_progress=show_progress)
    result = train(config, resume="auto", show_progress=show_progress)
    return Path(result.final_checkpoint)


# ---- evaluation --------------------------------------------------------------------------------------------


def parse_prompt(prompt: str) -> dict[str, str]:
    """colour, shape, direction, speed of a world prompt ("a purple circle moving right slowly")."""
    words = prompt.split()
    return {"colour": words[1], "shape": words[2], "direction": words[4], "speed": words[5]}


def score(pixels: np.ndarray, prompt: str) -> dict[str, float]:
    """Every metric of one video (t, h, w, 3) in [0, 1] against its prompt."""
    p = parse_prompt(prompt)
    return {**motion_scores(pixels, p["direction"], p["speed"]).as_dict(), **quality_scores(pixels).as_dict(),
            **alignment_scores(pixels, p["colour"], p["shape"]).as_dict()}


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
