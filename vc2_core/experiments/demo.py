"""``vc2 demo``: VideoCrafter2's whole recipe on the embedded synthetic world, end to end on a CPU.

1. data: low-quality videos of captioned motions (plus low-quality stills for joint training) and
   high-quality images (:mod:`vc2_core.training.synthetic`), written as files the trainer reads;
2. the **base**: stage 0 (an autoencoder standing in for SD's VAE) and stage 1, full training of the
   world's VideoCrafter2-architecture model on the videos jointly with the stills (``vc2 train``
   stage ``full``). By default the base is the one that ships with the package
   (:data:`SHIPPED_BASE`, made by ``vc2 demo --from-scratch``, which records how in the file);
   ``--from-scratch`` trains it now, ``--base FILE`` loads another;
3. stage 2, trained now: spatial-only fine-tuning on the high-quality images (stage ``spa-dir``, F-Spa-DIR);
4. prompts that pair a learned motion with a colour only the images show (the paper's concept
   composition) and prompts of the videos' own colours, sampled from both stages with seeds that
   no training used, scored by :mod:`vc2_core.analysis.metrics`;
5. outputs: side-by-side videos (mp4, gif), loss and metric charts (PNG), ``report.md`` and
   ``metrics.json``, which state every acceptance number next to its target.

Every step goes through the real code paths (tokenizer and text encoder, VAE, UNet, the schedule with
scale_arr, the DDIM sampler, the training loop). A run is resumable: finished steps are skipped and
an interrupted training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, read_provenance, save_checkpoint
from ..parameter_groups import Group, classify_unet_parameters
from ..video_io import write_video
from .metrics import COLOUR_CHANCE, SHAPE_CHANCE
from .plots import bar_chart, line_chart
from .runs import (
    FPS,
    FRAMES,
    SAMPLE_CFG,
    SIZE,
    STAGE1_EMA,
    STAGE1_LR,
    STAGE1_SNR_CAP,
    STAGE2_LR,
    RunClock,
    machine,
    pretrain_autoencoder,
    sample_videos,
    score,
    stage_config,
    to_uint8,
    train_stage,
    write_data,
)
from .world import VIDEO_COLOURS

SHIPPED_BASE = Path(__file__).parents[1] / "assets" / "demo_base.safetensors"


@dataclass(frozen=True)
class DemoPreset:
    name: str
    images: int  # high-quality images for stage 2
    stage2_steps: int
    batch: int
    sample_steps: int
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]  # sampling seeds; no training draws from them
    # the base, when it is trained now (--from-scratch)
    videos: int  # low-quality clips
    stills: int  # low-quality stills for stage 1's joint image training
    autoencoder_steps: int
    text_steps: int  # stage 0's text-encoder training
    stage1_steps: int


# The base's own world first: the videos' colours, each direction at both speeds, each shape. Then four in
# colours only the high-quality images show (concept composition: a learned motion, an unseen appearance).
PROMPTS = ("a red circle moving right slowly", "a green square moving left quickly",
           "a blue triangle moving down slowly", "a yellow circle moving up quickly",
           "a red triangle moving left slowly", "a green circle moving right quickly",
           "a blue square moving up slowly", "a yellow triangle moving down quickly",
           "a purple square moving right quickly", "an orange circle moving left slowly",
           "a cyan triangle moving up slowly", "a purple circle moving down quickly")
SAMPLE_SEEDS = (1001, 2002)
PRESETS = {
    "tiny": DemoPreset("tiny", images=8, stage2_steps=3, batch=2, sample_steps=3, prompts=PROMPTS[::4],
                       seeds=SAMPLE_SEEDS[:1], videos=8, stills=4, autoencoder_steps=5, text_steps=5,
                       stage1_steps=4),
    "quick": DemoPreset("quick", images=256, stage2_steps=200, batch=8, sample_steps=25, prompts=PROMPTS,
                        seeds=SAMPLE_SEEDS, videos=1024, stills=256, autoencoder_steps=1500, text_steps=400,
                        stage1_steps=3000),
}


class DemoError(ValueError):
    """Bad input to the demo; nothing was written."""


def run_demo(out: str | Path, preset: str = "quick", seed: int = 0, *, base: str | Path | None = None,
             from_scratch: bool = False, show_progress: bool = True) -> Path:
    """Run (or resume) the demo into ``out``; returns the report's path.

    The base (stages 0 and 1) is trained now with ``from_scratch``, else read from ``base`` (default: the
    shipped :data:`SHIPPED_BASE`). Stage 2, sampling and scoring always run now."""
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
    if preset not in PRESETS:
        raise DemoError(f"unknown demo preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out}: is a file; give a folder (it is created if missing)")
    if from_scratch and base is not None:
        raise DemoError("give --from-scratch (train the base now) or --base FILE (load one), not both")
    base_path = Path(base) if base is not None else SHIPPED_BASE
    if not from_scratch and not base_path.is_file():
        where = "the shipped base is missing from the installation" if base is None else "no such file"
        raise DemoError(f"base {base_path}: {where}; run `vc2 demo --from-scratch` to train one")
    return PRESETS[preset], out, base_path


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
        "stage1_loss": _loss_curve(out / "stage1", points=200),
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


def train_seconds(folder: Path) -> float:
    """The training time of a run, summed over every invocation that resumed it: the step times its
    metrics.jsonl records (a step logged twice, after a resume from an earlier checkpoint, counts once)."""
    per_step: dict[int, float] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        per_step[record["step"]] = record["step_seconds"]
    return float(sum(per_step.values()))


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
            rows.append({"stage": stage, "prompt": prompt, "seed": seed, "composition": _composition(prompt),
                         **score(pixels, prompt)})
    side_by_side = write_side_by_side(out, videos, preset)
    return {"rows": rows, "videos": side_by_side,
            "temporal_identical": temporal_identical(unets["stage1"], unets["stage2"])}


def _composition(prompt: str) -> bool:
    """The prompt names a colour that only the high-quality images show."""
    return prompt.split()[1] not in VIDEO_COLOURS


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


# ---- targets -------------------------------------------------------------------------------------------------


def mean_of(rows: list[dict], stage: str, key: str, composition: bool | None = None) -> float:
    """The mean of ``key`` over a stage's videos (only composition prompts, only the others, or all)."""
    values = [row[key] for row in rows if row["stage"] == stage and not np.isnan(row[key])
              and (composition is None or row["composition"] == composition)]
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    goal: str  # the target, in words
    met: bool


