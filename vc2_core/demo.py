"""``vc2 demo``: VideoCrafter2's whole recipe on the embedded synthetic world, end to end on a CPU.

1. data: low-quality videos of captioned motions (plus low-quality stills for joint training) and
   high-quality images (:mod:`vc2_core.training.synthetic`), written as files the trainer reads;
2. stage 1: full training of a tiny VideoCrafter2-architecture model on the videos jointly with the
   stills (``vc2 train`` stage ``full``);
3. stage 2: spatial-only fine-tuning on the high-quality images (stage ``spa-dir``, F-Spa-DIR);
4. prompts that pair a learned motion with an appearance only the images showed, sampled from both
   stages with the same seeds, scored by :mod:`vc2_core.analysis.metrics`;
5. outputs: side-by-side videos (mp4, gif), loss and metric charts (PNG), report.md.

Every step goes through the real code paths (tokenizer and text encoder, VAE, UNet, the schedule with
scale_arr, the DDIM sampler, the training loop). A run is resumable: finished steps are skipped and
an interrupted training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .analysis.metrics import alignment_scores, motion_scores, quality_scores
from .analysis.plots import bar_chart, line_chart
from .checkpoint import load_checkpoint
from .parameter_groups import Group, classify_unet_parameters
from .pipeline import GenerationSettings, generate
from .training.config import config_from_dict
from .training.latent_cache import build_cache
from .training.stages import get_stage
from .training.synthetic import high_quality_image, low_quality_video
from .training.trainer import build_training_model, data_sets, train
from .video_io import write_video

SIZE, FRAMES, FPS = 32, 8, 8


@dataclass(frozen=True)
class DemoPreset:
    name: str
    videos: int  # low-quality clips
    stills: int  # low-quality stills for stage 1's joint image training
    images: int  # high-quality images for stage 2
    stage1_steps: int
    stage2_steps: int
    batch: int
    sample_steps: int
    prompts: tuple[str, ...]
    autoencoder_steps: int = 400
    seeds: tuple[int, ...] = (0, 1)


PROMPTS = ("a purple circle moving right slowly", "an orange square moving left quickly",
           "a cyan triangle moving down quickly", "a red circle moving up slowly")
PRESETS = {
    "tiny": DemoPreset("tiny", videos=8, stills=4, images=8, stage1_steps=4, stage2_steps=3, batch=2,
                       sample_steps=3, prompts=PROMPTS[:2], seeds=(0,), autoencoder_steps=5),
    "quick": DemoPreset("quick", videos=96, stills=32, images=64, stage1_steps=120, stage2_steps=70, batch=4,
                        sample_steps=25, prompts=PROMPTS, seeds=(0,), autoencoder_steps=120),
    "full": DemoPreset("full", videos=512, stills=128, images=256, stage1_steps=3000, stage2_steps=800, batch=8,
                       sample_steps=50, prompts=PROMPTS, seeds=(0, 1, 2), autoencoder_steps=3000),
}


def run_demo(out: str | Path, preset: str = "quick", seed: int = 0, show_progress: bool = True) -> Path:
    """Run (or resume) the demo into ``out``; returns the report's path."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say = tqdm.write if show_progress else (lambda text: None)
    data = write_data(out / "data", chosen, seed, show_progress)
    say(f"[1/4] data in {data}")
    cpu = not torch.cuda.is_available()
    start = pretrain_autoencoder(out / "stage0.safetensors", data, chosen, seed, show_progress)
    say(f"[1/4] autoencoder (stage 0, stands in for the pretrained VAE) -> {start}")
    stage1 = _train_stage(out / "stage1", _stage1_config(out, data, chosen, seed, cpu, start), show_progress)
    say(f"[2/4] stage 1 (full) -> {stage1}")
    stage2 = _train_stage(out / "stage2", _stage2_config(out, data, chosen, seed, cpu, stage1),
                          show_progress)
    say(f"[3/4] stage 2 (spa-dir) -> {stage2}")
    results = evaluate(out, stage1, stage2, chosen, show_progress)
    report = write_report(out, chosen, seed, results, time.perf_counter() - started)
    say(f"[4/4] report {report}")
    return report


# ---- data --------------------------------------------------------------------------------------------------


