"""``vc2 demo``: VideoCrafter2's whole recipe on the embedded synthetic world, end to end on a CPU.

1. data: low-quality videos of captioned motions (plus low-quality stills for joint training) and
   high-quality images (:mod:`vc2_core.experiments.world`), written as files the trainer reads;
2. the **base**: stage 0 (an autoencoder standing in for SD's VAE) and stage 1, full training of the
   world's VideoCrafter2-architecture model on the videos jointly with the stills (``vc2 train``
   stage ``full``). By default the base is the one that ships with the package
   (:data:`SHIPPED_BASE`, made by ``vc2 demo --from-scratch``, which records how in the file);
   ``--from-scratch`` trains it now, ``--base FILE`` loads another;
3. stage 2, trained now: spatial-only fine-tuning on the high-quality images (stage ``spa-dir``, F-Spa-DIR);
4. prompts that pair a learned motion with a colour only the images show (the paper's concept
   composition) and prompts of the videos' own colours, sampled from both stages with seeds that
   no training used, scored by :mod:`vc2_core.experiments.scoring`;
5. outputs: side-by-side videos (mp4, gif), loss and metric charts (PNG), ``report.md`` and
   ``metrics.json``, which state every acceptance number next to its target
   (:mod:`vc2_core.experiments.demo_report`).

Every step goes through the real code paths (tokenizer and text encoder, VAE, UNet, the schedule with
scale_arr, the DDIM sampler, the training loop). A run is resumable: finished steps are skipped and
an interrupted training continues from its last checkpoint.
"""

from __future__ import annotations

import resource
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, read_provenance, save_checkpoint
from ..parameter_groups import Group, classify_unet_parameters
from ..video_io import write_video
from .demo_report import write_report
from .presets import DEMO_PRESETS, DemoPreset
from .runs import (
    FPS,
    FRAMES,
    SIZE,
    STAGE1_EMA,
    STAGE1_LR,
    STAGE1_SNR_CAP,
    STAGE2_LR,
    RunClock,
    loss_curve,
    machine,
    sample_videos,
    stage_config,
    to_uint8,
    train_seconds,
    train_stage,
    write_data,
)
from .scoring import names_unseen_colour, score
from .stage0 import pretrain_autoencoder

SHIPPED_BASE = Path(__file__).parents[1] / "assets" / "demo_base.safetensors"


def run_demo(out: str | Path, preset: str = "quick", seed: int = 0, *, base: str | Path | None = None,
             from_scratch: bool = False, show_progress: bool = True) -> Path:
    """Run (or resume) the demo into ``out``; returns the report's path.

    The base (stages 0 and 1) is trained now with ``from_scratch``, else read from ``base`` (default: the
    shipped :data:`SHIPPED_BASE`). Stage 2, sampling and scoring always run now. Bad input raises ValueError
    before anything is written."""
    started = time.perf_counter()
    chosen, out, base_path = _check_inputs(out, preset, base, from_scratch)
    out.mkdir(parents=True, exist_ok=True)
    say = tqdm.write if show_progress else (lambda text: None)
    data = write_data(out / "data", seed, chosen.videos if from_scratch else 0,
                      chosen.stills if from_scratch else 0, chosen.images, show_progress)
    say(f"[1/4] data in {data}")
    if from_scratch:
        base_path = train_base(out, data, chosen, seed, show_progress)
        say(f"[2/4] base trained now (stage 0 autoencoder, stage 1 full) -> {base_path}")
    else:
        say(f"[2/4] base loaded from {base_path}")
    provenance = read_provenance(base_path)
    stage2 = train_stage(stage_config(out / "stage2", out / "cache" / "stage2", "spa-dir", base_path, seed,
                                      chosen.stage2_steps, lr=STAGE2_LR, images=data / "images", batch=chosen.batch),
                         show_progress) / "model.safetensors"
    say(f"[3/4] stage 2 (spa-dir, spatial modules only) trained now -> {stage2}")
    results = evaluate(out, base_path, stage2, chosen, show_progress)
    run = {"preset": chosen.name, "seed": seed, "base": str(base_path), "base_trained_now": from_scratch,
           "base_provenance": provenance, "seconds": time.perf_counter() - started,
           "peak_rss_gb": peak_rss_gb()}
    report = write_report(out, chosen, run, results)
    say(f"[4/4] report {report}")
    return report


