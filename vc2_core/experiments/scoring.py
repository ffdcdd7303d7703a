"""A sampled video of the world against its prompt: every metric of :mod:`vc2_core.experiments.metrics`, which
way each is better, and means over videos (the demo's and the study's tables read the same scores)."""

from __future__ import annotations

import numpy as np

from .metrics import alignment_scores, motion_scores, quality_scores
from .world import VIDEO_COLOURS

# True: higher is better; False: lower is better; None: a target value (speed_ratio: 1 = as prompted)
HIGHER_IS_BETTER = {
    "one_object": True, "direction_agreement": True, "speed_ratio": None, "track_jitter": False, "flicker": False,
    "motion_magnitude": True, "sharpness": True, "watermark": False, "saturation": True, "colour_match": True,
    "colour_correct": True, "shape_correct": True,
}


def parse_prompt(prompt: str) -> dict[str, str]:
    """colour, shape, direction, speed of a world prompt ("a purple circle moving right slowly")."""
    words = prompt.split()
    return {"colour": words[1], "shape": words[2], "direction": words[4], "speed": words[5]}


def names_unseen_colour(prompt: str) -> bool:
    """The prompt names a colour that only the high-quality images show (a concept-composition prompt)."""
    return parse_prompt(prompt)["colour"] not in VIDEO_COLOURS


def score(pixels: np.ndarray, prompt: str) -> dict[str, float]:
    """Every metric of one video (t, h, w, 3) in [0, 1] against its prompt."""
    p = parse_prompt(prompt)
    return {**motion_scores(pixels, p["direction"], p["speed"]).as_dict(), **quality_scores(pixels).as_dict(),
            **alignment_scores(pixels, p["colour"], p["shape"]).as_dict()}


def finite_mean(values: list[float]) -> float:
    """The mean of the finite values (a metric is NaN where it does not apply), NaN if there are none."""
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")
