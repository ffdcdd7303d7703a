"""Metrics on generated videos of the synthetic world (:mod:`vc2_core.experiments.world`).

Frames are (t, h, w, 3) float in [0, 1]. Each metric reads the video only (no model), and is
validated in tests/test_analysis.py: the generator's own clips score high, static, shuffled and
degraded clips score low.

- **objects**: pixels far from the frame's background colour are split into 8-connected components
  (kornia's union-find labelling); components of at least :data:`MIN_OBJECT_AREA` of the frame are
  objects, the largest is *the* object. ``one_object`` is the fraction of frames with exactly one
  (clutter and empty frames score low), ``object_count`` the mean count, ``presence`` the fraction
  of frames with at least one (objects that flash in and out score low).
- **motion**: the object's centre is tracked; ``direction_agreement`` is the cosine between the
  mean velocity and the prompt's direction, ``speed_ratio`` the measured speed over the prompt's;
  ``motion_magnitude`` the mean centre displacement per frame; ``track_jitter`` the mean second
  difference of the track (smooth motion ~0, shuffled frames large); ``flicker`` the mean
  frame-to-frame change of the background.
- **visual quality**: ``sharpness`` (edge steepness over contrast, per channel, watermark left out),
  ``watermark`` (how strongly the corner looks like the training watermark, 0 = absent),
  ``saturation`` (mean HSV saturation of the object).
- **text alignment**: ``colour_match`` (1 - the normalised RGB distance between the object's mean
  colour and the prompt's), ``shape_match`` (IoU of the object with the prompt's shape drawn at its
  centre and area), ``texture_energy`` (high-frequency energy inside the object; plain objects have
  little); and as classifications, whose chance level is known: ``colour_correct`` (the palette colour
  of nearest hue is the prompt's; chance 1/7) and ``shape_correct`` (the prompt's shape has the best
  IoU of the three; chance 1/3), the fraction of frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from kornia.color import rgb_to_hsv
from kornia.contrib import connected_components_union_find
from kornia.filters import box_blur

from .world import COLOURS, DIRECTIONS, SHAPES, SPEEDS, shape_mask, watermark

MIN_OBJECT_AREA = 0.004  # fraction of the frame: 4 pixels at 32x32; smaller components are specks, not objects


def background_colour(frame: np.ndarray) -> np.ndarray:
    """The median colour of the frame's border (3,)."""
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    return np.median(border, axis=0)


def outside_watermark(size: int) -> np.ndarray:
    """(h, w) bool: pixels away from the watermark's box (its bounding box grown by one pixel)."""
    rows, cols = np.nonzero(watermark(size))
    keep = np.ones((size, size), bool)
    keep[max(rows.min() - 1, 0):rows.max() + 2, max(cols.min() - 1, 0):cols.max() + 2] = False
    return keep


def box3(image: np.ndarray) -> np.ndarray:
    """3x3 box average of an (h, w) float32 map (edges repeated), which averages compression noise away before
    thresholding. kornia's box_blur; within 2e-7 of the nine-term numpy sum it replaced (summation order), and
    the objects found, hence every score, the same (tests/test_analysis.py)."""
    return box_blur(torch.from_numpy(np.ascontiguousarray(image))[None, None], 3, border_type="replicate")[0, 0].numpy()


def chroma(pixels: np.ndarray) -> np.ndarray:
    """Colour with its grey level removed (..., 3): grey noise, grey backgrounds and the white watermark are ~0."""
    return pixels - pixels.mean(axis=-1, keepdims=True)


def object_mask(frame: np.ndarray, *, ignore_watermark: bool = True) -> np.ndarray:
    """(h, w) bool: pixels whose colour (grey level removed, so brightness noise does not count) is far from
    the background's (the corner watermark left out)."""
    distance = box3(np.abs(chroma(frame) - chroma(background_colour(frame))).sum(axis=-1))
    outside = outside_watermark(frame.shape[0]) if ignore_watermark else np.ones(distance.shape, bool)
    threshold = max(0.1, 0.5 * np.percentile(distance[outside], 99))
    return (distance > threshold) & outside


def object_components(masks: np.ndarray) -> list[list[np.ndarray]]:
    """Per frame of ``masks`` (t, h, w) bool, its objects: the 8-connected components with at least
    :data:`MIN_OBJECT_AREA` of the frame's pixels, as (h, w) bool masks, largest first."""
    t, h, w = masks.shape
    labels = connected_components_union_find(torch.from_numpy(masks)[:, None]).numpy()[:, 0]  # (t, h, w)
    smallest = max(1, round(MIN_OBJECT_AREA * h * w))
    frames = []
    for frame_labels in labels:
        ids, areas = np.unique(frame_labels[frame_labels > 0], return_counts=True)
        order = np.argsort(-areas, kind="stable")
        frames.append([frame_labels == ids[i] for i in order if areas[i] >= smallest])
    return frames


