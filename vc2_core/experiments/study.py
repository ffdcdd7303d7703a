"""``vc2 study coupling``: the paper's spatial-temporal coupling analysis (VideoCrafter2 sec. 3.1) at toy scale.

For each seed, on the embedded synthetic world (:mod:`vc2_core.synthetic_runs`):

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

Everything is resumable: finished runs and scored models are skipped.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, read_checkpoint
from ..model import VideoCrafter, split_official_state_dict
from ..training import run_dir
from ..training.lora import load_lora, read_lora
from .plots import line_chart
from .runs import (
    SAMPLE_CFG,
    STAGE1_EMA,
    STAGE1_LR,
    STAGE1_SNR_CAP,
    RunClock,
    machine,
    pretrain_autoencoder,
    sample_videos,
    score,
    seeded_start,
    stage_config,
    to_uint8,
    train_stage,
    write_data,
)


@dataclass(frozen=True)
class StudyPreset:
    name: str
    videos: int
    stills: int
    images: int
    autoencoder_steps: int
    text_steps: int  # stage 0's text-encoder training
    image_model_steps: int
    base_steps: int
    perturb_steps: tuple[int, ...]  # the fine-tuning lengths that are scored (checkpoints of one run)
    batch: int
    sample_steps: int
    prompts: tuple[str, ...]
    sample_seeds: tuple[int, ...]


@dataclass(frozen=True)
class Variant:
    name: str  # the paper's
    base: str  # "F" or "P"
    stage: str  # the vc2 train stage
    lr: float


VARIANTS = (
    Variant("F-Spa-DIR", "F", "spa-dir", 5e-4),
    Variant("F-Temp-DIR", "F", "temp-dir", 5e-4),
    Variant("F-Spa&Temp-DIR", "F", "spa-temp-dir", 5e-4),
    Variant("F-Spa&Temp-LORA", "F", "spa-temp-lora", 2e-3),
    Variant("F-Spa-LORA", "F", "spa-lora", 2e-3),
    Variant("P-Spa-LORA", "P", "spa-lora", 2e-3),
    Variant("F-Temp-LORA", "F", "temp-lora", 2e-3),
    Variant("P-Temp-LORA", "P", "temp-lora", 2e-3),
)
BASES = ("F-base", "P-base")

PROMPTS = ("a purple circle moving right slowly", "an orange square moving left quickly",
           "a cyan triangle moving down quickly", "a red circle moving up slowly",
           "a red square moving right quickly", "a blue circle moving left slowly",
           "a green triangle moving down slowly", "a yellow circle moving up quickly")
PRESETS = {
    "tiny": StudyPreset("tiny", videos=8, stills=4, images=8, autoencoder_steps=5, text_steps=5, image_model_steps=2,
                        base_steps=3, perturb_steps=(1, 2), batch=2, sample_steps=2, prompts=PROMPTS[:2],
                        sample_seeds=(0,)),
    "quick": StudyPreset("quick", videos=1024, stills=256, images=256, autoencoder_steps=1500, text_steps=400,
                         image_model_steps=300, base_steps=1500, perturb_steps=(40, 160), batch=8, sample_steps=25,
                         prompts=PROMPTS, sample_seeds=(0, 1)),
    "full": StudyPreset("full", videos=1024, stills=256, images=256, autoencoder_steps=1500, text_steps=400,
                        image_model_steps=300, base_steps=3000, perturb_steps=(40, 160), batch=8, sample_steps=25,
                        prompts=PROMPTS, sample_seeds=(0, 1)),
}
# Both bases are trained like the demo's base (vc2 demo --from-scratch): the EMA of their weights, the loss
# weighted by noise level (capped SNR); the videos and stills are the demo's too.
BASE_TRAINING = {"ema_decay": STAGE1_EMA, "snr_weight_cap": STAGE1_SNR_CAP, "image_mode": "pack"}

QUALITY = (("sharpness", "sharpness", True), ("watermark", "watermark", False),
           ("saturation", "saturation", True), ("colour_match", "colour match", True))
MOTION = (("one_object", "one object", True), ("track_jitter", "track jitter", False),
          ("flicker", "background flicker", False), ("motion_magnitude", "motion magnitude", True),
          ("direction_agreement", "direction agreement", True), ("speed_ratio", "speed ratio", None))


def run_study(out: str | Path, preset: str = "quick", seeds: tuple[int, ...] = (0, 1, 2),
              show_progress: bool = True) -> Path:
    """Run (or resume) the coupling study into ``out``; returns the report's path."""
    if preset not in PRESETS:
        raise ValueError(f"unknown study preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"the study needs at least two distinct seeds for its intervals; got {list(seeds)}")
    chosen = PRESETS[preset]
    if any(length % chosen.perturb_steps[0] for length in chosen.perturb_steps):
        raise ValueError(f"fine-tuning lengths {chosen.perturb_steps} must be multiples of the first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = RunClock(out / "runtime.json")
    say = tqdm.write if show_progress else (lambda text: None)
    data = write_data(out / "data", 0, chosen.videos, chosen.stills, chosen.images, show_progress)
    autoencoder = pretrain_autoencoder(out / "stage0.safetensors", data, chosen.autoencoder_steps, chosen.text_steps, 0,
                                       show_progress)
    for seed in seeds:
        say(f"seed {seed}: bases")
        models = train_seed(out / f"seed{seed}", data, autoencoder, chosen, seed, show_progress)
        clock.save()
        model = None  # one model per seed: every scored model differs from it in the UNet alone
        for name, length, weights, base in models:
            scores = score_path(out / f"seed{seed}", name, length)
            if not scores.is_file():  # finished models are skipped
                model = model or load_checkpoint(base)[0]
                score_model(scores, weights, base, model, chosen, f"{name}@{length}", show_progress)
        clock.save()
    results = aggregate(out, chosen, seeds)
    report = write_report(out, chosen, seeds, results, clock.save(), clock.invocations)
    say(f"report {report}")
    return report


# ---- training ----------------------------------------------------------------------------------------------


def train_seed(folder: Path, data: Path, autoencoder: Path, preset: StudyPreset, seed: int,
               show_progress: bool) -> list[tuple[str, int, Path, Path]]:
    """Train one seed's image model, bases and perturbations; returns (model name, length, weights, base model)
    to score: weights are a model file for the bases and direct fine-tunes, a LoRA file for the LoRA variants."""
    start = seeded_start(autoencoder, seed, folder / "start.safetensors")
    caches = folder.parent / "cache"  # the frozen VAE and text encoder are stage 0's in every seed
    image_model = train_stage(stage_config(
        folder / "image-model", caches / "stills", "spa-dir", start, seed, preset.image_model_steps, lr=1e-3,
        images=data / "stills", batch=preset.batch * 2), show_progress) / "model.safetensors"
    bases = {
        "F": train_stage(stage_config(folder / "F-base", caches / "videos+stills", "full", image_model, seed,
                                      preset.base_steps, lr=STAGE1_LR, videos=data / "videos",
                                      images=data / "stills", batch=preset.batch, **BASE_TRAINING),
                         show_progress) / "model-ema.safetensors",
        "P": train_stage(stage_config(folder / "P-base", caches / "videos", "partial", image_model, seed,
                                      preset.base_steps, lr=STAGE1_LR, videos=data / "videos", batch=preset.batch,
                                      **BASE_TRAINING), show_progress) / "model-ema.safetensors",
    }
    models = [("F-base", 0, bases["F"], bases["F"]), ("P-base", 0, bases["P"], bases["P"])]
    every, longest = preset.perturb_steps[0], preset.perturb_steps[-1]
    for variant in VARIANTS:
        run = folder / variant.name
        train_stage(stage_config(run, caches / "images", variant.stage, bases[variant.base], seed,
                                 longest, lr=variant.lr, images=data / "images", batch=preset.batch,
                                 every=every, keep_last=longest // every), show_progress)
        for length in preset.perturb_steps:
            checkpoint = run / run_dir.CHECKPOINTS / run_dir.checkpoint_name(length)
            weights = checkpoint / ("lora.safetensors" if "lora" in variant.stage else "model.safetensors")
            models.append((variant.name, length, weights, bases[variant.base]))
    return models


def base_of(name: str) -> str:
    return "F-base" if name.startswith("F") else "P-base"


def score_path(folder: Path, name: str, length: int) -> Path:
    return folder / "scores" / f"{name.replace('&', '+')}@{length}.json"


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
        videos = sample_videos(model, preset.prompts, preset.sample_seeds, preset.sample_steps, show_progress, label)
    finally:
        model.unet = plain
    rows = [{"prompt": prompt, "sample_seed": seed, **score(pixels, prompt)}
            for (prompt, seed), pixels in videos.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), videos=to_uint8(np.stack(list(videos.values()))))
    path.write_text(json.dumps(rows, indent=1))  # last: a scores file means the model is done


def _unet_state(path: Path) -> dict:
    return split_official_state_dict(read_checkpoint(path)[0])["unet"]


# ---- statistics --------------------------------------------------------------------------------------------

# two-sided 95% Student t quantiles by degrees of freedom (no scipy dependency)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student-t interval of the mean of ``values`` (NaNs dropped)."""
    finite = np.array([v for v in values if np.isfinite(v)], np.float64)
    if len(finite) == 0:
        return (float("nan"),) * 3
    mean = float(finite.mean())
    if len(finite) == 1:
        return mean, float("nan"), float("nan")
    dof = len(finite) - 1
    t = _T95[max(k for k in _T95 if k <= dof)]
    half = t * float(finite.std(ddof=1)) / np.sqrt(len(finite))
    return mean, mean - half, mean + half


def _video_mean(rows: list[dict], key: str) -> float:
    values = [row[key] for row in rows if np.isfinite(row[key])]
    return float(np.mean(values)) if values else float("nan")


# what "better motion" means in a pairwise preference (the paper's user study judged foreground/background
# flashes and motion flicker): each key maps a video's scores to a tuple, larger is better
PREFERENCES = {
    "object": ("a steadier object: exactly one object in more frames, then a smoother track",
               lambda row: (row["one_object"], -row["track_jitter"])),
    "background": ("a steadier background: less flicker", lambda row: (-row["flicker"],)),
    "prompted": ("moves more as prompted: higher direction agreement",
                 lambda row: (row["direction_agreement"] if np.isfinite(row["direction_agreement"]) else -np.inf,)),
}


def _preference(first: list[dict], second: list[dict], kind: str) -> float:
    """The share of matched videos (same prompt and sample seed) where ``first`` is preferred to ``second``
    by :data:`PREFERENCES` ``kind``; ties count a half."""
    key = PREFERENCES[kind][1]
    wins = [1.0 if key(a) > key(b) else 0.5 if key(a) == key(b) else 0.0 for a, b in zip(first, second)]
    return float(np.mean(wins))


@dataclass(frozen=True)
class Claim:
    text: str  # the paper's ordering
    source: str  # where the paper says it
    metric: str
    first: str  # "NAME@LENGTH" (LENGTH "last" = the longest fine-tune)
    second: str
    higher_is_better: bool = True
    degradation: bool = False  # compare the drops from each model's own base instead of the values


def _claims(text: str, source: str, first: str, second: str, metrics: tuple[tuple[str, bool], ...],
            degradation: bool = False) -> tuple[Claim, ...]:
    return tuple(Claim(text, source, metric, first, second, higher, degradation) for metric, higher in metrics)


_MOTION_KEPT = (("one_object", True), ("track_jitter", False), ("flicker", False))
CLAIMS = (
    *_claims("full training gives better pictures than partial training", "Table 3, F-base vs P-base",
             "F-base@0", "P-base@0", (("sharpness", True), ("watermark", False))),
    *_claims("F-Spa-LORA keeps motion better than P-Spa-LORA", "Table 4 (87%)", "F-Spa-LORA@last",
             "P-Spa-LORA@last", _MOTION_KEPT),
    *_claims("P-Spa-LORA's motion falls further from its base than F-Spa-LORA's (more still video)",
             "sec. 3.1, Fig. 2", "P-Spa-LORA@last", "F-Spa-LORA@last",
             (("motion_magnitude", True), ("one_object", True)), degradation=True),
    *_claims("P-Spa-LORA gains more picture quality than F-Spa-LORA (and loses the watermark)",
             "Table 3 (technical 72.7 vs 59.6), sec. 3.1", "P-Spa-LORA@last", "F-Spa-LORA@last",
             (("sharpness", True), ("watermark", False))),
    *_claims("F-Temp-LORA keeps motion better than P-Temp-LORA", "Table 4 (73%)", "F-Temp-LORA@last",
             "P-Temp-LORA@last", _MOTION_KEPT),
    Claim("F-Temp-LORA keeps the watermark that F-Spa-LORA removes", "sec. 3.1", "watermark",
          "F-Temp-LORA@last", "F-Spa-LORA@last"),
    *_claims("F-Spa-DIR keeps motion better than F-Spa&Temp-DIR", "Table 4 (67%)", "F-Spa-DIR@last",
             "F-Spa&Temp-DIR@last", _MOTION_KEPT),
    *_claims("direct fine-tuning (F-Spa-DIR) beats LoRA (F-Spa-LORA) on picture quality",
             "Table 3 (70.4 vs 59.6)", "F-Spa-DIR@last", "F-Spa-LORA@last",
             (("sharpness", True), ("watermark", False))),
    *_claims("the recipe: F-Spa-DIR improves the F-base's pictures", "sec. 3.2", "F-Spa-DIR@last", "F-base@0",
             (("sharpness", True), ("watermark", False), ("saturation", True))),
)
PAIRS = (("F-Spa-LORA", "P-Spa-LORA", "87%"), ("F-Temp-LORA", "P-Temp-LORA", "73%"),
         ("F-Spa-DIR", "F-Spa&Temp-DIR", "67%"))


def reference_scores(count: int = 40) -> dict[str, dict[str, float]]:
    """The metrics' scale: means over the world's own low-quality clips (what a perfect stage 1 would score), the
    same clips with their frames shuffled (no temporal coherence), and the high-quality images held still."""
    from .metrics import motion_scores, quality_scores
    from .world import DIRECTIONS, high_quality_image, low_quality_video

    clips = [c for c in (low_quality_video(0, 10_000 + i) for i in range(count)) if c.motion.kind in DIRECTIONS]
    order = np.random.default_rng(0)
    sets = {
        "low-quality clips": [c.frames for c in clips],
        "the same, frames shuffled": [c.frames[order.permutation(len(c.frames))] for c in clips],
        "high-quality images, held still": [np.repeat(high_quality_image(0, 10_000 + i).pixels[None], 8, axis=0)
                                            for i in range(len(clips))],
    }
    out = {}
    for name, videos in sets.items():
        rows = [{**motion_scores(v, c.motion.kind, c.motion.speed).as_dict(), **quality_scores(v).as_dict()}
                for v, c in zip(videos, clips)]
        out[name] = {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}
    return out


def aggregate(out: Path, preset: StudyPreset, seeds: tuple[int, ...]) -> dict:
    """Per-model means and intervals over seeds, pairwise motion preferences, and each claim's verdict."""
    last = preset.perturb_steps[-1]
    names = [(b, 0) for b in BASES] + [(v.name, length) for v in VARIANTS for length in preset.perturb_steps]
    rows = {seed: {f"{n}@{length}": json.loads(score_path(out / f"seed{seed}", n, length).read_text())
                   for n, length in names} for seed in seeds}
    keys = [key for key, _, _ in QUALITY + MOTION]
    per_seed = {seed: {model: {key: _video_mean(videos, key) for key in keys} for model, videos in models.items()}
                for seed, models in rows.items()}
    models = {}
    for model in per_seed[seeds[0]]:
        models[model] = {key: mean_interval([per_seed[seed][model][key] for seed in seeds]) for key in keys}
    preferences = []
    for first, second, paper in PAIRS:
        for length in preset.perturb_steps:
            shares = {kind: mean_interval([_preference(rows[s][f"{first}@{length}"], rows[s][f"{second}@{length}"],
                                                       kind) for s in seeds]) for kind in PREFERENCES}
            preferences.append({"first": first, "second": second, "length": length, "paper": paper,
                                "share": shares})
    claims = []
    for claim in CLAIMS:
        first, second = (name.replace("@last", f"@{last}") for name in (claim.first, claim.second))
        differences = []
        for seed in seeds:
            a, b = per_seed[seed][first][claim.metric], per_seed[seed][second][claim.metric]
            if claim.degradation:  # the drop from each model's own base
                a = per_seed[seed][f"{base_of(first)}@0"][claim.metric] - a
                b = per_seed[seed][f"{base_of(second)}@0"][claim.metric] - b
            differences.append(a - b if claim.higher_is_better else b - a)
        mean, low, high = mean_interval(differences)
        verdict = ("reproduced" if low > 0 else "contradicted" if high < 0 else "not resolved")
        claims.append({"claim": claim.text, "source": claim.source, "metric": claim.metric, "first": first,
                       "second": second, "difference": [mean, low, high], "verdict": verdict})
    motion_learned = {base: {key: models[f"{base}@0"][key] for key in ("direction_agreement", "one_object",
                                                                     "motion_magnitude")} for base in BASES}
    return {"models": models, "per_seed": per_seed, "preferences": preferences, "claims": claims,
            "motion_learned": motion_learned, "reference": reference_scores()}


# ---- report -------------------------------------------------------------------------------------------------


def _cell(interval: tuple[float, float, float]) -> str:
    mean, low, high = interval
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not np.isfinite(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def write_plots(out: Path, preset: StudyPreset, results: dict) -> list[Path]:
    """Each variant's metric against its fine-tuning length (0 = its base), one chart per metric."""
    charts = []
    for key, label in (("direction_agreement", "motion: direction agreement"),
                       ("watermark", "quality: watermark (lower is cleaner)"), ("sharpness", "quality: sharpness")):
        series = {}
        for variant in VARIANTS:
            lengths = (0, *preset.perturb_steps)
            names = [f"{variant.base}-base@0"] + [f"{variant.name}@{length}" for length in preset.perturb_steps]
            series[variant.name] = (list(lengths), [results["models"][name][key][0] for name in names])
        charts.append(line_chart(out / f"{key}_vs_length.png", f"{label} vs fine-tuning steps (means over seeds)",
                                 series, "fine-tuning steps on high-quality images", key))
    return charts


SAMPLED = ("F-base", "F-Spa-DIR", "F-Spa-LORA", "F-Temp-LORA", "P-base", "P-Spa-LORA", "P-Temp-LORA")


def write_samples(out: Path, preset: StudyPreset, seed: int) -> Path:
    """``samples.png``: for the first two prompts (first sample seed), a row of frames per model (the bases and
    their longest fine-tunes), 3x enlarged; the models' names are in the report."""
    from PIL import Image

    last = preset.perturb_steps[-1]
    rows = []
    for prompt_index in range(min(2, len(preset.prompts))):
        for name in SAMPLED:
            length = 0 if name.endswith("base") else last
            videos = np.load(score_path(out / f"seed{seed}", name, length).with_suffix(".npz"))["videos"]
            video = videos[prompt_index * len(preset.sample_seeds)]  # (t, h, w, 3) uint8
            rows.append(np.concatenate(list(video), axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    path = out / "samples.png"
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    return path


def write_report(out: Path, preset: StudyPreset, seeds: tuple[int, ...], results: dict, seconds: float,
                 invocations: int) -> Path:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    charts = write_plots(out, preset, results)
    samples = write_samples(out, preset, seeds[0])
    models = results["models"]
    order = [f"{b}@0" for b in BASES] + [f"{v.name}@{length}" for v in VARIANTS for length in preset.perturb_steps]
    lines = [
        "# Spatial-temporal coupling at toy scale", "",
        f"`vc2 study coupling --preset {preset.name} --seeds {' '.join(map(str, seeds))}`: {len(seeds)} seeds, "
        f"{seconds / 60:.0f} min wall in all ({invocations} invocation{'s' if invocations > 1 else ''}, resumed "
        f"runs summed) on {machine()}.", "",
        f"World: {preset.videos} low-quality clips, {preset.stills} low-quality stills, {preset.images} "
        f"high-quality images, 32x32, 8 frames. Image model: {preset.image_model_steps} steps; bases: "
        f"{preset.base_steps} steps at batch {preset.batch}; perturbations: "
        f"{' and '.join(map(str, preset.perturb_steps))} steps on the high-quality images. Each model samples "
        f"{len(preset.prompts)} prompts x {len(preset.sample_seeds)} seeds ({preset.sample_steps} DDIM steps, "
        f"cfg {SAMPLE_CFG:g}). Cells: mean over training seeds [95% Student-t interval].", "",
        "## What the bases learned", "",
        "| base | exactly one object (fraction of frames) | motion magnitude (frame widths per frame) | "
        "direction agreement (1 = as prompted, 0 = unrelated) |", "|---|---|---|---|",
        *[f"| {base} | {_cell(v['one_object'])} | {_cell(v['motion_magnitude'])} | {_cell(v['direction_agreement'])} |"
          for base, v in results["motion_learned"].items()], "",
        "For scale, the metrics on the world's own data (no model):", "",
        "| data | track jitter | background flicker | motion magnitude | direction agreement | sharpness | "
        "watermark | saturation |", "|---|---|---|---|---|---|---|---|",
        *[f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in ("track_jitter", "flicker", "motion_magnitude",
                                                              "direction_agreement", "sharpness", "watermark",
                                                              "saturation")) + " |"
          for name, r in results["reference"].items()], "",
        "## Visual quality (the paper's Table 3)", "",
        "| model | steps | " + " | ".join(f"{label} {'↑' if up else '↓'}" for _, label, up in QUALITY) + " |",
        "|---|---:|" + "---|" * len(QUALITY),
        *[f"| {m.split('@')[0]} | {m.split('@')[1]} | " + " | ".join(_cell(models[m][k]) for k, _, _ in QUALITY)
          + " |" for m in order], "",
        "## Motion", "",
        "| model | steps | " + " | ".join(label + ("" if up is None else " ↑" if up else " ↓")
                                       for _, label, up in MOTION) + " |",
        "|---|---:|" + "---|" * len(MOTION),
        *[f"| {m.split('@')[0]} | {m.split('@')[1]} | " + " | ".join(_cell(models[m][k]) for k, _, _ in MOTION)
          + " |" for m in order], "",
        "## Motion preference (the paper's Table 4)", "",
        "The share of matched videos (same prompt and sample seed) in which the first model is preferred "
        "(0.5 = no preference): "
        + "; ".join(f"*{kind}*: {text}" for kind, (text, _) in PREFERENCES.items()) + ".", "",
        "| comparison | steps | " + " | ".join(PREFERENCES) + " | paper (user study, motion) |",
        "|---|---:|" + "---|" * len(PREFERENCES) + "---|",
        *[f"| {p['first']} vs {p['second']} | {p['length']} | "
          + " | ".join(_cell(p["share"][kind]) for kind in PREFERENCES) + f" | {p['paper']} |"
          for p in results["preferences"]], "",
        "## The paper's orderings at this scale", "",
        "Difference on the paper's side (positive = as the paper says), over seeds.", "",
        "| ordering | paper | metric | difference [95% CI] | verdict |", "|---|---|---|---|---|",
        *[f"| {c['claim']} | {c['source']} | {c['metric']} | {_cell(tuple(c['difference']))} | **{c['verdict']}** |"
          for c in results["claims"]], "",
        "## Reading", "", _reading(results), "",
        *[f"![{chart.stem}]({chart.name})" for chart in charts], "",
        f"Samples of seed {seeds[0]} ({samples.name}): for the prompts \"{preset.prompts[0]}\" and "
        f"\"{preset.prompts[min(1, len(preset.prompts) - 1)]}\", a row of frames (time to the right) per model: "
        + ", ".join(f"{name}" + ("" if name.endswith("base") else f"@{preset.perturb_steps[-1]}") for name in SAMPLED)
        + ".", "", f"![samples]({samples.name})", "",
        "Files: `results.json` (every number above, and per-seed means), `seed*/scores/*.json` (every video's "
        "scores), `seed*/*/` (training runs).", "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def _reading(results: dict) -> str:
    counts = {verdict: [f"{c['claim']} ({c['metric']})" for c in results["claims"] if c["verdict"] == verdict]
              for verdict in ("reproduced", "not resolved", "contradicted")}
    prompted = {base: v["direction_agreement"][1] > 0 for base, v in results["motion_learned"].items()}
    parts = []
    real, shuffled = (results["reference"][k]["track_jitter"] for k in ("low-quality clips",
                                                                         "the same, frames shuffled"))
    jitter = {base: results["models"][f"{base}@0"]["track_jitter"][0] for base in BASES}
    incoherent = [base for base, value in jitter.items() if value > (real + shuffled) / 2]
    if incoherent:
        parts.append(f"{' and '.join(incoherent)} {'has' if len(incoherent) == 1 else 'have'} not learned temporally "
                     f"coherent video: track jitter {', '.join(f'{jitter[b]:.3f}' for b in incoherent)}, nearer the "
                     f"shuffled clips' {shuffled:.3f} than the clips' own {real:.3f}; the motion orderings below "
                     "compare degrees of incoherence, and train longer bases to test them.")
    if not all(prompted.values()):
        still = [base for base, ok in prompted.items() if not ok]
        parts.append(f"{' and '.join(still)} {'does' if len(still) == 1 else 'do'} not move in the prompted "
                     "direction beyond chance (the interval includes 0), so motion is judged by its steadiness "
                     "(one object, track jitter, background flicker), as the paper's user study judged it, "
                     "not by prompt adherence.")
    parts.append(f"{len(counts['reproduced'])} of {len(results['claims'])} orderings reproduce"
                 + (f" ({'; '.join(counts['reproduced'])})" if counts["reproduced"] else "") + ".")
    if counts["contradicted"]:
        parts.append(f"Contradicted: {'; '.join(counts['contradicted'])}.")
    if counts["not resolved"]:
        parts.append(f"Not resolved by {len(results['per_seed'])} seeds: {'; '.join(counts['not resolved'])}.")
    parts.append("A tiny model on a toy world: read these as what this scale can and cannot show, not as a test "
                 "of the paper's numbers.")
    return " ".join(parts)


__all__ = ["PRESETS", "VARIANTS", "StudyPreset", "mean_interval", "run_study"]