CLEARLY_ABOVE_CHANCE = 2.0  # "clearly above chance": at least this many times the chance level


def targets(rows: list[dict], run: dict, temporal_same: bool, default_run: bool) -> list[Target]:
    """Issue 14's acceptance points, each measured on this run."""
    def m(stage: str, key: str, composition: bool | None = False) -> float:  # default: the videos' colours
        return mean_of(rows, stage, key, composition)

    base_dir, base_jit = m("stage1", "direction_agreement"), m("stage1", "track_jitter")
    colour_goal, shape_goal = CLEARLY_ABOVE_CHANCE * COLOUR_CHANCE, min(1.0, CLEARLY_ABOVE_CHANCE * SHAPE_CHANCE)
    out = [
        Target("stage 1: direction agreement", base_dir, ">= 0.8", base_dir >= 0.8),
        Target("stage 1: speed / prompted speed", m("stage1", "speed_ratio"), "in [0.7, 1.4]",
               0.7 <= m("stage1", "speed_ratio") <= 1.4),
        Target("stage 1: track jitter", base_jit, "<= 0.05", base_jit <= 0.05),
        Target("stage 1: frames with exactly one object", m("stage1", "one_object"), ">= 0.9",
               m("stage1", "one_object") >= 0.9),
        Target("stage 1: colour as prompted", m("stage1", "colour_correct"),
               f">= {colour_goal:.2f} ({CLEARLY_ABOVE_CHANCE:g}x chance {COLOUR_CHANCE:.2f})",
               m("stage1", "colour_correct") >= colour_goal),
        Target("stage 1: shape as prompted", m("stage1", "shape_correct"),
               f">= {shape_goal:.2f} ({CLEARLY_ABOVE_CHANCE:g}x chance {SHAPE_CHANCE:.2f})",
               m("stage1", "shape_correct") >= shape_goal),
        Target("stage 2: direction agreement", m("stage2", "direction_agreement"),
               f">= stage 1 - 0.1 = {base_dir - 0.1:.3f}", m("stage2", "direction_agreement") >= base_dir - 0.1),
        Target("stage 2: track jitter", m("stage2", "track_jitter"), f"<= 1.5 x stage 1 = {1.5 * base_jit:.3f}",
               m("stage2", "track_jitter") <= 1.5 * base_jit),
        Target("stage 2: watermark", m("stage2", "watermark"),
               f"<= 0.5 x stage 1 = {0.5 * m('stage1', 'watermark'):.3f}",
               m("stage2", "watermark") <= 0.5 * m("stage1", "watermark")),
        Target("stage 2: sharpness", m("stage2", "sharpness"),
               f">= 1.2 x stage 1 = {1.2 * m('stage1', 'sharpness'):.3f}",
               m("stage2", "sharpness") >= 1.2 * m("stage1", "sharpness")),
        Target("stage 2: saturation", m("stage2", "saturation"), f"> stage 1 = {m('stage1', 'saturation'):.3f}",
               m("stage2", "saturation") > m("stage1", "saturation")),
        Target("stage 2: unseen colours as prompted (composition prompts)", m("stage2", "colour_correct", True),
               f"> stage 1 = {m('stage1', 'colour_correct', True):.3f}",
               m("stage2", "colour_correct", True) > m("stage1", "colour_correct", True)),
        Target("stage 2: temporal tensors bit-identical to stage 1", float(temporal_same), "= 1 (yes)", temporal_same),
        Target("run: peak resident memory, GB", run["peak_rss_gb"], "<= 2", run["peak_rss_gb"] <= 2.0),
    ]
    if default_run:  # the time target is the default command's (base loaded, stage 2 trained now)
        out.append(Target("run: wall time, s", run["seconds"], "<= 300", run["seconds"] <= 300))
    return out


