"""Frames to and from video files: mp4 (H.264 through imageio-ffmpeg), gif, webp, or a folder of PNGs.

The format follows the output path: ``.mp4``, ``.gif``, ``.webp``, and anything without one of
those suffixes is a folder of ``frame_0000.png``... with a ``video.json`` that records the fps.
Files (and PNG folders) are written under a temporary name in the same folder, flushed to the disk
and renamed when complete (:mod:`vc2_core.files`), so a failure never leaves a half-written video
behind.

gif stores frame durations in hundredths of a second, so its fps is the nearest representable
one (28 fps is written as 25); mp4 and webp keep the requested fps.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import imageio
import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image  # Pillow comes with imageio

from .files import publish_folder, temporary_folder, write_atomically

FILE_FORMATS = (".mp4", ".gif", ".webp")
PNG_META = "video.json"


def output_format(path: str | Path) -> str:
    """"mp4", "gif", "webp" or "png" (a folder of PNG frames) for an output path."""
    suffix = Path(path).suffix.lower()
    if suffix in FILE_FORMATS:
        return suffix[1:]
    if suffix in (".png", ".jpg", ".jpeg", ".avi", ".mov", ".mkv", ".webm", ".apng"):
        raise ValueError(f"{path}: unsupported video format {suffix!r}; use .mp4, .gif, .webp, or a folder name "
                         "for PNG frames")
    return "png"


def check_output_path(path: str | Path) -> Path:
    """Raise ValueError unless ``path`` can be written (its folder exists and is writable; format known)."""
    path = Path(path)
    kind = output_format(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{path}: the folder {folder} is not writable")
    if kind == "png" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path}: exists and is not an empty folder (PNG frames are written to a new folder)")
    if kind != "png" and path.is_dir():
        raise ValueError(f"{path}: is a folder")
    return path


def to_frames(video: torch.Tensor) -> np.ndarray:
    """A video (c, t, h, w) in [-1, 1] as uint8 frames (t, h, w, c)."""
    if video.ndim != 4 or video.shape[0] not in (1, 3):
        raise ValueError(f"expected a video (c, t, h, w) with 1 or 3 channels; got {tuple(video.shape)}")
    scaled = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(1, 2, 3, 0).cpu().numpy()


def frame_duration_ms(kind: str, fps: float) -> float:
    """Per-frame duration written to a gif (whole hundredths of a second, at least 2) or webp (ms)."""
    if kind == "gif":
        return 10.0 * max(2, round(100.0 / fps))
    return 1000.0 / fps


def write_video(path: str | Path, frames: np.ndarray, fps: float, metadata: dict[str, str] | None = None) -> Path:
    """Write uint8 frames (t, h, w, 3) to ``path`` atomically; returns the path.

    ``metadata`` (text by key, e.g. ComfyUI's "prompt" and "workflow" JSON) is embedded: as mp4 container
    tags, as the webp EXIF fields ComfyUI reads (0x0110 "prompt:...", 0x010f "workflow:..."; other keys in
    0x010e), as one JSON gif comment, or in the PNG folder's ``video.json``.
    """
    path = check_output_path(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3) or len(frames) == 0:
        raise ValueError(f"expected uint8 frames (t, h, w, 3); got {frames.dtype} {frames.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    kind = output_format(path)
    metadata = dict(metadata or {})
    if kind == "png":
        return _write_png_folder(path, frames, fps, metadata)
    if kind == "mp4" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"mp4 (H.264, yuv420p) needs an even height and width; got {frames.shape[1:3]}")
    return write_atomically(path, lambda temporary: _write_file(temporary, kind, frames, fps, metadata),
                            suffix=path.suffix)


def _write_file(temporary: str, kind: str, frames: np.ndarray, fps: float, metadata: dict[str, str]) -> None:
    """mp4 (H.264, crf 17), gif or webp at ``temporary`` (its suffix tells imageio the format)."""
    if kind == "mp4":
        tags = [arg for key, value in metadata.items() for arg in ("-metadata", f"{key}={value}")]
        flags = ["-movflags", "+use_metadata_tags"] if tags else []
        with imageio.get_writer(temporary, format="FFMPEG", fps=fps, codec="libx264", quality=None,
                                ffmpeg_params=["-crf", "17", *tags, *flags], pixelformat="yuv420p",
                                macro_block_size=1, ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(frame)
    else:
        iio.imwrite(temporary, frames, extension=Path(temporary).suffix, duration=frame_duration_ms(kind, fps),
                    loop=0, **_embedded(kind, metadata))


EXIF_PROMPT, EXIF_WORKFLOW, EXIF_DESCRIPTION = 0x0110, 0x010F, 0x010E  # the tags ComfyUI's webp writer uses


def _embedded(kind: str, metadata: dict[str, str]) -> dict[str, object]:
    """Pillow save arguments that carry ``metadata`` in a gif or webp."""
    if not metadata:
        return {}
    if kind == "gif":
        return {"comment": json.dumps(metadata).encode()}
    exif = Image.Exif()
    others = {}
    for key, value in metadata.items():
        if key == "prompt":
            exif[EXIF_PROMPT] = f"prompt:{value}"
        elif key == "workflow":
            exif[EXIF_WORKFLOW] = f"workflow:{value}"
        else:
            others[key] = value
    if others:
        exif[EXIF_DESCRIPTION] = json.dumps(others)
    return {"exif": exif.tobytes()}


def _write_png_folder(path: Path, frames: np.ndarray, fps: float, metadata: dict[str, str]) -> Path:
    temporary = Path(temporary_folder(path))
    try:
        for index, frame in enumerate(frames):
            iio.imwrite(temporary / f"frame_{index:04d}.png", frame)
        record = {"fps": fps, "frames": len(frames), **({"metadata": metadata} if metadata else {})}
        (temporary / PNG_META).write_text(json.dumps(record) + "\n")
        if path.exists():
            path.rmdir()  # an empty folder (check_output_path refused anything else)
        publish_folder(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """(uint8 frames (t, h, w, 3), fps) of a file or PNG folder written by :func:`write_video` or others."""
    path = Path(path)
    kind = output_format(path)
    if kind == "png":
        meta = json.loads((path / PNG_META).read_text())
        frames = [iio.imread(p) for p in sorted(path.glob("frame_*.png"))]
        return np.stack(frames), float(meta["fps"])
    if kind == "mp4":
        with imageio.get_reader(str(path), format="FFMPEG") as reader:
            fps = float(reader.get_meta_data()["fps"])
            return np.stack([frame for frame in reader.iter_data()]), fps
    frames, durations = [], []
    with Image.open(path) as image:  # gif / webp: Pillow reads every frame and its duration
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(image.info.get("duration", 0))
    mean_ms = sum(durations) / len(durations)
    return np.stack(frames), (1000.0 / mean_ms if mean_ms else 0.0)
