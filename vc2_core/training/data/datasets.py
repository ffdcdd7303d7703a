"""Datasets of training media: ``load(index, generator)`` returns a :class:`Sample`, or a
:class:`~.skips.Skipped` saying why not, never an exception. Decoding is in ``video_reader``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..video_reader import TooShort, read_clip
from .indexes import ImageEntry, VideoEntry
from .pixels import check_size, resize_crop
from .skips import Skipped

Tensor = torch.Tensor


@dataclass(frozen=True)
class Sample:
    pixels: Tensor  # (3, t, H, W) float32 in [-1, 1]; t = clip frames for a video, 1 for an image
    caption: str
    fps: int  # the fps condition: round(source fps / frame stride) for a clip (>= 1); the dataset's for an image
    source: str  # the file it came from


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


class VideoClips:
    """Clips of ``frames`` frames every ``stride`` source frames, the stride drawn from ``frame_stride``.

    ``load`` returns a Sample with pixels (3, frames, height, width) and the fps condition
    ``max(1, round(source_fps / stride))``, source_fps from the entry, else the file, else ``default_fps``.
    """

    def __init__(self, entries: list[VideoEntry], *, frames: int, height: int, width: int,
                 frame_stride: tuple[int, int] = (1, 1), crop: str = "center", default_fps: float = 25.0):
        if not entries:
            raise ValueError("VideoClips needs at least one entry")
        if frames < 1:
            raise ValueError(f"frames must be at least 1; got {frames}")
        check_size(height, width, crop)
        if len(frame_stride) != 2 or not 1 <= frame_stride[0] <= frame_stride[1]:
            raise ValueError(f"frame_stride must be (min, max) with 1 <= min <= max; got {frame_stride}")
        if not (math.isfinite(default_fps) and default_fps > 0):
            raise ValueError(f"default_fps must be positive; got {default_fps}")
        self.entries, self.frames, self.height, self.width = list(entries), frames, height, width
        self.frame_stride = (int(frame_stride[0]), int(frame_stride[1]))
        self.crop, self.default_fps = crop, float(default_fps)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        """Item ``index`` as a clip, or why it was skipped; every random choice comes from ``generator``."""
        entry = self.entries[index]
        source = str(entry.path)
        if not entry.path.is_file():
            return Skipped(source, "missing")
        try:
            clip = read_clip(entry.path, self.frames, self.frame_stride, generator, entry.frames)
        except TooShort as short:
            return Skipped(source, "too short", str(short))
        except Exception as error:  # any decoder failure is a property of the file: reported, never fatal
            return Skipped(source, "unreadable", _first_line(error))
        source_fps = entry.fps or clip.file_fps or self.default_fps
        pixels = resize_crop(clip.frames, self.height, self.width, self.crop, generator)
        return Sample(pixels, entry.caption, max(1, round(source_fps / clip.stride)), source)


class Images:
    """Images as one-frame samples: pixels (3, 1, height, width), fps = the dataset's ``fps``."""

    def __init__(self, entries: list[ImageEntry], *, height: int, width: int, crop: str = "center", fps: int = 28):
        if not entries:
            raise ValueError("Images needs at least one entry")
        check_size(height, width, crop)
        if fps < 1:
            raise ValueError(f"fps must be at least 1; got {fps}")
        self.entries, self.height, self.width, self.crop, self.fps = list(entries), height, width, crop, int(fps)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        """Item ``index`` as a one-frame sample, or why it was skipped."""
        from PIL import Image

        entry = self.entries[index]
        source = str(entry.path)
        if not entry.path.is_file():
            return Skipped(source, "missing")
        try:
            with Image.open(entry.path) as image:
                frame = np.array(image.convert("RGB"))  # (h, w, 3) uint8
        except Exception as error:  # a broken image is reported, never fatal
            return Skipped(source, "unreadable", _first_line(error))
        pixels = resize_crop(frame[None], self.height, self.width, self.crop, generator)
        return Sample(pixels, entry.caption, self.fps, source)
