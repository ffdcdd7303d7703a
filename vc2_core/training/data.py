"""Training data: video and image indexes, datasets that never crash on bad files, and the item stream.

Indexes
    videos: a CSV (``path,caption[,fps,frames]``, or WebVid-10M's ``videoid,page_dir,name``), a JSONL
    index with the same fields, or a folder of videos with same-named ``.txt`` captions.
    images: a folder of images with ``.txt`` captions, or a JSONL / CSV index (``path`` and
    ``caption`` or JourneyDB's ``prompt``).

Datasets (``VideoClips``, ``Images``) load item ``index`` with a generator and return a
:class:`Sample`, or a :class:`Skipped` saying why not (missing, unreadable, too short, no
caption), never an exception.

The item stream (:class:`ItemStream`) deals items to one process in a seeded order: position p
of the endless stream is item ``perm_e[p % N]`` of epoch ``e = p // N``; positions come in chunks
of ``local_batch`` and process r of W owns chunks r, r + W, ... A skipped item is reported and the
process takes its next position, so a batch is always full. Each item's randomness comes from
``draw_generator(seed, p, purpose)``, so whichever process and batch an item lands in it is
treated the same, and ``position`` alone resumes a stream exactly.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
REASONS = ("missing", "unreadable", "too short", "no caption", "bad index line")
_EXAMPLES = 20


@dataclass(frozen=True)
class Sample:
    pixels: Tensor  # (3, t, H, W) float32 in [-1, 1]; t = 1 for an image
    caption: str
    fps: int  # the fps condition: round(source fps / frame stride) for a clip; the dataset's for an image
    source: str


@dataclass(frozen=True)
class Skipped:
    source: str  # a file, or "index.jsonl:17" for a bad index line
    reason: str  # one of REASONS
    detail: str = ""


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    caption: str
    fps: float | None = None
    frames: int | None = None


@dataclass(frozen=True)
class ImageEntry:
    path: Path
    caption: str


@dataclass(frozen=True)
class Drawn:
    key: int  # the stream position it was drawn at (unique over epochs)
    sample: Sample


# ---- deterministic randomness ----------------------------------------------------------------------------


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (not Python's per-process ``hash``)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def draw_generator(seed: int, key: int, purpose: str) -> torch.Generator:
    """The CPU generator of one random purpose ("augment", "videos/noise", ...) of the item drawn at ``key``."""
    return torch.Generator().manual_seed(stable_seed(seed, purpose, key))


# ---- indexes -----------------------------------------------------------------------------------------------


def read_video_index(path: str | Path, root: str | Path | None = None) -> tuple[list[VideoEntry], list[Skipped]]:
    """Entries of a CSV / JSONL index or a folder of captioned videos, and the lines or files skipped."""
    rows, skipped, base = _read_index(Path(path), root, VIDEO_SUFFIXES)
    entries = []
    for where, row in rows:
        if "videoid" in row and "page_dir" in row and "path" not in row:  # WebVid-10M's own CSV
            row = {"path": f"{row['page_dir']}/{row['videoid']}.mp4", "caption": row.get("name"), **row}
        try:
            fps = _optional(row.get("fps"), float)
            frames = _optional(row.get("frames"), int)
            entries.append(VideoEntry(_resolve(base, row), _caption(row), fps, frames))
        except (KeyError, ValueError, TypeError) as error:
            skipped.append(Skipped(where, "bad index line", str(error)))
    return _non_empty(entries, skipped, path, "videos")


def read_image_index(path: str | Path, root: str | Path | None = None) -> tuple[list[ImageEntry], list[Skipped]]:
    """Entries of a folder of captioned images or a JSONL / CSV index, and the lines or files skipped."""
    rows, skipped, base = _read_index(Path(path), root, IMAGE_SUFFIXES)
    entries = []
    for where, row in rows:
        try:
            entries.append(ImageEntry(_resolve(base, row), _caption(row)))
        except (KeyError, ValueError, TypeError) as error:
            skipped.append(Skipped(where, "bad index line", str(error)))
    return _non_empty(entries, skipped, path, "images")


def _read_index(path: Path, root, suffixes) -> tuple[list[tuple[str, dict]], list[Skipped], Path]:
    if path.is_dir():
        rows, skipped = [], []
        for media in sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
            text = media.with_suffix(".txt")
            caption = text.read_text(errors="replace").strip() if text.is_file() else ""
            if caption:
                rows.append((str(media), {"path": str(media), "caption": caption}))
            else:
                skipped.append(Skipped(str(media), "no caption", f"no text in {text.name}"))
        return rows, skipped, Path(root) if root else path
    if not path.is_file():
        raise ValueError(f"{path}: no such index file or folder")
    base = Path(root) if root else path.parent
    if path.suffix.lower() == ".csv":
        with path.open(newline="", errors="replace") as handle:
            return [(f"{path}:{n}", row) for n, row in enumerate(csv.DictReader(handle), start=2)], [], base
    if path.suffix.lower() in (".jsonl", ".json"):
        rows, skipped = [], []
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                rows.append((f"{path}:{n}", row))
            except ValueError as error:
                skipped.append(Skipped(f"{path}:{n}", "bad index line", str(error)))
        return rows, skipped, base
    raise ValueError(f"{path}: an index is a .csv or .jsonl file, or a folder")


def _resolve(base: Path, row: dict) -> Path:
    value = row.get("path")
    if not value:
        raise KeyError("no path")
    path = Path(value)
    return path if path.is_absolute() else base / path


def _caption(row: dict) -> str:
    caption = row.get("caption") or row.get("prompt") or row.get("name")
    if not isinstance(caption, str) or not caption.strip():
        raise KeyError("no caption")
    return caption.strip()


def _optional(value, kind):
    return None if value in (None, "") else kind(value)


def _non_empty(entries, skipped, path, what):
    if not entries:
        reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:3])
        raise ValueError(f"{path}: no usable {what} in this index" + (f" ({reasons})" if reasons else ""))
    return entries, skipped


# ---- pixels ------------------------------------------------------------------------------------------------


def resize_crop(frames: np.ndarray, height: int, width: int, crop: str, generator: torch.Generator) -> Tensor:
    """uint8 (t, h, w, 3) -> float32 (3, t, height, width) in [-1, 1]: scale to cover, then crop."""
    video = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float()  # (t, 3, h, w); a writable copy
    h, w = video.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, math.ceil(h * scale - 1e-6)), max(width, math.ceil(w * scale - 1e-6)))
    if size != (h, w):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    if crop == "random":
        top = int(torch.randint(0, size[0] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, size[1] - width + 1, (1,), generator=generator))
    video = video[:, :, top:top + height, left:left + width]
    return (video / 127.5 - 1.0).clamp(-1.0, 1.0).transpose(0, 1).contiguous()


def _rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    return frame[..., :3]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class VideoClips:
    """Clips of ``frames`` frames, every ``stride`` source frames (stride drawn from ``frame_stride``)."""

    def __init__(self, entries: list[VideoEntry], *, frames: int, height: int, width: int,
                 frame_stride: tuple[int, int] = (1, 1), crop: str = "center", default_fps: float = 25.0):
        if frames < 1 or height < 1 or width < 1:
            raise ValueError(f"frames, height and width must be positive; got {frames}, {height}, {width}")
        if not 1 <= frame_stride[0] <= frame_stride[1]:
            raise ValueError(f"frame_stride must be (min, max) with 1 <= min <= max; got {frame_stride}")
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random'; got {crop!r}")
        self.entries, self.frames, self.height, self.width = entries, frames, height, width
        self.frame_stride, self.crop, self.default_fps = tuple(frame_stride), crop, default_fps

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        entry = self.entries[index]
        if not entry.path.is_file():
            return Skipped(str(entry.path), "missing")
        try:
            clip, fps = self._read_clip(entry, generator)
        except _TooShort as short:
            return Skipped(str(entry.path), "too short", str(short))
        except Exception as error:  # any decoder failure is a property of the file, reported, never fatal
            return Skipped(str(entry.path), "unreadable", _first_line(error))
        pixels = resize_crop(clip, self.height, self.width, self.crop, generator)
        return Sample(pixels, entry.caption, fps, str(entry.path))

    def _read_clip(self, entry: VideoEntry, generator: torch.Generator) -> tuple[np.ndarray, int]:
        with _open_video(entry.path) as video:
            length = entry.frames or video.length
            source_fps = entry.fps or video.fps or self.default_fps
            if length is not None and length < self.frames:
                raise _TooShort(f"{length} frames, {self.frames} needed")
            lo, hi = self.frame_stride
            stride = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            if length is not None:
                stride = max(1, min(stride, (length - 1) // max(self.frames - 1, 1)))
            span = (self.frames - 1) * stride + 1
            start = int(torch.randint(0, length - span + 1, (1,), generator=generator)) if length else 0
            wanted = range(start, start + span, stride)
            kept: dict[int, np.ndarray] = {}
            recent: collections.deque = collections.deque(maxlen=span)
            read = 0
            for read, frame in enumerate(video.frames()):
                frame = _rgb(frame)
                recent.append(frame)
                if read in wanted:
                    kept[read] = frame
                if read >= wanted[-1]:
                    break
            if len(kept) < self.frames:  # the file ended early (the metadata overstated its length)
                if len(recent) < span:
                    raise _TooShort(f"{read + 1} frames decoded, {span} needed at stride {stride}")
                clip = list(recent)[::stride]
            else:
                clip = [kept[i] for i in wanted]
        return np.stack(clip), max(1, round(source_fps / stride))


class _TooShort(Exception):
    pass


class _VideoFile:
    """A video opened for streaming frames: ffmpeg (imageio-ffmpeg) for movies, Pillow for gif/webp."""

    def __init__(self, path: Path):
        self.path = path
        if path.suffix.lower() in (".gif", ".webp"):
            from PIL import Image

            self._image = Image.open(path)
            durations = []
            for i in range(getattr(self._image, "n_frames", 1)):
                self._image.seek(i)
                durations.append(self._image.info.get("duration", 0) or 0)
            self.length = len(durations)
            self.fps = 1000.0 * len(durations) / sum(durations) if sum(durations) else None
            self._reader = None
        else:
            import imageio.v2 as imageio

            self._image = None
            self._reader = imageio.get_reader(str(path), format="FFMPEG")
            meta = self._reader.get_meta_data()
            self.fps = float(meta["fps"]) if meta.get("fps") else None
            frames = meta.get("nframes")
            if frames is not None and math.isfinite(frames):
                self.length = int(frames)
            elif meta.get("duration") and self.fps:
                self.length = int(meta["duration"] * self.fps)  # approximate; a short file is handled when read
            else:
                self.length = None

    def frames(self):
        if self._image is not None:
            for i in range(self.length):
                self._image.seek(i)
                yield np.asarray(self._image.convert("RGB"))
        else:
            yield from self._reader.iter_data()

    def __enter__(self) -> _VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        (self._image or self._reader).close()


def _open_video(path: Path) -> _VideoFile:
    return _VideoFile(path)


class Images:
    """Images as one-frame samples (3, 1, H, W)."""

    def __init__(self, entries: list[ImageEntry], *, height: int, width: int, crop: str = "center", fps: int = 28):
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive; got {height}, {width}")
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random'; got {crop!r}")
        self.entries, self.height, self.width, self.crop, self.fps = entries, height, width, crop, fps

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int, generator: torch.Generator) -> Sample | Skipped:
        from PIL import Image

        entry = self.entries[index]
        if not entry.path.is_file():
            return Skipped(str(entry.path), "missing")
        try:
            with Image.open(entry.path) as image:
                frame = np.asarray(image.convert("RGB"))
        except Exception as error:  # a broken image is reported, never fatal
            return Skipped(str(entry.path), "unreadable", _first_line(error))
        pixels = resize_crop(frame[None], self.height, self.width, self.crop, generator)
        return Sample(pixels, entry.caption, self.fps, str(entry.path))


# ---- skip reports ------------------------------------------------------------------------------------------


@dataclass
class SkipReport:
    """What was skipped and why: counts by reason, the number of items seen, the first examples."""

    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def add(self, item: object) -> None:
        self.seen += 1
        if isinstance(item, Skipped):
            self.counts[item.reason] = self.counts.get(item.reason, 0) + 1
            if len(self.examples) < _EXAMPLES:
                self.examples.append({"source": item.source, "reason": item.reason, "detail": item.detail})

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: SkipReport) -> None:
        self.seen += other.seen
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
        self.examples.extend(other.examples[:max(0, _EXAMPLES - len(self.examples))])

    def summary(self) -> str:
        if not self.skipped:
            return f"no items skipped ({self.seen} seen)"
        share = 100.0 * self.skipped / max(self.seen, 1)
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.counts.items()))
        lines = [f"skipped {self.skipped} of {self.seen} items ({share:.1f}%): {reasons}"]
        lines += [f"  {e['source']}: {e['reason']}" + (f" ({e['detail']})" if e["detail"] else "")
                  for e in self.examples[:5]]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"seen": self.seen, "counts": dict(self.counts), "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, data: dict) -> SkipReport:
        return cls(int(data["seen"]), dict(data["counts"]), list(data["examples"]))


# ---- the stream --------------------------------------------------------------------------------------------


class _Positions(torch.utils.data.Dataset):
    """Map-style view for DataLoader workers: position p -> (p, the item drawn there)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self._epoch, self._perm = -1, None

    def item_index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, "epoch", epoch))
            self._epoch, self._perm = epoch, torch.randperm(len(self.dataset), generator=generator)
        return int(self._perm[offset])

    def __getitem__(self, position: int):
        item = self.dataset.load(self.item_index(position), draw_generator(self.seed, position, "augment"))
        return position, item


