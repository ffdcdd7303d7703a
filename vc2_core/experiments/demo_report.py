"""The demo's report: issue 14's acceptance targets measured on a run, ``metrics.json``, the loss and metric
charts and ``report.md``, which states every number next to its target."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text_atomically
from .metrics import COLOUR_CHANCE, SHAPE_CHANCE
from .plots import bar_chart, line_chart
from .presets import DemoPreset
from .runs import FRAMES, SAMPLE_CFG, SIZE, smoothed_losses
from .scoring import finite_mean, names_unseen_colour

STAGES = ("stage1", "stage2")
METRICS = (("one_object", "objects: frames with exactly one object"),
           ("direction_agreement", "motion: direction agreement (1 = as prompted)"),
           ("speed_ratio", "motion: speed / prompted speed (1 = as prompted)"),
           ("track_jitter", "motion: track jitter (lower = smoother)"),
           ("sharpness", "quality: sharpness"),
           ("watermark", "quality: watermark (0 = none)"),
           ("saturation", "quality: colour saturation"),
           ("colour_correct", "text: colour as prompted (fraction of frames)"),
           ("shape_correct", "text: shape as prompted (fraction of frames)"))


def mean_of(rows: list[dict], stage: str, key: str, composition: bool | None = None) -> float:
    """The mean of ``key`` over a stage's videos (only composition prompts, only the others, or all)."""
    return finite_mean([row[key] for row in rows if row["stage"] == stage
                        and (composition is None or row["composition"] == composition)])


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


def write_report(out: Path, preset: DemoPreset, run: dict, results: dict) -> Path:
    """``metrics.json`` (every video's scores, the means, the targets), the charts, and ``report.md``."""
    rows = results["rows"]
    default_run = preset.name == "quick" and not run["base_trained_now"]
    checks = targets(rows, run, results["temporal_identical"], default_run)
    means = {group: {stage: {key: mean_of(rows, stage, key, composition) for key, _ in METRICS} for stage in STAGES}
             for group, composition in (("videos' colours", False), ("composition", True))}
    write_text_atomically(out / "metrics.json", json.dumps({
        "run": run, "means": means,
        "targets": [{"name": t.name, "value": t.value, "target": t.goal, "met": t.met} for t in checks],
        "videos": rows}, indent=1))
    write_charts(out, run, means["videos' colours"])
    return write_text_atomically(out / "report.md", "\n".join(_report_lines(preset, run, checks, means)))


def write_charts(out: Path, run: dict, own: dict) -> None:
    """``loss_curves.png`` (stage 1's, trained now or recorded in the shipped base, and stage 2's) and
    ``metrics.png`` (both stages on the prompts in the videos' colours, ``own``)."""
    provenance = run["base_provenance"] or {}
    curves = {"stage 2: spa-dir, HQ images (now)": smoothed_losses(out / "stage2")}
    if run["base_trained_now"]:
        curves = {"stage 1: full, videos + stills (now)": smoothed_losses(out / "stage1"), **curves}
    elif provenance.get("stage1_loss"):
        steps, losses = zip(*provenance["stage1_loss"])
        curves = {"stage 1: full, videos + stills (shipped base)": (list(steps), list(losses)), **curves}
    line_chart(out / "loss_curves.png", "training loss (running mean)", curves, "step", "loss")
    keys = [key for key, _ in METRICS]
    bar_chart(out / "metrics.png", "stage 1 vs stage 2 (prompts in the videos' colours)", keys,
              {stage: [own[stage][key] for key in keys] for stage in STAGES})


def _report_lines(preset: DemoPreset, run: dict, checks: list[Target], means: dict) -> list[str]:
    own, composition = means["videos' colours"], means["composition"]
    missed = [t for t in checks if not t.met]
    return [
        "# vc2 demo report", "",
        f"Preset `{preset.name}`, seed {run['seed']}, {run['seconds']:.0f} s wall, peak memory "
        f"{run['peak_rss_gb']:.2f} GB. The world's VideoCrafter2-architecture model, {SIZE}x{SIZE} pixels, "
        f"{FRAMES} frames; samples: DDIM {preset.sample_steps} steps, eta 0, cfg {SAMPLE_CFG:g}, "
        f"{len(preset.prompts)} prompts x seeds {', '.join(map(str, preset.seeds))} (no training used them).", "",
        "## Stages", "",
        _base_line(run, run["base_provenance"] or {}),
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
        "images show (" + ", ".join(p for p in preset.prompts if names_unseen_colour(p)) + ").", "",
        "## All metrics", "",
        "| metric | stage 1 | stage 2 | stage 1, composition prompts | stage 2, composition prompts |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {own['stage1'][key]:.3f} | {own['stage2'][key]:.3f} | "
          f"{composition['stage1'][key]:.3f} | {composition['stage2'][key]:.3f} |" for key, label in METRICS],
        "", "![loss curves](loss_curves.png)", "", "![metrics](metrics.png)", "",
        "Files: `stage1_vs_stage2.mp4` / `.gif`, `metrics.json` (every video's scores, the means, the targets), "
        "`stage2/` (the training run: `metrics.jsonl`, checkpoints)"
        + (", `stage1/` and `base.safetensors` (the base trained now)." if run["base_trained_now"] else "."), "",
    ]


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
