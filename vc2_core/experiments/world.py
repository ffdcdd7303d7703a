"""Embedded synthetic data for the demo and the coupling study: nothing to download, deterministic from a seed.

Two kinds, as in the paper's recipe (VideoCrafter2 sec. 3: low-quality videos teach motion,
high-quality images teach appearance):

- **low-quality videos**: one plain, single-coloured object (circle, square or triangle) that moves
  as its caption says (left / right / up / down, slowly or quickly), starting near the side it comes
  from (a right-moving object enters on the left), degraded like web video:
  rendered at half resolution and upscaled, dulled towards grey, a watermark in the bottom-right
  corner, and block-compression noise;
- **high-quality images**: one sharp, vivid object, often textured (stripes, checks, dots), in
  colours the videos never show (purple, orange, cyan) as well as theirs, no watermark.

Objects are large (a radius of about a fifth of the frame): at 32x32 a smaller object loses its
shape to the degradation (a triangle of radius 0.15 is found round in 92 % of low-quality frames),
and through a 4x autoencoder it would cover two latent pixels. The degradation has no blur beyond the
upscaling: with a further Gaussian blur of about a pixel the clips' squares and triangles were found as
such in 86 % and 83 % of frames (98 % without), and the 4x autoencoder, which rounds corners a little
more, reconstructed them as squares in 25 % and triangles in 52 % of frames (70 % and 95 % without; 1,500
steps at batch 64 for the latter).

Every clip and image comes with its caption and its ground truth (object attributes, per-frame
centres and radius), which the metrics of :mod:`vc2_core.experiments.metrics` are validated against.
Pixels are float32 in [0, 1], frames (t, h, w, 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..training.data import stable_seed

SHAPES = ("circle", "square", "triangle")
VIDEO_COLOURS = {"red": (0.85, 0.12, 0.1), "green": (0.1, 0.7, 0.2), "blue": (0.12, 0.25, 0.9),
                 "yellow": (0.95, 0.85, 0.1)}
IMAGE_COLOURS = {**VIDEO_COLOURS, "purple": (0.55, 0.15, 0.8), "orange": (1.0, 0.5, 0.05),
                 "cyan": (0.05, 0.8, 0.85)}
COLOURS = IMAGE_COLOURS  # every colour a caption can name
TEXTURES = ("plain", "striped", "checked", "dotted")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS = {"slowly": 0.03, "quickly": 0.06}  # fraction of the frame width per frame
VIDEO_RADIUS = (0.2, 0.24)  # object radius in videos, a fraction of the frame side
IMAGE_RADIUS = (0.2, 0.26)
BACKGROUND = (0.93, 0.92, 0.88)
LQ_BACKGROUND = (0.62, 0.62, 0.6)
WATERMARK_SIZE = 0.28  # fraction of the frame side covered by the watermark box


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    texture: str = "plain"


@dataclass(frozen=True)
class Motion:
    kind: str  # a direction of DIRECTIONS
    speed: str = "slowly"

    def __post_init__(self) -> None:
        if self.kind not in DIRECTIONS or self.speed not in SPEEDS:
            raise ValueError(f"unknown motion {self.kind!r} {self.speed!r}; directions: {', '.join(DIRECTIONS)}, "
                             f"speeds: {', '.join(SPEEDS)}")

    @property
    def velocity(self) -> tuple[float, float]:
        """(dx, dy) per frame in frame widths."""
        dx, dy = DIRECTIONS[self.kind]
        return (dx * SPEEDS[self.speed], dy * SPEEDS[self.speed])


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (t, h, w, 3) float32 in [0, 1]
    caption: str
    thing: Thing
    motion: Motion
    centres: np.ndarray  # (t, 2) object centre (x, y), in frame fractions
    radius: float  # object radius, in frame fractions


@dataclass(frozen=True)
class Picture:
    pixels: np.ndarray  # (h, w, 3) float32 in [0, 1]
    caption: str
    thing: Thing
    centre: np.ndarray = field(repr=False)  # (2,) (x, y) in frame fractions


def video_caption(thing: Thing, motion: Motion) -> str:
    return f"a {thing.colour} {thing.shape} moving {motion.kind} {motion.speed}"


def image_caption(thing: Thing) -> str:
    return f"a sharp photo of a {'' if thing.texture == 'plain' else thing.texture + ' '}{thing.colour} {thing.shape}"


def all_captions() -> list[str]:
    """Every caption the world can write or a demo can prompt: videos' in every colour (the image-only colours
    too, as composition prompts name them), stills', images', and "" (the unconditional prompt)."""
    things = [Thing(shape, colour, texture) for colour in COLOURS for shape in SHAPES for texture in TEXTURES]
    plain = [thing for thing in things if thing.texture == "plain"]
    return ([video_caption(thing, Motion(kind, speed)) for thing in plain for kind in DIRECTIONS for speed in SPEEDS]
            + [f"a {thing.colour} {thing.shape}" for thing in plain]
            + [image_caption(thing) for thing in things] + [""])


# ---- rendering ---------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords)  # x (h, w), y (h, w)


def shape_mask(shape: str, size: int, centre: tuple[float, float], radius: float, angle: float = 0.0,
               soft: float = 1.0) -> np.ndarray:
    """Coverage (h, w) in [0, 1] of a shape; ``soft`` is the edge width in pixels."""
    x, y = _grid(size)
    dx, dy = x - centre[0], y - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # rotated into the shape's frame
    if shape == "circle":
        distance = np.sqrt(u * u + v * v) - radius
    elif shape == "square":
        distance = np.maximum(np.abs(u), np.abs(v)) - radius * 0.85
    elif shape == "triangle":  # pointing up, centred on its bounding box
        r = radius
        edges = [v - r * 0.75, (-v * 0.5 + u * 0.866) - r * 0.375, (-v * 0.5 - u * 0.866) - r * 0.375]
        distance = np.maximum.reduce(edges)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return np.clip(0.5 - distance * size / soft, 0.0, 1.0).astype(np.float32)


def texture_pattern(texture: str, size: int, colour: np.ndarray, phase: float = 0.0) -> np.ndarray:
    """(h, w, 3) fill of an object: the colour, modulated by the texture (contrast to white/dark)."""
    x, y = _grid(size)
    period = 8.0 / size  # an 8-pixel period whatever the frame size: 4-pixel stripes, checks of 4 pixels
    if texture == "plain":
        weight = np.zeros_like(x)
    elif texture == "striped":
        weight = (np.floor((x + y + phase) / period) % 2).astype(np.float32)
    elif texture == "checked":
        weight = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    elif texture == "dotted":
        cx, cy = (x % period) / period - 0.5, (y % period) / period - 0.5
        weight = (cx * cx + cy * cy < 0.09).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {texture!r}; choose one of {', '.join(TEXTURES)}")
    light = np.clip(colour * 0.35 + 0.65, 0, 1)  # a light tint of the colour
    return colour[None, None] * (1 - weight[..., None]) + light[None, None] * weight[..., None]


def composite(background: np.ndarray, fill: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return background * (1 - mask[..., None]) + fill * mask[..., None]


def watermark(size: int) -> np.ndarray:
    """(h, w) alpha of the watermark: a framed box with a bar, in the bottom-right corner."""
    alpha = np.zeros((size, size), np.float32)
    side = max(4, int(round(size * WATERMARK_SIZE)))
    top, left = size - side - max(1, size // 32), size - side - max(1, size // 32)
    alpha[top:top + side, left:left + side] = 0.35
    inner = max(1, side // 5)
    alpha[top + inner:top + side - inner, left + inner:left + side - inner] = 0.0
    middle = top + side // 2
    alpha[middle - max(1, side // 10):middle + max(1, side // 10), left + inner:left + side - inner] = 0.55
    return alpha


def degrade(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Web-video degradation of (t, h, w, 3) frames: half resolution, dull colours, watermark, block noise."""
    t, h, w, _ = frames.shape
    small = frames.reshape(t, h // 2, 2, w // 2, 2, 3).mean(axis=(2, 4))  # half resolution
    frames = small.repeat(2, axis=1).repeat(2, axis=2)
    grey = frames.mean(axis=-1, keepdims=True)
    frames = 0.45 * frames + 0.55 * grey  # dull colours
    alpha = watermark(h)[None, ..., None]
    frames = frames * (1 - alpha) + 1.0 * alpha  # a white, semi-transparent mark
    blocks = rng.normal(0, 0.02, (t, h // 4, w // 4, 1)).astype(np.float32)
    frames = frames + blocks.repeat(4, axis=1).repeat(4, axis=2) + rng.normal(0, 0.01, frames.shape)
    return np.clip(frames, 0, 1).astype(np.float32)


# ---- videos -------------------------------------------------------------------------------------------------


def motion_track(motion: Motion, frames: int, start: tuple[float, float]) -> np.ndarray:
    """(t, 2) centres of a motion from ``start``: constant velocity."""
    steps = np.arange(frames, dtype=np.float32)[:, None]
    return (np.array(start, np.float32)[None] + steps * np.array(motion.velocity, np.float32)[None]).astype(np.float32)


WATERMARK_FREE = 0.66  # tracks keep the object above or left of this line, clear of the watermark's corner


ENTRY_BAND = 0.05  # tracks start within this distance (frame fractions) of the side they move away from


def entry_side(low: float, high: float, travel: float) -> tuple[float, float]:
    """Starts along the motion that keep the track inside [low, high] and begin at the side the object
    comes from: a right-moving object starts on the left, so where it is in each frame says which way it goes."""
    first, last = low - min(travel, 0.0), high - max(travel, 0.0)  # every start that keeps the track inside
    return (first, min(last, first + ENTRY_BAND)) if travel > 0 else (max(first, last - ENTRY_BAND), last)


def start_for(motion: Motion, frames: int, radius: float, rng: np.random.Generator) -> tuple[float, float]:
    """A start that keeps the whole object inside the frame along the track and out of the watermark's
    corner: horizontal tracks keep to the upper part of the frame, vertical ones to the left part."""
    vx, vy = motion.velocity
    travel_x, travel_y = vx * (frames - 1), vy * (frames - 1)
    low, high = radius + 0.02, 1 - radius - 0.02  # centres that keep the object in the frame
    side = (low, max(low, WATERMARK_FREE - radius))  # the band clear of the watermark, across the motion
    if vx:
        x_range, y_range = entry_side(low, high, travel_x), side
    else:
        x_range, y_range = side, entry_side(low, high, travel_y)
    if x_range[1] < x_range[0] or y_range[1] < y_range[0]:
        raise ValueError(f"a {motion.speed} {motion.kind} track of {frames} frames does not fit the frame "
                         f"with an object of radius {radius:.2f}")
    return float(rng.uniform(*x_range)), float(rng.uniform(*y_range))


def render_clip(thing: Thing, motion: Motion, frames: int, size: int, rng: np.random.Generator,
                background: tuple[float, float, float] = LQ_BACKGROUND) -> Clip:
    """A clean clip (no degradation) of one object in motion."""
    radius = float(rng.uniform(*VIDEO_RADIUS))
    centres = motion_track(motion, frames, start_for(motion, frames, radius, rng))
    colour = np.array(COLOURS[thing.colour], np.float32)
    base = np.broadcast_to(np.array(background, np.float32), (size, size, 3))
    fill = texture_pattern(thing.texture, size, colour)
    out = np.stack([composite(base, fill, shape_mask(thing.shape, size, tuple(c), radius)) for c in centres])
    return Clip(out.astype(np.float32), video_caption(thing, motion), thing, motion, centres, radius)


def low_quality_video(seed: int, index: int, *, frames: int = 8, size: int = 32) -> Clip:
    """Video ``index`` of the low-quality set: a plain object of a video colour, its motion, degraded."""
    if size % 4:
        raise ValueError(f"size must be a multiple of 4; got {size}")
    rng = np.random.default_rng(stable_seed(seed, "lq-video", index))
    thing = Thing(SHAPES[rng.integers(len(SHAPES))], list(VIDEO_COLOURS)[rng.integers(len(VIDEO_COLOURS))])
    motion = Motion(list(DIRECTIONS)[rng.integers(len(DIRECTIONS))], list(SPEEDS)[rng.integers(len(SPEEDS))])
    clean = render_clip(thing, motion, frames, size, rng)
    return Clip(degrade(clean.frames, rng), clean.caption, thing, motion, clean.centres, clean.radius)


# ---- images -------------------------------------------------------------------------------------------------


def high_quality_image(seed: int, index: int, *, size: int = 32) -> Picture:
    """Image ``index`` of the high-quality set: one vivid object, often textured, sharp, no watermark."""
    rng = np.random.default_rng(stable_seed(seed, "hq-image", index))
    thing = Thing(SHAPES[rng.integers(len(SHAPES))], list(IMAGE_COLOURS)[rng.integers(len(IMAGE_COLOURS))],
                  TEXTURES[rng.integers(len(TEXTURES))])
    radius = float(rng.uniform(*IMAGE_RADIUS))
    low, high = radius + 0.02, 1 - radius - 0.02  # the whole object inside the frame
    centre = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
    background = np.broadcast_to(np.array(BACKGROUND, np.float32), (size, size, 3))
    fill = texture_pattern(thing.texture, size, np.array(COLOURS[thing.colour], np.float32))
    pixels = composite(background, fill, shape_mask(thing.shape, size, centre, radius, soft=0.8))
    return Picture(pixels.astype(np.float32), image_caption(thing), thing, np.array(centre, np.float32))
