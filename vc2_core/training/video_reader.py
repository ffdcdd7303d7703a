"""Streaming clip reads: ``frames`` frames every ``stride`` source frames, without holding the whole video.

Movies are decoded with imageio's v3 API and the ffmpeg plugin of imageio-ffmpeg (a project
dependency); gif and animated webp go through Pillow. Frames are iterated and the decoder is closed
right after the last frame a clip needs. The ffmpeg plugin is used even when PyAV is installed:
imageio's ``pyav`` plugin runs a full ``gc.collect()`` on every close, which costs about 0.85 s per
clip in a process holding a 1M-entry index (measured with imageio 2.38), and a decoder crash in a
subprocess cannot take the training process down with it. ``VideoFile(path, plugin="pyav")`` is there
for trying it.

A clip is chosen before decoding, from the frame count (the index's, else the file's metadata, else
one counting pass): the stride drawn from ``frame_stride`` is reduced to the largest stride that
fits, and the start is uniform over the valid starts. Container metadata can overstate a video's
length; when the file ends early the clip is taken from the last ``span`` frames decoded (kept in a
bounded deque), at a smaller stride if even those are too few.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PILLOW_SUFFIXES = (".gif", ".webp")
MOVIE_PLUGIN = "FFMPEG"  # imageio's plugin for everything else (see the module doc)


class TooShort(Exception):
    """The video has fewer frames than a clip needs (the message says how many)."""


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (t, h, w, 3) uint8
    stride: int  # source frames between consecutive clip frames
    file_fps: float | None  # the frame rate in the file's metadata, if it has one


class VideoFile:
    """An open video: ``fps`` and ``length`` from its metadata (either may be None) and a frame iterator.

    ``length`` may be approximate for movies (duration x fps); :func:`read_clip` copes with a file
    that ends early. Use as a context manager; closing stops the decoder.
    """

    def __init__(self, path: Path, plugin: str = MOVIE_PLUGIN):
        self.path = path
        self._pillow = None
        self._file = None
        if path.suffix.lower() in PILLOW_SUFFIXES:
            self._open_pillow()
        else:
            self._open_movie(plugin)

    def _open_pillow(self) -> None:
        from PIL import Image

        self._pillow = Image.open(self.path)
        try:
            self.length = int(getattr(self._pillow, "n_frames", 1))
            durations = []
            for index in range(self.length):  # a gif's frame durations are only known frame by frame
                self._pillow.seek(index)
                durations.append(self._pillow.info.get("duration") or 0)
        except BaseException:
            self._pillow.close()
            raise
        total_ms = sum(durations)
        self.fps = 1000.0 * self.length / total_ms if total_ms else None

    def _open_movie(self, plugin: str) -> None:
        import imageio.v3 as iio

        self._file = iio.imopen(str(self.path), "r", plugin=plugin)
        try:
            meta = self._file.metadata()
            fps = meta.get("fps")
            self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else None
            counted = self._file.properties().n_images if plugin == "pyav" else meta.get("nframes")
            duration = meta.get("duration")
            if counted and math.isfinite(counted) and counted > 0:
                self.length = int(counted)
            elif duration and math.isfinite(duration) and self.fps:
                self.length = max(1, round(duration * self.fps))  # approximate
            else:
                self.length = None
        except BaseException:
            self._file.close()
            raise

    def frames(self) -> Iterator[np.ndarray]:
        """Decoded frames in order, each uint8 (h, w, c) as the decoder gives it (c = 1, 3 or 4)."""
        if self._pillow is not None:
            for index in range(self.length):
                self._pillow.seek(index)
                yield np.asarray(self._pillow.convert("RGB"))
        else:
            yield from self._file.iter()

    def close(self) -> None:
        if self._pillow is not None:
            self._pillow.close()
        else:
            self._file.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """A frame (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) as uint8 (h, w, 3) (alpha dropped)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
        raise ValueError(f"unexpected frame shape {frame.shape}")
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    if frame.dtype != np.uint8:
        raise ValueError(f"unexpected frame dtype {frame.dtype} (8-bit frames expected)")
    return frame[..., :3]


def count_frames(path: Path) -> int:
    """The number of decodable frames (one pass over the file, one frame in memory at a time)."""
    with VideoFile(path) as video:
        return sum(1 for _ in video.frames())


def read_clip(path: Path, frames: int, frame_stride: tuple[int, int], generator: torch.Generator,
              length: int | None = None) -> Clip:
    """Decode one clip of ``frames`` frames from ``path``; stride and start are drawn from ``generator``.

    ``length`` is the frame count if known (an index column); otherwise the metadata's, else counted.
    Raises TooShort for a video with fewer than ``frames`` frames, and the decoder's errors as they come.
    """
    with VideoFile(path) as video:
        length = length if length is not None else video.length
        if length is not None:
            return _decode(video, frames, frame_stride, generator, length)
    length = count_frames(path)  # neither the index nor the metadata says: one counting pass
    with VideoFile(path) as video:
        return _decode(video, frames, frame_stride, generator, length)


def _decode(video: VideoFile, frames: int, frame_stride: tuple[int, int], generator: torch.Generator,
            length: int) -> Clip:
    """Draw the stride and start for a video of ``length`` frames, then decode up to the clip's last frame."""
    if length < frames:
        raise TooShort(f"{length} frames, {frames} needed")
    lo, hi = frame_stride
    stride = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    if frames > 1:
        stride = min(stride, (length - 1) // (frames - 1))  # the largest stride that fits, if the drawn one does not
    span = (frames - 1) * stride + 1
    start = int(torch.randint(0, length - span + 1, (1,), generator=generator))
    last = start + span - 1
    kept: list[np.ndarray] = []
    recent: collections.deque[np.ndarray] = collections.deque(maxlen=span)
    decoded = 0
    for index, frame in enumerate(video.frames()):
        decoded = index + 1
        recent.append(frame)
        if index >= start and (index - start) % stride == 0:
            kept.append(frame)
        if index == last:
            break
    if len(kept) < frames:  # the file ended before `last`: its length was overstated
        kept, stride = _from_the_end(list(recent), decoded, frames, stride)
    return Clip(np.stack([to_rgb(frame) for frame in kept]), stride, video.fps)


def _from_the_end(recent: list[np.ndarray], decoded: int, frames: int, stride: int) -> tuple[list[np.ndarray], int]:
    """A clip from the last frames of a file that ended early: at ``stride`` if they suffice, else the largest
    stride that fits the ``decoded`` frames (all of them are in ``recent`` then)."""
    if decoded < frames:
        raise TooShort(f"{decoded} frames, {frames} needed (the metadata said more)")
    if len(recent) < (frames - 1) * stride + 1:
        stride = (decoded - 1) // (frames - 1)
    span = (frames - 1) * stride + 1
    return recent[len(recent) - span::stride], stride