def _check_inputs(out: str | Path, preset: str, base: str | Path | None,
                  from_scratch: bool) -> tuple[DemoPreset, Path, Path]:
    if preset not in DEMO_PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {', '.join(DEMO_PRESETS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a folder (it is created if missing)")
    if from_scratch and base is not None:
        raise ValueError("give --from-scratch (train the base now) or --base FILE (load one), not both")
    base_path = Path(base) if base is not None else SHIPPED_BASE
    if not from_scratch and not base_path.is_file():
        where = "the shipped base is missing from the installation" if base is None else "no such file"
        raise ValueError(f"base {base_path}: {where}; run `vc2 demo --from-scratch` to train one")
    return DEMO_PRESETS[preset], out, base_path


# ---- the base (stages 0 and 1) -------------------------------------------------------------------------------


def train_base(out: Path, data: Path, preset: DemoPreset, seed: int, show_progress: bool) -> Path:
    """Stage 0 and stage 1 trained now; the result at ``out/base.safetensors`` with its provenance."""
    path = out / "base.safetensors"
    if path.is_file():
        return path
    clock = RunClock(out / "base_runtime.json")  # resumed invocations summed
    start = pretrain_autoencoder(out / "stage0.safetensors", data, preset.autoencoder_steps, preset.text_steps, seed,
                                 show_progress)
    clock.save()
    config = stage_config(out / "stage1", out / "cache" / "stage1", "full", start, seed, preset.stage1_steps,
                          lr=STAGE1_LR, videos=data / "videos", images=data / "stills", batch=preset.batch,
                          ema_decay=STAGE1_EMA, snr_weight_cap=STAGE1_SNR_CAP, image_mode="pack")
    final = train_stage(config, show_progress) / "model-ema.safetensors"
    clock.save()
    model, _ = load_checkpoint(final)
    save_checkpoint(model, path, provenance={
        "made_by": f"vc2 demo --from-scratch --preset {preset.name} --seed {seed}",
        "seed": seed, "commit": _commit(), "preset": preset.name,
        "videos": preset.videos, "stills": preset.stills, "autoencoder_steps": preset.autoencoder_steps,
        "text_steps": preset.text_steps,
        "stage1_steps": preset.stage1_steps, "stage1_batch": preset.batch, "stage1_lr": STAGE1_LR,
        "stage1_ema": STAGE1_EMA, "stage1_snr_weight_cap": STAGE1_SNR_CAP,
        "machine": machine(), "stage1_train_seconds": round(train_seconds(out / "stage1"), 1),
        "wall_seconds": round(clock.save(), 1), "invocations": clock.invocations,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "stage1_loss": loss_curve(out / "stage1", points=200),
    })
    return path


def _commit() -> str:
    """The git commit of this source tree, ``+dirty`` when the package's own files (``vc2_core/``) differ from it
    (edits elsewhere, such as docs, do not change what a run computes), or "unknown" outside a checkout."""
    package = Path(__file__).parents[1]  # vc2_core/
    try:
        found = subprocess.run(["git", "describe", "--always", "--abbrev=12"], cwd=package,
                               capture_output=True, text=True, timeout=10)
        changed = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=package,
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if found.returncode != 0 or not found.stdout.strip():
        return "unknown"
    return found.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


def peak_rss_gb() -> float:
    """This process's peak resident memory, GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


# ---- evaluation --------------------------------------------------------------------------------------------


def evaluate(out: Path, stage1: Path, stage2: Path, preset: DemoPreset, show_progress: bool) -> dict:
    """Videos of every prompt and seed from both stages, their metrics, and the side-by-side files."""
    videos: dict[str, np.ndarray] = {}
    rows = []
    unets = {}
    for stage, path in (("stage1", stage1), ("stage2", stage2)):
        model, _ = load_checkpoint(path)
        unets[stage] = model.unet
        sampled = sample_videos(model, preset.prompts, preset.seeds, preset.sample_steps, show_progress, stage)
        for (prompt, seed), pixels in sampled.items():
            videos[f"{stage}|{prompt}|{seed}"] = pixels
            rows.append({"stage": stage, "prompt": prompt, "seed": seed, "composition": names_unseen_colour(prompt),
                         **score(pixels, prompt)})
    side_by_side = write_side_by_side(out, videos, preset)
    return {"rows": rows, "videos": side_by_side,
            "temporal_identical": temporal_identical(unets["stage1"], unets["stage2"])}


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
    frames = to_uint8(grid)
    return [write_video(out / f"stage1_vs_stage2.{kind}", frames, FPS) for kind in ("mp4", "gif")]


def temporal_identical(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    """Every temporal and conditioning tensor of the stage-2 UNet equals stage 1's, bit for bit."""
    groups = classify_unet_parameters(first)
    a, b = first.state_dict(), second.state_dict()
    return all(torch.equal(a[name], b[name]) for name, info in groups.items() if info.group != Group.SPATIAL)
