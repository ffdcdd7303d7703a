"""Small training media for the data tests: good and broken clips, a gif, images, a CSV index; and helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vc2_core.training.data import (
    Drawn,
    ItemStream,
    Sample,
    Skipped,
    VideoClips,
    VideoEntry,
    draw_generator,
    read_video_index,
)
from vc2_core.video_io import write_video

FPS = 24
LENGTH = 24  # frames of a good clip
SIZE = (32, 48)  # height, width of the synthetic media
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 210, 40)]


def moving_square(colour: tuple[int, int, int], frames: int) -> np.ndarray:
    """(frames, 32, 48, 3) uint8: a square moving one pixel right per frame, so every frame differs."""
    video = np.full((frames, *SIZE, 3), 90, np.uint8)
    for f in range(frames):
        video[f, 8:24, 2 + f:18 + f] = colour
    return video


def make_media(base: Path) -> dict:
    """Four good 24-frame clips, broken ones (zero bytes, random bytes, 5 frames), a gif, images and indexes."""
    clips = base / "clips"
    clips.mkdir()
    good = []
    for i, colour in enumerate(COLOURS):
        good.append(write_video(clips / f"good{i}.mp4", moving_square(colour, LENGTH), FPS))
    write_video(clips / "short.mp4", moving_square((255, 255, 255), 5), FPS)
    (clips / "zero.mp4").write_bytes(b"")
    (clips / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    gif = write_video(base / "square.gif", moving_square((0, 0, 0), 12), 25)
    rows = [("clips/good0.mp4", "a red square"), ("clips/good1.mp4", "a green square"),
            ("clips/good2.mp4", "a blue square"), ("clips/good3.mp4", "a yellow square"),
            ("clips/short.mp4", "too short"), ("clips/zero.mp4", "zero bytes"), ("clips/random.mp4", "noise"),
            ("clips/gone.mp4", "not there")]
    index = base / "videos.csv"
    index.write_text("path,caption\n" + "".join(f"{p},{c}\n" for p, c in rows))
    images = base / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(images / f"im{i}.png")
        (images / f"im{i}.txt").write_text(f"image {i}\n")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(images / "photo.jpg")
    (images / "photo.txt").write_text("a photo")
    Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8), "L").save(images / "grey.png")
    (images / "grey.txt").write_text("a grey image")
    Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), "RGBA").save(images / "alpha.png")
    (images / "alpha.txt").write_text("an image with alpha")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(images / "uncaptioned.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (images / "corrupt.txt").write_text("a corrupt image")
    return {"base": base, "good": good, "index": index, "clips": clips, "gif": gif, "images": images}


def good_clips(media: dict, **settings) -> VideoClips:
    entries = [VideoEntry(path, f"clip {i}") for i, path in enumerate(media["good"])]
    return VideoClips(entries, **{"frames": 8, "height": 16, "width": 16, **settings})


def all_clips(media: dict, **settings) -> VideoClips:
    entries, _ = read_video_index(media["index"])
    return VideoClips(entries, **{"frames": 8, "height": 16, "width": 16, **settings})


def load(dataset, index: int, key: int = 0, seed: int = 0) -> Sample | Skipped:
    return dataset.load(index, draw_generator(seed, key, "augment"))


def frame_offsets(sample: Sample, reference: np.ndarray) -> list[int]:
    """The source frame of each clip frame: the reference frame (t, h, w, 3) it equals (clips at source size)."""
    pixels = ((sample.pixels + 1) * 127.5).round().permute(1, 2, 3, 0)  # (t, h, w, 3)
    frames = torch.from_numpy(reference).float()
    offsets = []
    for frame in pixels:
        errors = (frames - frame).abs().flatten(1).max(1).values
        assert errors.min() <= 1.0, "a clip frame matches no source frame"
        offsets.append(int(errors.argmin()))
    return offsets


def stream_items(dataset, batches: int, **settings) -> list[list[Drawn]]:
    with ItemStream(dataset, **{"seed": 7, "local_batch": 2, **settings}) as stream:
        return [stream.next_batch() for _ in range(batches)]


def same_items(a: list[Drawn], b: list[Drawn]) -> bool:
    return ([d.key for d in a] == [d.key for d in b] and [d.sample.source for d in a] == [d.sample.source for d in b]
            and all(torch.equal(x.sample.pixels, y.sample.pixels) for x, y in zip(a, b)))


