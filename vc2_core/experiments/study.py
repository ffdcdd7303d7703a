"""``vc2 study coupling``: the paper's spatial-temporal coupling analysis (VideoCrafter2 sec. 3.1) at toy scale.

For each seed, on the embedded synthetic world (:mod:`vc2_core.experiments.runs`):

1. an **image model** (the stand-in for SD 2.1): a fresh UNet whose spatial modules are trained on
   low-quality stills; its temporal modules stay at their zero-output init, so it is an image model;
2. two video bases from it, on the same low-quality videos: **F-base** (full training: every UNet
   parameter, videos jointly with stills) and **P-base** (partial training: temporal modules and the
   fps condition only, spatial frozen at the image model's);
3. **perturbations** of the bases on the high-quality images, by direct fine-tuning or LoRA of the
   spatial modules, the temporal ones, or both (F-Spa-DIR, F-Temp-DIR, F-Spa&Temp-DIR,
   F-Spa&Temp-LORA, F-Spa-LORA, P-Spa-LORA, F-Temp-LORA, P-Temp-LORA), each checkpointed at
   several fine-tuning lengths;
4. every model samples the same prompts with the same seeds; the videos are scored for visual
   quality (sharpness, watermark, saturation), motion (prompted direction, speed, jitter, flicker)
   and text alignment.

The report gives means over seeds with 95% confidence intervals (Student t), tables like the
paper's Tables 3 (visual quality) and 4 (motion preference between pairs of models), plots against
the fine-tuning length, and a verdict on each of the paper's orderings: reproduced (the seed-level
difference's interval excludes zero on the paper's side), contradicted (it excludes zero on the
other side) or not resolved at this scale.

Everything is resumable: finished runs and scored models are skipped. The statistics are
:mod:`vc2_core.experiments.study_analysis`'s, the report :mod:`vc2_core.experiments.study_report`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, read_checkpoint
from ..files import write_atomically, write_text_atomically
from ..model import VideoCrafter, split_official_state_dict
from ..training import run_dir
from ..training.config import TrainConfig
from ..training.lora import load_lora, read_lora
from .presets import STUDY_PRESETS, VARIANTS, StudyPreset, Variant
from .runs import (
    STAGE1_EMA,
    STAGE1_LR,
    STAGE1_SNR_CAP,
    RunClock,
    ensure_cache,
    sample_videos,
    stage_config,
    to_uint8,
    train_stage,
    write_data,
)
from .scoring import score
from .stage0 import pretrain_autoencoder, seeded_start
from .study_analysis import aggregate, score_path
from .study_report import write_report

CLOCK_SAVE_SECONDS = 60.0  # how often a study with seeds side by side saves its wall time
# Both bases are trained like the demo's base (vc2 demo --from-scratch): the EMA of their weights, the loss
# weighted by noise level (capped SNR); the videos and stills are the demo's too.
BASE_TRAINING = {"ema_decay": STAGE1_EMA, "snr_weight_cap": STAGE1_SNR_CAP, "image_mode": "pack"}


def run_study(out: str | Path, preset: str = "quick", seeds: tuple[int, ...] = (0, 1, 2),
              show_progress: bool = True, jobs: int = 1) -> Path:
    """Run (or resume) the coupling study into ``out``; returns the report's path.

    ``jobs`` seeds train and score side by side, each in its own process with an equal share of torch's CPU
    threads (on a small CPU, where the toy UNet's steps are too small to keep several threads busy, three
    one-thread processes train about 1.7x faster than one two-thread process); 1 runs them in turn here."""
    if preset not in STUDY_PRESETS:
        raise ValueError(f"unknown study preset {preset!r}; choose one of {', '.join(STUDY_PRESETS)}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"the study needs at least two distinct seeds for its intervals; got {list(seeds)}")
    if jobs < 1:
        raise ValueError(f"jobs {jobs}: must be at least 1")
    chosen = STUDY_PRESETS[preset]
    if any(length % chosen.perturb_steps[0] for length in chosen.perturb_steps):
        raise ValueError(f"fine-tuning lengths {chosen.perturb_steps} must be multiples of the first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_settings(out / "study.json", chosen)
    clock = RunClock(out / "runtime.json")
    say = tqdm.write if show_progress else quiet
    data = write_data(out / "data", 0, chosen.videos, chosen.stills, chosen.images, show_progress)
    autoencoder = pretrain_autoencoder(out / "stage0.safetensors", data, chosen.autoencoder_steps, chosen.text_steps, 0,
                                       show_progress)
    jobs = min(jobs, len(seeds))
    if jobs == 1:
        def said(text: str) -> None:  # the clock saved as each piece is done: a stopped invocation's time counts
            say(text)
            clock.save()

        for seed in seeds:
            run_seed(out, data, autoencoder, preset, seed, show_progress, said)
    else:
        start = seeded_start(autoencoder, seeds[0], out / f"seed{seeds[0]}" / "start.safetensors")
        build_caches(out, data, chosen, start, show_progress)
        threads = max(1, torch.get_num_threads() // jobs)
        say(f"{len(seeds)} seeds, {jobs} at a time, {threads} thread(s) each")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            line = print_line if show_progress else quiet  # a line per finished piece instead of progress bars
            running = {pool.submit(run_seed, out, data, autoencoder, preset, seed, False, line, threads): seed
                       for seed in seeds}
            pending = set(running)
            while pending:
                done, pending = wait(pending, timeout=CLOCK_SAVE_SECONDS, return_when=FIRST_COMPLETED)
                for finished in done:
                    finished.result()  # a seed that failed stops the study with its error
                    say(f"seed {running[finished]}: trained and scored")
                clock.save()  # every minute: a stopped invocation's time still counts when the study resumes
    results = aggregate(out, chosen, seeds)
    report = write_report(out, chosen, seeds, results, clock.save(), clock.invocations)
    say(f"report {report}")
    return report


def record_settings(path: Path, preset: StudyPreset) -> None:
    """Write the preset a study folder is for, or check that a resumed one is for the same: a run resumed with
    other settings (more image-model steps, say) would continue its checkpoints as if nothing had changed."""
    settings = json.loads(json.dumps(dataclasses.asdict(preset)))  # tuples as lists, as read back
    if not path.is_file():
        write_text_atomically(path, json.dumps(settings, indent=1))
        return
    before = json.loads(path.read_text())
    changed = [f"{key} {before.get(key)} -> {value}" for key, value in settings.items() if before.get(key) != value]
    if changed:
        raise ValueError(f"{path.parent} holds a study with other settings ({'; '.join(changed)}); resume it with "
                         f"preset {before.get('name')!r}, or choose another --out")


def run_seed(out: Path, data: Path, autoencoder: Path, preset: str, seed: int, show_progress: bool,
             say: Callable[[str], None], threads: int | None = None) -> None:
    """Train and score one seed's models in ``out / f"seed{seed}"`` (finished runs and scores are skipped);
    ``say`` is told as each run and score is ready. ``threads`` sets torch's CPU threads (for a seed in a process
    of its own; ``say`` must then be a module-level function, to reach it)."""
    if threads is not None:
        torch.set_num_threads(threads)
    chosen = STUDY_PRESETS[preset]
    models = train_seed(out / f"seed{seed}", data, autoencoder, chosen, seed, show_progress, say)
    model = None  # one model per seed: every scored model differs from it in the UNet alone
    for name, length, weights, base in models:
        scores = score_path(out / f"seed{seed}", name, length)
        if not scores.is_file():  # finished models are skipped
            model = model or load_checkpoint(base)[0]
            score_model(scores, weights, base, model, chosen, f"{name}@{length}", show_progress)
            say(f"seed {seed}: {name}@{length} scored")


def print_line(text: str) -> None:
    tqdm.write(text)
    sys.stdout.flush()


def quiet(text: str) -> None:
    pass


# ---- training and scoring ----------------------------------------------------------------------------------


def image_model_config(folder: Path, data: Path, preset: StudyPreset, seed: int, start: Path) -> TrainConfig:
    """The image model: the spatial modules of ``start`` trained on the low-quality stills, one frame each, with
    the bases' EMA and noise-level weighting (the image model is the EMA of its weights)."""
    return stage_config(folder / "image-model", folder.parent / "cache" / "stills", "spa-dir", start, seed,
                        preset.image_model_steps, lr=STAGE1_LR, images=data / "stills", batch=preset.batch * 2,
                        ema_decay=STAGE1_EMA, snr_weight_cap=STAGE1_SNR_CAP)


