"""The coupling study's statistics: per-model means over seeds with 95% Student-t intervals, pairwise motion
preferences (the paper's Table 4), and a verdict on each of the paper's orderings (:data:`CLAIMS`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import motion_scores, quality_scores
from .presets import BASES, StudyPreset, study_models
from .scoring import finite_mean
from .world import DIRECTIONS, high_quality_image, low_quality_video

QUALITY = (("sharpness", "sharpness"), ("watermark", "watermark"), ("saturation", "saturation"),
           ("colour_match", "colour match"))
MOTION = (("one_object", "one object"), ("track_jitter", "track jitter"), ("flicker", "background flicker"),
          ("motion_magnitude", "motion magnitude"), ("direction_agreement", "direction agreement"),
          ("speed_ratio", "speed ratio"))


def score_path(folder: Path, name: str, length: int) -> Path:
    """Where a seed's scores of model ``name`` at fine-tuning ``length`` are (its videos beside them, ``.npz``)."""
    return folder / "scores" / f"{name.replace('&', '+')}@{length}.json"


def base_of(name: str) -> str:
    return "F-base" if name.startswith("F") else "P-base"


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
    rows = {seed: {f"{n}@{length}": json.loads(score_path(out / f"seed{seed}", n, length).read_text())
                   for n, length in study_models(preset)} for seed in seeds}
    keys = [key for key, _ in QUALITY + MOTION]
    per_seed = {seed: {model: {key: finite_mean([row[key] for row in videos]) for key in keys}
                       for model, videos in models.items()} for seed, models in rows.items()}
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
    claims = [_verdict(claim, per_seed, preset.perturb_steps[-1]) for claim in CLAIMS]
    motion_learned = {base: {key: models[f"{base}@0"][key] for key in ("direction_agreement", "one_object",
                                                                     "motion_magnitude")} for base in BASES}
    return {"models": models, "per_seed": per_seed, "preferences": preferences, "claims": claims,
            "motion_learned": motion_learned, "reference": reference_scores()}


def _verdict(claim: Claim, per_seed: dict, last: int) -> dict:
    """The claim's seed-level differences (positive on the paper's side), their interval and the verdict."""
    first, second = (name.replace("@last", f"@{last}") for name in (claim.first, claim.second))
    differences = []
    for scores in per_seed.values():
        a, b = scores[first][claim.metric], scores[second][claim.metric]
        if claim.degradation:  # the drop from each model's own base
            a = scores[f"{base_of(first)}@0"][claim.metric] - a
            b = scores[f"{base_of(second)}@0"][claim.metric] - b
        differences.append(a - b if claim.higher_is_better else b - a)
    mean, low, high = mean_interval(differences)
    verdict = ("reproduced" if low > 0 else "contradicted" if high < 0 else "not resolved")
    return {"claim": claim.text, "source": claim.source, "metric": claim.metric, "first": first,
            "second": second, "difference": [mean, low, high], "verdict": verdict}
