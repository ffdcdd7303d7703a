"""Tiny synthetic training media on disk: captioned clips of a moving square, captioned images, and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vc2_core.training.config import TrainConfig, load_config
from vc2_core.video_io import write_video

CONFIGS = Path(__file__).resolve().parents[1] / "trainers" / "configs"

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}


def moving_square(colour: tuple[int, int, int], frames: int, size: int = 64, speed: int = 3) -> np.ndarray:
    """(frames, size, size, 3) uint8: a square moving right on a grey background."""
    video = np.full((frames, size, size, 3), 90, np.uint8)
    for f in range(frames):
        x = 4 + (f * speed) % (size - 20)
        video[f, 22:38, x:x + 16] = colour
    return video


def make_videos(folder: Path, *, frames: int = 12, broken: bool = True) -> Path:
    """A folder of 4 good captioned mp4 clips (24 fps), plus, with ``broken``: a corrupt file, an uncaptioned
    clip and a clip too short for 8 frames."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in COLOURS.items():
        write_video(folder / f"{name}.mp4", moving_square(colour, frames), 24)
        (folder / f"{name}.txt").write_text(f"a {name} square moving right")
    if broken:
        (folder / "corrupt.mp4").write_bytes(b"\x00\x01 this is not a video" * 20)
        (folder / "corrupt.txt").write_text("a corrupt file")
        write_video(folder / "uncaptioned.mp4", moving_square((0, 0, 0), frames), 24)
        write_video(folder / "short.mp4", moving_square((255, 255, 255), 5), 24)
        (folder / "short.txt").write_text("a short clip")
    return folder


def make_images(folder: Path, *, count: int = 6, broken: bool = True) -> Path:
    """A folder of ``count`` captioned 64x64 PNGs (textured squares), plus, with ``broken``, a corrupt PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    for i in range(count):
        name = names[i % len(names)]
        image = np.full((64, 64, 3), 200, np.uint8)
        image[16:48, 16:48] = COLOURS[name]
        image[16:48, 16:48] += rng.integers(0, 30, (32, 32, 1), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:02d}-{name}.png")
        (folder / f"{i:02d}-{name}.txt").write_text(f"a sharp {name} square")
    if broken:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        (folder / "broken.txt").write_text("a broken image")
    return folder


def media_config(name: str, out: Path, media: dict, **sections: dict) -> TrainConfig:
    """The shipped config ``name`` writing to ``out``, on the ``media`` folders, with sections' fields overridden."""
    overrides = {"run": {"output_dir": str(out)}, "videos": {"index": str(media["videos"])},
                 "images": {"index": str(media["images"])}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_config(CONFIGS / name, overrides)