def write_data(folder: Path, preset: DemoPreset, seed: int, show_progress: bool) -> Path:
    """The synthetic world as files: videos/ (mp4 + .txt), stills/ and images/ (png + .txt)."""
    done = folder / "done.json"
    record = {"preset": preset.name, "seed": seed, "size": SIZE, "frames": FRAMES}
    if done.is_file() and json.loads(done.read_text()) == record:
        return folder
    for name in ("videos", "stills", "images"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    total = preset.videos + preset.stills + preset.images
    with tqdm(total=total, desc="data", unit="item", disable=not show_progress) as bar:
        for index in range(preset.videos):
            clip = low_quality_video(seed, index, frames=FRAMES, size=SIZE)
            write_video(folder / "videos" / f"{index:05d}.mp4", _uint8(clip.frames), FPS)
            (folder / "videos" / f"{index:05d}.txt").write_text(clip.caption + "\n")
            bar.update(1)
        for index in range(preset.stills):  # a frame of further low-quality clips, captioned by the object
            clip = low_quality_video(seed, preset.videos + index, frames=FRAMES, size=SIZE)
            _write_png(folder / "stills" / f"{index:05d}.png", clip.frames[0])
            (folder / "stills" / f"{index:05d}.txt").write_text(f"a {clip.thing.colour} {clip.thing.shape}\n")
            bar.update(1)
        for index in range(preset.images):
            picture = high_quality_image(seed, index, size=SIZE)
            _write_png(folder / "images" / f"{index:05d}.png", picture.pixels)
            (folder / "images" / f"{index:05d}.txt").write_text(picture.caption + "\n")
            bar.update(1)
    done.write_text(json.dumps(record))
    return folder


def _uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(_uint8(pixels)).save(path)


# ---- stage 0: an autoencoder ----------------------------------------------------------------------------------


def pretrain_autoencoder(path: Path, data: Path, preset: DemoPreset, seed: int, show_progress: bool) -> Path:
    """The starting model: the tiny architecture with random UNet and text encoder, and a VAE trained to
    reconstruct the world's pictures (VideoCrafter2 starts from Stable Diffusion's trained VAE; a random
    one would make every video noise). The latent is rescaled so that ``scale_factor * z`` has unit
    standard deviation, as SD's 0.18215 does for its VAE."""
    from PIL import Image

    from .checkpoint import save_checkpoint
    from .config import preset as preset_config
    from .model import VideoCrafter

    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = VideoCrafter(preset_config("tiny"))
    files = sorted((data / "stills").glob("*.png")) + sorted((data / "images").glob("*.png"))
    pictures = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32) / 127.5 - 1)
                            .permute(2, 0, 1) for f in files])  # (n, 3, H, W) in [-1, 1]
    vae = model.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    with tqdm(range(preset.autoencoder_steps), desc="autoencoder", unit="step", disable=not show_progress) as bar:
        for _ in bar:
            batch = pictures[torch.randint(len(pictures), (16,), generator=generator)]
            mean, logvar = vae.posterior(batch)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
            reconstruction = vae.decode(z)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
            loss = (reconstruction - batch).abs().mean() + 1e-4 * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
    save_checkpoint(model, path)
    return path


# ---- training ----------------------------------------------------------------------------------------------