def base_config(folder: Path, data: Path, preset: StudyPreset, seed: int, kind: str, image_model: Path) -> TrainConfig:
    """A video base from the image model: "F" trains every parameter on videos jointly with stills, "P" the
    temporal modules (and fps condition) on videos alone."""
    caches = folder.parent / "cache"  # the frozen VAE and text encoder are stage 0's in every seed
    if kind == "F":
        return stage_config(folder / "F-base", caches / "videos+stills", "full", image_model, seed, preset.base_steps,
                            lr=STAGE1_LR, videos=data / "videos", images=data / "stills", batch=preset.batch,
                            **BASE_TRAINING)
    return stage_config(folder / "P-base", caches / "videos", "partial", image_model, seed, preset.base_steps,
                        lr=STAGE1_LR, videos=data / "videos", batch=preset.batch, **BASE_TRAINING)


def variant_config(folder: Path, data: Path, preset: StudyPreset, seed: int, variant: Variant,
                   base: Path) -> TrainConfig:
    """A perturbation of a base on the high-quality images, checkpointed at every scored fine-tuning length."""
    every, longest = preset.perturb_steps[0], preset.perturb_steps[-1]
    return stage_config(folder / variant.name, folder.parent / "cache" / "images", variant.stage, base, seed,
                        longest, lr=variant.lr, images=data / "images", batch=preset.batch, every=every,
                        keep_last=longest // every)


def build_caches(out: Path, data: Path, preset: StudyPreset, start: Path, show_progress: bool) -> None:
    """Every latent cache of the study (shared by the seeds: their VAE and text encoder are stage 0's), built
    before seeds train side by side so that no two build one at once."""
    folder = out / "seed-caches"  # no run is written here: the configs only name the caches
    for config in (image_model_config(folder, data, preset, 0, start), base_config(folder, data, preset, 0, "F", start),
                   base_config(folder, data, preset, 0, "P", start),
                   variant_config(folder, data, preset, 0, VARIANTS[0], start)):
        ensure_cache(config, show_progress)


def train_seed(folder: Path, data: Path, autoencoder: Path, preset: StudyPreset, seed: int,
               show_progress: bool, say: Callable[[str], None] = quiet) -> list[tuple[str, int, Path, Path]]:
    """Train one seed's image model, bases and perturbations (``say`` is told as each is ready); returns (model
    name, length, weights, base model) to score: weights are a model file for the bases and direct fine-tunes, a
    LoRA file for the LoRA variants."""
    start = seeded_start(autoencoder, seed, folder / "start.safetensors")
    image_model = train_stage(image_model_config(folder, data, preset, seed, start), show_progress)
    image_model = image_model / "model-ema.safetensors"
    say(f"seed {seed}: image model ready")
    bases = {}
    for kind in ("P", "F"):  # the partial base first: whether it learns motion is the study's first question
        bases[kind] = train_stage(base_config(folder, data, preset, seed, kind, image_model),
                                  show_progress) / "model-ema.safetensors"
        say(f"seed {seed}: {kind}-base ready")
    models = [("F-base", 0, bases["F"], bases["F"]), ("P-base", 0, bases["P"], bases["P"])]
    for variant in VARIANTS:
        run = folder / variant.name
        train_stage(variant_config(folder, data, preset, seed, variant, bases[variant.base]), show_progress)
        say(f"seed {seed}: {variant.name} ready")
        for length in preset.perturb_steps:
            checkpoint = run / run_dir.CHECKPOINTS / run_dir.checkpoint_name(length)
            weights = checkpoint / ("lora.safetensors" if "lora" in variant.stage else "model.safetensors")
            models.append((variant.name, length, weights, bases[variant.base]))
    return models


def score_model(path: Path, weights: Path, base: Path, model: VideoCrafter, preset: StudyPreset, label: str,
                show_progress: bool) -> None:
    """Sample and score every (prompt, sample seed) video of one model: the scores to ``path``
    (``scores/NAME@LENGTH.json``), the videos (uint8, (n, t, h, w, 3), in the rows' order) beside it as ``.npz``.

    ``model`` is any model of the same seed: its UNet takes the weights' (or the base's, then the LoRA's);
    its VAE and text encoder are stage 0's, frozen in every model of the study."""
    lora = weights.name.startswith("lora")
    model.unet.load_state_dict(_unet_state(base if lora else weights), strict=True)
    plain = model.unet
    if lora:  # the adapters go into a copy, so the model's UNet stays plain for the next one
        model.unet = copy.deepcopy(plain)
        load_lora(model.unet, read_lora(weights))
    try:
        videos = sample_videos(model, preset.prompts, preset.seeds, preset.sample_steps, show_progress, label)
    finally:
        model.unet = plain
    rows = [{"prompt": prompt, "sample_seed": seed, **score(pixels, prompt)}
            for (prompt, seed), pixels in videos.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8(np.stack(list(videos.values())))
    write_atomically(path.with_suffix(".npz"), lambda temporary: np.savez_compressed(temporary, videos=frames),
                     suffix=".npz")
    write_text_atomically(path, json.dumps(rows, indent=1))  # last: a scores file means the model is done


def _unet_state(path: Path) -> dict:
    return split_official_state_dict(read_checkpoint(path)[0])["unet"]