def main_objects(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the largest object's mask per frame (t, h, w), all-False where there is none; objects per frame (t,))."""
    components = object_components(np.stack([object_mask(f) for f in frames]))
    largest = np.stack([found[0] if found else np.zeros(frames.shape[1:3], bool) for found in components])
    return largest, np.array([len(found) for found in components])


def centres(masks: np.ndarray) -> np.ndarray:
    """(t, 2) centre (x, y) of each frame's mask (t, h, w) in frame fractions; NaN where it is empty."""
    size = masks.shape[1]
    out = np.full((len(masks), 2), np.nan, np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            out[i] = ((xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size)
    return out


@dataclass(frozen=True)
class MotionScores:
    direction_agreement: float  # cos(mean velocity, prompt direction), -1..1; NaN for undirected prompts
    speed_ratio: float  # measured / prompted speed along the prompt's direction; NaN for undirected prompts
    motion_magnitude: float  # mean centre displacement per frame, frame widths
    track_jitter: float  # mean |c[t+1] - 2 c[t] + c[t-1]| of the centre track, frame widths (jumps, shuffles)
    flicker: float  # mean |x[t+1] - x[t]| of the background (pixels outside every object in both frames)
    presence: float  # the fraction of frames with at least one object (1 = never lost)
    one_object: float  # the fraction of frames with exactly one object (clutter and empty frames lower it)
    object_count: float  # the mean number of objects per frame

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def motion_scores(frames: np.ndarray, direction: str | None = None, speed: str | None = None) -> MotionScores:
    masks = np.stack([object_mask(f) for f in frames])
    components = object_components(masks)
    counts = np.array([len(found) for found in components])
    track = centres(np.stack([found[0] if found else np.zeros(masks.shape[1:], bool) for found in components]))
    steps = np.diff(track, axis=0)
    valid = steps[~np.isnan(steps).any(axis=1)]
    magnitude = float(np.linalg.norm(valid, axis=1).mean()) if len(valid) else 0.0
    agreement = ratio = float("nan")
    if direction in DIRECTIONS:
        agreement = ratio = 0.0
        if len(valid):
            mean = valid.mean(axis=0)
            norm = float(np.linalg.norm(mean))
            want = np.array(DIRECTIONS[direction], np.float32)
            agreement = float(mean @ want / norm) if norm > 1e-6 else 0.0
            if speed in SPEEDS:
                ratio = float(mean @ want / SPEEDS[speed])
    accel = np.diff(track, n=2, axis=0)
    accel = accel[~np.isnan(accel).any(axis=1)]
    jitter = float(np.linalg.norm(accel, axis=1).mean()) if len(accel) else 0.0
    still = ~(masks[1:] | masks[:-1])  # (t - 1, h, w)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=-1)
    flicker = float(change[still].mean()) if still.any() else 0.0
    return MotionScores(agreement, ratio, magnitude, jitter, flicker, presence=float((counts >= 1).mean()),
                        one_object=float((counts == 1).mean()), object_count=float(counts.mean()))


@dataclass(frozen=True)
class QualityScores:
    sharpness: float
    watermark: float
    saturation: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sharpness(frame: np.ndarray) -> float:
    """Edge steepness: per colour channel, the 99th percentile of the gradient magnitude (the object's edges;
    noise is far weaker) over the channel's contrast (0.5th to 99.5th percentile); the largest over the
    channels (an object can match the background in one channel or in grey level). The watermark's box is
    left out. Blur and upscaling spread an edge over more pixels and lower it."""
    keep = outside_watermark(frame.shape[0])
    best = 0.0
    for channel in np.moveaxis(frame, -1, 0):
        gy, gx = np.gradient(channel)
        values, steep = channel[keep], np.hypot(gx, gy)[keep]
        contrast = np.percentile(values, 99.5) - np.percentile(values, 0.5)
        best = max(best, float(np.percentile(steep, 99) / (contrast + 0.05)))
    return best


def watermark_strength(frame: np.ndarray) -> float:
    """Correlation of the corner with the watermark's pattern (white box and bar), clipped at 0."""
    alpha = watermark(frame.shape[0])
    region = alpha > 0
    rows, cols = np.nonzero(region)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    patch = frame[top:bottom, left:right].mean(axis=-1)
    pattern = alpha[top:bottom, left:right]
    patch, pattern = patch - patch.mean(), pattern - pattern.mean()
    denominator = np.sqrt((patch ** 2).sum() * (pattern ** 2).sum()) + 1e-8
    return float(max(0.0, (patch * pattern).sum() / denominator))


def saturation(frame: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean HSV saturation (max - min) / max of the object's pixels (of the frame if none is found): kornia's
    rgb_to_hsv with eps 1e-6, bit for bit the numpy formula it replaced (tests/test_analysis.py)."""
    pixels = frame[mask] if mask is not None and mask.sum() >= 3 else frame.reshape(-1, 3)  # (n, 3)
    hsv = rgb_to_hsv(torch.from_numpy(np.ascontiguousarray(pixels.T))[None, :, :, None], eps=1e-6)  # (1, 3, n, 1)
    return float(hsv[0, 1, :, 0].numpy().mean())


def quality_scores(frames: np.ndarray) -> QualityScores:
    return QualityScores(
        sharpness=float(np.mean([sharpness(f) for f in frames])),
        watermark=float(np.mean([watermark_strength(f) for f in frames])),
        saturation=float(np.mean([saturation(f, object_mask(f)) for f in frames])),
    )


@dataclass(frozen=True)
class AlignmentScores:
    colour_match: float  # 1 = the prompt's colour
    shape_match: float  # IoU with the prompt's shape of the same centre and area
    texture_energy: float  # high-frequency energy inside the object
    colour_correct: float  # fraction of frames whose object's nearest palette hue is the prompt's (chance 1/7)
    shape_correct: float  # fraction of frames whose object fits the prompt's shape best of the three (chance 1/3)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


COLOUR_CHANCE = 1 / len(COLOURS)
SHAPE_CHANCE = 1 / len(SHAPES)


def shape_iou(mask: np.ndarray, shape: str) -> float:
    """IoU of the mask with the prompt's shape drawn at the mask's centre with the mask's area (upright)."""
    size = mask.shape[0]
    rows, cols = np.nonzero(mask)
    centre = ((cols.mean() + 0.5) / size, (rows.mean() + 0.5) / size)
    unit_area = shape_mask(shape, size, (0.5, 0.5), 0.25).sum() / size ** 2 / 0.25 ** 2  # area per radius^2
    radius = float(np.sqrt(mask.sum() / size ** 2 / unit_area))
    drawn = shape_mask(shape, size, centre, radius)
    ys, xs = np.nonzero(drawn > 0.5)
    if len(xs):  # a shape's centre of area is not its drawing centre (a triangle's): move it onto the mask's
        centre = (2 * centre[0] - (xs.mean() + 0.5) / size, 2 * centre[1] - (ys.mean() + 0.5) / size)
    template = shape_mask(shape, size, centre, radius) > 0.5
    return float((template & mask).sum() / max((template | mask).sum(), 1))


def hue(rgb: np.ndarray) -> float:
    """HSV hue of one colour (3,), in degrees [0, 360): unchanged by dulling towards the colour's own grey."""
    r, g, b = (float(v) for v in rgb)
    return float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360)


PALETTE_HUES = {name: hue(np.array(rgb)) for name, rgb in COLOURS.items()}


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette colour whose hue is nearest to ``rgb``'s (the world's colours are 24 degrees apart or more)."""
    h = hue(rgb)
    return min(PALETTE_HUES, key=lambda name: min(abs(h - PALETTE_HUES[name]), 360 - abs(h - PALETTE_HUES[name])))


def alignment_scores(frames: np.ndarray, colour: str, shape: str) -> AlignmentScores:
    """Per frame, then averaged: is the object (the largest one) the prompt's colour and shape?"""
    colours, shapes, textures, colour_hits, shape_hits = [], [], [], [], []
    want = np.array(COLOURS[colour], np.float32)
    for frame, mask in zip(frames, main_objects(frames)[0]):
        if not mask.any():
            for scores in (colours, shapes, textures, colour_hits, shape_hits):
                scores.append(0.0)
            continue
        mean = frame[mask].mean(axis=0)
        # compare chromaticity (colour with its brightness divided out), so dull or bright still match
        chroma = mean / (mean.sum() + 1e-6)
        target = want / want.sum()
        colours.append(float(max(0.0, 1 - np.abs(chroma - target).sum() / 1.0)))
        colour_hits.append(float(nearest_colour(mean) == colour))
        fits = {candidate: shape_iou(mask, candidate) for candidate in SHAPES}
        shapes.append(fits[shape])
        shape_hits.append(float(max(fits, key=fits.get) == shape))
        grey = frame.mean(axis=-1)
        detail = np.abs(grey - 0.25 * (np.roll(grey, 1, 0) + np.roll(grey, -1, 0) + np.roll(grey, 1, 1)
                                       + np.roll(grey, -1, 1)))
        inner = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
        textures.append(float(detail[inner].mean()) if inner.sum() else 0.0)
    return AlignmentScores(*(float(np.mean(scores)) for scores in (colours, shapes, textures, colour_hits, shape_hits)))