def _common(out: Path, name: str, seed: int, steps: int, cpu: bool, start: Path) -> dict:
    return {
        "run": {"output_dir": str(out / name), "seed": seed, "max_steps": steps, "cpu": cpu},
        "model": {"checkpoint": str(start), "gradient_checkpointing": False},
        "data": {"num_workers": 0, "cache": str(out / "cache" / name)},
        "checkpoint": {"every": max(steps // 4, 1), "keep_last": 1},
        "log": {"every": 1, "tensorboard": False},
    }


def _stage1_config(out: Path, data: Path, preset: DemoPreset, seed: int, cpu: bool, start: Path):
    raw = _common(out, "stage1", seed, preset.stage1_steps, cpu, start)
    raw |= {
        "stage": {"name": "full"},
        "videos": {"index": str(data / "videos"), "frames": FRAMES, "height": SIZE, "width": SIZE,
                   "frame_stride": [1, 1], "fps": FPS, "batch_size": preset.batch},
        "images": {"index": str(data / "stills"), "height": SIZE, "width": SIZE, "fps": FPS,
                   "batch_size": preset.batch, "ratio": 0.2},
        "optim": {"lr": 1e-3, "warmup_steps": min(20, preset.stage1_steps // 4), "max_grad_norm": 1.0},
    }
    return config_from_dict(raw, "demo stage 1")


def _stage2_config(out: Path, data: Path, preset: DemoPreset, seed: int, cpu: bool, start: Path):
    raw = _common(out, "stage2", seed, preset.stage2_steps, cpu, start)
    raw |= {
        "stage": {"name": "spa-dir"},
        "images": {"index": str(data / "images"), "height": SIZE, "width": SIZE, "fps": FPS,
                   "batch_size": preset.batch * 2},
        "optim": {"lr": 5e-4, "max_grad_norm": 1.0},
    }
    return config_from_dict(raw, "demo stage 2")


def _train_stage(folder: Path, config, show_progress: bool) -> Path:
    """The stage's final model file: trained now, continued from its last checkpoint, or already there.

    The stage's data is encoded once into a latent cache (VAE moments and caption embeddings, by the
    model the stage starts from), so steps neither decode video files nor run the frozen encoders."""
    summary = folder / "summary.json"
    if summary.is_file():
        record = json.loads(summary.read_text())
        if record["steps"] == config.run.max_steps and record["final_checkpoint"]:
            return Path(record["final_checkpoint"]) / "model.safetensors"
    cache = Path(config.data.cache)
    if not (cache / "cache.json").is_file():
        shutil.rmtree(cache, ignore_errors=True)  # an interrupted build
        model = build_training_model(config)
        kinds = tuple(kind for kind in ("videos", "images") if kind in get_stage(config.stage.name).data)
        datasets, _ = data_sets(config, model.config, kinds)
        build_cache(model, datasets, cache, seed=config.run.seed, show_progress=show_progress)
    result = train(config, resume="auto", show_progress=show_progress)
    return Path(result.final_checkpoint) / "model.safetensors"


# ---- evaluation --------------------------------------------------------------------------------------------


def parse_prompt(prompt: str) -> dict[str, str]:
    """colour, shape, direction, speed of a demo prompt ("a purple circle moving right slowly")."""
    words = prompt.split()
    return {"colour": words[1], "shape": words[2], "direction": words[4], "speed": words[5]}


def evaluate(out: Path, stage1: Path, stage2: Path, preset: DemoPreset, show_progress: bool) -> dict:
    """Videos of every prompt and seed from both stages, their metrics, and the side-by-side files."""
    settings = GenerationSettings(height=SIZE, width=SIZE, frames=FRAMES, fps=FPS, steps=preset.sample_steps,
                                  cfg=7.5, eta=0.0)
    videos: dict[str, np.ndarray] = {}
    rows = []
    unets = {}
    for stage, path in (("stage1", stage1), ("stage2", stage2)):
        model, _ = load_checkpoint(path)
        unets[stage] = model.unet
        model.unet.set_attention_backend("sdpa")
        for prompt in tqdm(preset.prompts, desc=f"sample {stage}", disable=not show_progress):
            frames = generate(model, [prompt] * len(preset.seeds), list(preset.seeds), settings)
            for seed, video in zip(preset.seeds, frames):
                pixels = ((video.permute(1, 2, 3, 0).numpy() + 1) / 2).clip(0, 1)  # (t, h, w, 3)
                videos[f"{stage}|{prompt}|{seed}"] = pixels
                rows.append({"stage": stage, "prompt": prompt, "seed": seed, **score(pixels, prompt)})
    side_by_side = write_side_by_side(out, videos, preset)
    return {"rows": rows, "videos": side_by_side,
            "temporal_identical": temporal_identical(unets["stage1"], unets["stage2"])}


def score(pixels: np.ndarray, prompt: str) -> dict[str, float]:
    p = parse_prompt(prompt)
    return {**motion_scores(pixels, p["direction"], p["speed"]).as_dict(), **quality_scores(pixels).as_dict(),
            **alignment_scores(pixels, p["colour"], p["shape"]).as_dict()}


def write_side_by_side(out: Path, videos: dict[str, np.ndarray], preset: DemoPreset) -> list[Path]:
    """One grid video: a row per prompt (first seed), stage 1 left, stage 2 right, 4x enlarged."""
    rows = []
    for prompt in preset.prompts:
        seed = preset.seeds[0]
        left, right = videos[f"stage1|{prompt}|{seed}"], videos[f"stage2|{prompt}|{seed}"]
        gap = np.ones((FRAMES, SIZE, 2, 3), np.float32)
        rows.append(np.concatenate([left, gap, right], axis=2))
    grid = np.concatenate(rows, axis=1)
    grid = grid.repeat(4, axis=1).repeat(4, axis=2)
    frames = _uint8(grid)
    return [write_video(out / f"stage1_vs_stage2.{kind}", frames, FPS) for kind in ("mp4", "gif")]


def temporal_identical(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    """Every temporal and conditioning tensor of the stage-2 UNet equals stage 1's, bit for bit."""
    groups = classify_unet_parameters(first)
    a, b = first.state_dict(), second.state_dict()
    return all(torch.equal(a[name], b[name]) for name, info in groups.items() if info.group != Group.SPATIAL)


# ---- report -------------------------------------------------------------------------------------------------


METRICS = (("direction_agreement", "motion: direction agreement (1 = as prompted)", True),
           ("speed_ratio", "motion: speed / prompted speed (1 = as prompted)", None),
           ("track_jitter", "motion: track jitter (lower = smoother)", False),
           ("sharpness", "quality: sharpness", True),
           ("watermark", "quality: watermark (0 = none)", False),
           ("saturation", "quality: colour saturation", True),
           ("colour_match", "text: colour as prompted", True),
           ("shape_match", "text: shape as prompted", True))


def _mean(rows: list[dict], stage: str, key: str) -> float:
    values = [row[key] for row in rows if row["stage"] == stage and not np.isnan(row[key])]
    return float(np.mean(values)) if values else float("nan")


def _losses(folder: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps.append(record["step"])
        losses.append(record["loss"])
    window = max(1, len(losses) // 20)  # a running mean: single-step losses are very noisy
    smooth = [float(np.mean(losses[max(0, i - window + 1):i + 1])) for i in range(len(losses))]
    return steps, smooth


def write_report(out: Path, preset: DemoPreset, seed: int, results: dict, seconds: float) -> Path:
    rows = results["rows"]
    (out / "metrics.json").write_text(json.dumps(rows, indent=1))
    line_chart(out / "loss_curves.png", "training loss (running mean)",
               {"stage 1: full, videos + stills": _losses(out / "stage1"),
                "stage 2: spa-dir, HQ images": _losses(out / "stage2")}, "step", "loss")
    keys = [key for key, _, _ in METRICS]
    bar_chart(out / "metrics.png", "stage 1 vs stage 2 (means over prompts and seeds)", keys,
              {stage: [_mean(rows, stage, key) for key in keys] for stage in ("stage1", "stage2")})
    lines = [
        "# vc2 demo report", "",
        f"Preset `{preset.name}`, seed {seed}: {preset.videos} low-quality clips and {preset.stills} stills "
        f"(stage 1, {preset.stage1_steps} steps, full), {preset.images} high-quality images (stage 2, "
        f"{preset.stage2_steps} steps, spatial modules only), {SIZE}x{SIZE}, {FRAMES} frames; the tiny "
        f"VideoCrafter2-architecture model; {preset.sample_steps} DDIM steps, cfg 7.5; {seconds:.0f} s in all.", "",
        "Prompts pair a motion from the videos with a colour that only the high-quality images show "
        "(purple, orange, cyan), except the last.", "",
        "![side by side](stage1_vs_stage2.gif)", "",
        "| metric | stage 1 | stage 2 | better |", "|---|---:|---:|---|",
    ]
    verdicts = {}
    for key, label, higher in METRICS:
        one, two = _mean(rows, "stage1", key), _mean(rows, "stage2", key)
        if abs(two - one) <= 0.02 * max(abs(one), abs(two), 1e-6):
            better = "same (within 2%)"
        elif higher is None:
            better = "stage 2" if abs(two - 1) < abs(one - 1) else "stage 1"
        else:
            better = "stage 2" if (two > one) == higher else "stage 1"
        verdicts[key] = better
        lines.append(f"| {label} | {one:.3f} | {two:.3f} | {better} |")
    same = results["temporal_identical"]
    lines += [
        "", "Temporal and fps-condition tensors of stage 2 equal stage 1's bit for bit: "
        f"**{'yes' if same else 'NO'}**.",
        "", "## What it shows", "",
        _reading(verdicts), "",
        "![loss curves](loss_curves.png)", "", "![metrics](metrics.png)", "",
        "Files: `stage1_vs_stage2.mp4` / `.gif` (left stage 1, right stage 2, a row per prompt), `metrics.json` "
        "(every video's scores), `stage1/` and `stage2/` (training runs, `metrics.jsonl`, checkpoints).", "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def _reading(verdicts: dict[str, str]) -> str:
    quality = [k for k in ("sharpness", "watermark", "saturation") if verdicts[k] == "stage 2"]
    motion = [k for k in ("direction_agreement", "speed_ratio", "track_jitter") if verdicts[k] == "stage 1"]
    # ties ("same") count as neither better picture quality nor worse motion
    parts = []
    if quality:
        parts.append(f"Stage 2 improves picture quality on {', '.join(quality)} (of sharpness, watermark, "
                     "saturation)")
    else:
        parts.append("Stage 2 does not improve the picture-quality metrics at this scale")
    if motion:
        parts.append(f"motion is worse after stage 2 on {', '.join(motion)}")
    else:
        parts.append("motion is as good or better after stage 2 on every motion metric")
    colour = "better" if verdicts["colour_match"] == "stage 2" else "not better"
    return ("; ".join(parts) + f". The prompted colours, mostly seen only in the images, are {colour} matched "
            "after stage 2. These are a tiny model's numbers on a toy world, from one run: read them as a "
            "demonstration of the pipeline and its measurements, not as the paper's result.")


__all__ = ["PRESETS", "DemoPreset", "run_demo"]