class _OwnedPositions(torch.utils.data.Sampler):
    """This process's positions from ``start`` on: chunks c of ``local_batch`` with c % world == rank."""

    def __init__(self, start: int, local_batch: int, rank: int, world: int):
        self.start, self.local_batch, self.rank, self.world = start, local_batch, rank, world

    def __iter__(self):
        position = self.start
        while True:
            if (position // self.local_batch) % self.world == self.rank:
                yield position
                position += 1
            else:  # jump to this process's next chunk
                chunk = position // self.local_batch
                ahead = (self.rank - chunk) % self.world
                position = (chunk + ahead) * self.local_batch


def _identity(item):
    return item


class ItemStream:
    """The items one process trains on, in a seeded order, failures skipped and reported (see the module doc)."""

    def __init__(self, dataset, *, seed: int, local_batch: int, rank: int = 0, world_size: int = 1,
                 position: int = 0, num_workers: int = 0, report: SkipReport | None = None):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        if local_batch < 1 or not 0 <= rank < world_size or position < 0:
            raise ValueError(f"bad stream settings: local_batch={local_batch}, rank={rank}, "
                             f"world_size={world_size}, position={position}")
        self.dataset, self.local_batch, self._world = dataset, local_batch, world_size
        self.report = report if report is not None else SkipReport()
        self._position = position
        self._source = _Positions(dataset, seed)
        sampler = _OwnedPositions(position, local_batch, rank, world_size)
        self._loader = None
        if num_workers > 0:
            self._loader = torch.utils.data.DataLoader(self._source, batch_size=None, sampler=sampler,
                                                       num_workers=num_workers, collate_fn=_identity,
                                                       persistent_workers=True)
            self._items = iter(self._loader)
        else:
            self._items = (self._source[p] for p in sampler)

    @property
    def position(self) -> int:
        """The first position this process has not consumed: where a resumed stream continues."""
        return self._position

    def next_batch(self) -> list[Drawn]:
        batch: list[Drawn] = []
        failures = 0
        while len(batch) < self.local_batch:
            position, item = next(self._items)
            self._position = position + 1  # the sampler jumps over other processes' chunks, resumed or not
            self.report.add(item)
            if isinstance(item, Skipped):
                failures += 1
                if failures >= 2 * len(self.dataset) * self._world and not batch:
                    raise RuntimeError("the dataset has no usable items: two epochs' worth were skipped\n"
                                       + self.report.summary())
                continue
            batch.append(Drawn(position, item))
        return batch

    def close(self) -> None:
        """Stop the worker processes (their iterator shuts them down when it is released)."""
        self._items, self._loader = iter(()), None