# ---- report -------------------------------------------------------------------------------------------------


METRICS = (("one_object", "objects: frames with exactly one object", True),
           ("direction_agreement", "motion: direction agreement (1 = as prompted)", True),
           ("speed_ratio", "motion: speed / prompted speed (1 = as prompted)", None),
           ("track_jitter", "motion: track jitter (lower = smoother)", False),
           ("sharpness", "quality: sharpness", True),
           ("watermark", "quality: watermark (0 = none)", False),
           ("saturation", "quality: colour saturation", True),
           ("colour_correct", "text: colour as prompted (fraction of frames)", True),
           ("shape_correct", "text: shape as prompted (fraction of frames)", True))


def _losses(folder: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps.append(record["step"])
        losses.append(record["loss"])
    window = max(1, len(losses) // 20)  # a running mean: single-step losses are very noisy
    smooth = [float(np.mean(losses[max(0, i - window + 1):i + 1])) for i in range(len(losses))]
    return steps, smooth


def _loss_curve(folder: Path, points: int) -> list[list[float]]:
    """The running-mean loss of a run at about ``points`` evenly spaced steps: [[step, loss], ...]."""
    steps, smooth = _losses(folder)
    keep = sorted(set(np.linspace(0, len(steps) - 1, min(points, len(steps))).round().astype(int).tolist()))
    return [[steps[i], round(smooth[i], 6)] for i in keep]


def write_report(out: Path, preset: DemoPreset, run: dict, results: dict) -> Path:
    rows = results["rows"]
    default_run = preset.name == "quick" and not run["base_trained_now"]
    checks = targets(rows, run, results["temporal_identical"], default_run)
    means = {group: {stage: {key: mean_of(rows, stage, key, composition) for key, _, _ in METRICS}
                     for stage in ("stage1", "stage2")}
             for group, composition in (("videos' colours", False), ("composition", True))}
    (out / "metrics.json").write_text(json.dumps({
        "run": run, "means": means,
        "targets": [{"name": t.name, "value": t.value, "target": t.goal, "met": t.met} for t in checks],
        "videos": rows}, indent=1))
    provenance = run["base_provenance"] or {}
    curves = {"stage 2: spa-dir, HQ images (now)": _losses(out / "stage2")}
    if run["base_trained_now"]:
        curves = {"stage 1: full, videos + stills (now)": _losses(out / "stage1"), **curves}
    elif provenance.get("stage1_loss"):
        steps, losses = zip(*provenance["stage1_loss"])
        curves = {"stage 1: full, videos + stills (shipped base)": (list(steps), list(losses)), **curves}
    line_chart(out / "loss_curves.png", "training loss (running mean)", curves, "step", "loss")
    keys = [key for key, _, _ in METRICS]
    own = means["videos' colours"]
    bar_chart(out / "metrics.png", "stage 1 vs stage 2 (prompts in the videos' colours)", keys,
              {stage: [own[stage][key] for key in keys] for stage in ("stage1", "stage2")})
    missed = [t for t in checks if not t.met]
    lines = [
        "# vc2 demo report", "",
        f"Preset `{preset.name}`, seed {run['seed']}, {run['seconds']:.0f} s wall, peak memory "
        f"{run['peak_rss_gb']:.2f} GB. The world's VideoCrafter2-architecture model, {SIZE}x{SIZE} pixels, "
        f"{FRAMES} frames; samples: DDIM {preset.sample_steps} steps, eta 0, cfg {SAMPLE_CFG:g}, "
        f"{len(preset.prompts)} prompts x seeds {', '.join(map(str, preset.seeds))} (no training used them).", "",
        "## Stages", "",
        _base_line(run, provenance),
        f"- **Stage 2** (F-Spa-DIR: spatial modules only, on {preset.images} high-quality images, "
        f"{preset.stage2_steps} steps): **trained now**.", "",
        "![side by side](stage1_vs_stage2.gif)", "",
        "Left stage 1, right stage 2; a row per prompt (first seed): " + "; ".join(preset.prompts) + ".", "",
        "## Targets", "",
        ("**Every target is met.**" if not missed else
         f"**{len(missed)} of {len(checks)} targets are missed:** " + "; ".join(t.name for t in missed) + "."), "",
        "| target | measured | goal | met |", "|---|---:|---|---|",
        *[f"| {t.name} | {t.value:.3f} | {t.goal} | {'yes' if t.met else '**NO**'} |" for t in checks],
        "", "Both stages are scored on the prompts in the videos' colours (the world the base was trained on), "
        "except for the composition target, scored on the prompts that name colours only the high-quality "
        "images show (" + ", ".join(p for p in preset.prompts if _composition(p)) + ").", "",
        "## All metrics", "",
        "| metric | stage 1 | stage 2 | stage 1, composition prompts | stage 2, composition prompts |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {own['stage1'][key]:.3f} | {own['stage2'][key]:.3f} | "
          f"{means['composition']['stage1'][key]:.3f} | {means['composition']['stage2'][key]:.3f} |"
          for key, label, _ in METRICS],
        "", "![loss curves](loss_curves.png)", "", "![metrics](metrics.png)", "",
        "Files: `stage1_vs_stage2.mp4` / `.gif`, `metrics.json` (every video's scores, the means, the targets), "
        "`stage2/` (the training run: `metrics.jsonl`, checkpoints)"
        + (", `stage1/` and `base.safetensors` (the base trained now)." if run["base_trained_now"] else "."), "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def _base_line(run: dict, provenance: dict) -> str:
    if run["base_trained_now"]:
        return (f"- **Base** (stage 0 autoencoder, then stage 1 full training on low-quality videos with stills, "
                f"{provenance.get('stage1_steps')} steps): **trained now** -> `{run['base']}`.")
    if not provenance:
        return f"- **Base** (stages 0 and 1): **loaded** from `{run['base']}` (no provenance recorded in the file)."
    return (f"- **Base** (stage 0 autoencoder, stage 1 full training on {provenance['videos']} low-quality videos "
            f"with {provenance['stills']} stills, {provenance['stage1_steps']} steps): **loaded** from "
            f"`{run['base']}`, made by `{provenance['made_by']}` at commit {provenance['commit']} on "
            f"{provenance['date']} ({provenance['machine']}; {provenance['wall_seconds'] / 60:.0f} min).")


__all__ = ["PRESETS", "SHIPPED_BASE", "DemoError", "DemoPreset", "run_demo"]
