"""The coupling study's report: ``results.json``, the charts against the fine-tuning length, ``samples.png``
and ``report.md`` (tables like the paper's Tables 3 and 4, and the verdicts on its orderings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import write_text_atomically
from .plots import line_chart
from .presets import BASES, VARIANTS, StudyPreset, study_models
from .runs import FRAMES, SAMPLE_CFG, SIZE, machine
from .scoring import HIGHER_IS_BETTER
from .study_analysis import MOTION, PREFERENCES, QUALITY, score_path


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
            video = videos[prompt_index * len(preset.seeds)]  # (t, h, w, 3) uint8
            rows.append(np.concatenate(list(video), axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    path = out / "samples.png"
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    return path


def write_report(out: Path, preset: StudyPreset, seeds: tuple[int, ...], results: dict, seconds: float,
                 invocations: int) -> Path:
    write_text_atomically(out / "results.json", json.dumps(results, indent=1))
    charts = write_plots(out, preset, results)
    samples = write_samples(out, preset, seeds[0])
    order = [f"{name}@{length}" for name, length in study_models(preset)]
    lines = [
        *_setting_lines(preset, seeds, seconds, invocations), "",
        *_scale_lines(results), "",
        "## Visual quality (the paper's Table 3)", "",
        *_table_lines(results["models"], order, QUALITY, lambda up: " ↑" if up else " ↓"), "",
        "## Motion", "",
        *_table_lines(results["models"], order, MOTION, lambda up: "" if up is None else " ↑" if up else " ↓"), "",
        *_preference_lines(results["preferences"]), "",
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
    return write_text_atomically(out / "report.md", "\n".join(lines))


def _setting_lines(preset: StudyPreset, seeds: tuple[int, ...], seconds: float, invocations: int) -> list[str]:
    return [
        "# Spatial-temporal coupling at toy scale", "",
        f"`vc2 study coupling --preset {preset.name} --seeds {' '.join(map(str, seeds))}`: {len(seeds)} seeds, "
        f"{seconds / 60:.0f} min wall in all ({invocations} invocation{'s' if invocations > 1 else ''}, resumed "
        f"runs summed) on {machine()}.", "",
        f"World: {preset.videos} low-quality clips, {preset.stills} low-quality stills, {preset.images} "
        f"high-quality images, {SIZE}x{SIZE}, {FRAMES} frames. Image model: {preset.image_model_steps} steps; bases: "
        f"{preset.base_steps} steps at batch {preset.batch}; perturbations: "
        f"{' and '.join(map(str, preset.perturb_steps))} steps on the high-quality images. Each model samples "
        f"{len(preset.prompts)} prompts x {len(preset.seeds)} seeds ({preset.sample_steps} DDIM steps, "
        f"cfg {SAMPLE_CFG:g}). Cells: mean over training seeds [95% Student-t interval].",
    ]


REFERENCE_KEYS = ("track_jitter", "flicker", "motion_magnitude", "direction_agreement", "sharpness", "watermark",
                  "saturation")


def _scale_lines(results: dict) -> list[str]:
    """What the bases learned, and the metrics on the world's own data for scale."""
    return [
        "## What the bases learned", "",
        "| base | exactly one object (fraction of frames) | motion magnitude (frame widths per frame) | "
        "direction agreement (1 = as prompted, 0 = unrelated) |", "|---|---|---|---|",
        *[f"| {base} | {_cell(v['one_object'])} | {_cell(v['motion_magnitude'])} | {_cell(v['direction_agreement'])} |"
          for base, v in results["motion_learned"].items()], "",
        "For scale, the metrics on the world's own data (no model):", "",
        "| data | track jitter | background flicker | motion magnitude | direction agreement | sharpness | "
        "watermark | saturation |", "|---|---|---|---|---|---|---|---|",
        *[f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in REFERENCE_KEYS) + " |"
          for name, r in results["reference"].items()],
    ]


def _table_lines(models: dict, order: list[str], metrics: tuple[tuple[str, str], ...], arrow) -> list[str]:
    """A row per model (``NAME@LENGTH``), a column per metric, its header marked by ``arrow(higher_is_better)``."""
    return [
        "| model | steps | " + " | ".join(label + arrow(HIGHER_IS_BETTER[key]) for key, label in metrics) + " |",
        "|---|---:|" + "---|" * len(metrics),
        *[f"| {m.split('@')[0]} | {m.split('@')[1]} | " + " | ".join(_cell(models[m][k]) for k, _ in metrics)
          + " |" for m in order],
    ]


def _preference_lines(preferences: list[dict]) -> list[str]:
    return [
        "## Motion preference (the paper's Table 4)", "",
        "The share of matched videos (same prompt and sample seed) in which the first model is preferred "
        "(0.5 = no preference): "
        + "; ".join(f"*{kind}*: {text}" for kind, (text, _) in PREFERENCES.items()) + ".", "",
        "| comparison | steps | " + " | ".join(PREFERENCES) + " | paper (user study, motion) |",
        "|---|---:|" + "---|" * len(PREFERENCES) + "---|",
        *[f"| {p['first']} vs {p['second']} | {p['length']} | "
          + " | ".join(_cell(p["share"][kind]) for kind in PREFERENCES) + f" | {p['paper']} |"
          for p in preferences],
    ]


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
