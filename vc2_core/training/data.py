"""Training data: video and image indexes, datasets that never crash on bad files, and the item stream.

Indexes
    videos: a CSV with a header (``path,caption[,fps,frames]``, or WebVid-10M's ``videoid,page_dir,name``),
    a JSONL index with the same fields, or a folder of videos with same-stem ``.txt`` captions.
    images: a folder of images with ``.txt`` captions, or a JSONL / CSV index (``path`` and ``caption``,
    or JourneyDB's ``prompt`` / ``img_path``). Relative paths point into ``root`` (default: the
    index's folder). Media files are not checked when an index is read (10M stats are slow); a
    missing file is reported when it is loaded.

Datasets (:class:`VideoClips`, :class:`Images`) load item ``index`` with a generator and return a
:class:`Sample`, or a :class:`Skipped` saying why not (one of :data:`REASONS`), never an exception.

The item stream (:class:`ItemStream`) deals items to one process in a seeded order: position p of
the endless stream is item ``perm_e[p % N]`` of epoch ``e = p // N``; positions come in chunks of
``local_batch`` and process r of W owns chunks r, r + W, ... A skipped item is reported and the
process takes its next position, so a batch is always full; once every item of the dataset has
been skipped with none usable in between, the stream raises. Each item's randomness comes from
``draw_generator(seed, p, purpose)``, so an item is treated the same whichever process, batch or
worker loads it, and ``position`` alone resumes a stream exactly. Decoding is in ``video_reader``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .video_reader import TooShort, read_clip

Tensor = torch.Tensor
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
REASONS = ("missing", "unreadable", "too short", "no caption", "bad index line")
CROPS = ("center", "random")
MAX_EXAMPLES = 20  # skipped items a report keeps by name


# ---- records -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    pixels: Tensor  # (3, t, H, W) float32 in [-1, 1]; t = clip frames for a video, 1 for an image
    caption: str
    fps: int  # the fps condition: round(source fps / frame stride) for a clip (>= 1); the dataset's for an image
    source: str  # the file it came from


@dataclass(frozen=True)
class Skipped:
    source: str  # a file, or "index.jsonl:17" for a bad index line
    reason: str  # one of REASONS
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown skip reason {self.reason!r}; expected one of {REASONS}")


@dataclass(frozen=True, slots=True)
class VideoEntry:
    path: Path
    caption: str
    fps: float | None = None  # the source frame rate, if the index gives it
    frames: int | None = None  # the source frame count, if the index gives it


@dataclass(frozen=True, slots=True)
class ImageEntry:
    path: Path
    caption: str


@dataclass(frozen=True)
class Drawn:
    key: int  # the stream position it was drawn at (unique over epochs)
    sample: Sample


@dataclass(frozen=True)
class Batch:
    pixels: Tensor  # (b, 3, t, H, W) float32 in [-1, 1]
    captions: list[str]
    fps: Tensor  # (b,) int64
    keys: Tensor  # (b,) int64 stream positions


# ---- deterministic randomness ------------------------------------------------------------------------------


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (blake2b of their JSON; not Python's per-process ``hash``)."""
    digest = hashlib.blake2b(json.dumps(list(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def draw_generator(seed: int, key: int, purpose: str) -> torch.Generator:
    """The CPU generator for one purpose ("augment", "noise", "dropout", ...) of the item drawn at position ``key``."""
    return torch.Generator().manual_seed(stable_seed(seed, purpose, key))


def epoch_permutation(seed: int, epoch: int, size: int) -> Tensor:
    """(size,) int64: the item order of one epoch of the stream."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(stable_seed(seed, "epoch", epoch)))


# ---- indexes -----------------------------------------------------------------------------------------------


class _BadLine(ValueError):
    """An index row that cannot become an entry (the message says why)."""


def read_video_index(path: str | Path, root: str | Path | None = None) -> tuple[list[VideoEntry], list[Skipped]]:
    """Entries of a CSV / JSONL index or a folder of captioned videos, and the lines or files skipped.

    Relative paths of an index point into ``root`` (default: the index's folder); a folder lists its own files.
    """
    return _read_index(Path(path), root, VIDEO_SUFFIXES, VideoEntry, _video_entry, "videos")


def read_image_index(path: str | Path, root: str | Path | None = None) -> tuple[list[ImageEntry], list[Skipped]]:
    """Entries of a folder of captioned images or a JSONL / CSV index, and the lines or files skipped.

    Relative paths of an index point into ``root`` (default: the index's folder); a folder lists its own files.
    """
    return _read_index(Path(path), root, IMAGE_SUFFIXES, ImageEntry, _image_entry, "images")


def _read_index(path: Path, root: str | Path | None, suffixes: tuple[str, ...], entry: type,
                from_row: Callable[[dict, Path], object], what: str) -> tuple[list, list[Skipped]]:
    if path.is_dir():
        found, skipped = _scan_folder(path, suffixes)
        return _non_empty([entry(p, c) for p, c in found], skipped, path, what)
    base = Path(root) if root is not None else path.parent
    entries, skipped = _entries(_read_rows(path, video=what == "videos"), lambda row: from_row(row, base))
    return _non_empty(entries, skipped, path, what)


def _scan_folder(folder: Path, suffixes: tuple[str, ...]) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """(media path, caption) for every media file under ``folder`` with a non-empty same-stem .txt."""
    found, skipped = [], []
    for media in sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
        text = media.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8", errors="replace").strip() if text.is_file() else ""
        if caption:
            found.append((media, caption))
        else:
            skipped.append(Skipped(str(media), "no caption", f"{text.name} is empty" if text.is_file()
                                   else f"no {text.name}"))
    return found, skipped


def _entries(rows: Iterator[tuple[str, object]], make: Callable[[dict], object]) -> tuple[list, list[Skipped]]:
    """``make(row)`` for every row that is a dict and makes an entry; the other rows as bad index lines."""
    entries, skipped = [], []
    for where, row in rows:
        try:
            if isinstance(row, _BadLine):
                raise row
            if not isinstance(row, dict):
                raise _BadLine("not a JSON object")
            entries.append(make(row))
        except _BadLine as error:
            skipped.append(Skipped(where, "bad index line", str(error)))
    return entries, skipped


def _read_rows(path: Path, *, video: bool) -> Iterator[tuple[str, object]]:
    """(``"index:line"``, row) for each row of a CSV or JSONL index; a row is whatever the line holds (a dict
    if well formed), or a _BadLine saying why the line could not be parsed."""
    if not path.is_file():
        raise ValueError(f"{path}: no such index file or folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path, video=video)
    if suffix in (".jsonl", ".json"):
        return _jsonl_rows(path)
    raise ValueError(f"{path}: an index is a .csv or .jsonl file, or a folder of media with .txt captions")


def _csv_rows(path: Path, *, video: bool) -> Iterator[tuple[str, object]]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        webvid = {"videoid", "page_dir", "name"} <= columns
        has_path = bool(columns & ({"path"} if video else {"path", "img_path"}))
        has_caption = bool(columns & ({"caption"} if video else {"caption", "prompt"}))
        if not (has_path and has_caption) and not (video and webvid):
            expected = "path,caption (or WebVid's videoid,page_dir,name)" if video else "path,caption (or prompt)"
            raise ValueError(f"{path}: the CSV header has {sorted(columns)}; expected the columns {expected}")
        rows = iter(reader)
        while True:
            try:
                row: object = next(rows)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over the csv module's size limit: the reader goes on after it
                row = _BadLine(f"bad CSV: {error}")
            yield f"{path}:{reader.line_num}", row


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                row = _BadLine(f"bad JSON: {error}")
            yield f"{path}:{number}", row


def _video_entry(row: dict, base: Path) -> VideoEntry:
    if not row.get("path") and row.get("videoid") and row.get("page_dir"):  # WebVid-10M's own CSV
        media, caption = f"{row['page_dir']}/{row['videoid']}.mp4", _caption(row, ("name",))
    else:
        media, caption = row.get("path"), _caption(row, ("caption",))
    fps = _number(row.get("fps"), "fps", float)
    frames = _number(row.get("frames"), "frames", int)
    return VideoEntry(_resolve(base, media), caption, fps, frames)


def _image_entry(row: dict, base: Path) -> ImageEntry:
    return ImageEntry(_resolve(base, row.get("path") or row.get("img_path")), _caption(row, ("caption", "prompt")))


def _resolve(base: Path, value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _BadLine("no path")
    path = Path(value.strip())
    return path if path.is_absolute() else base / path


def _caption(row: dict, columns: tuple[str, ...]) -> str:
    for column in columns:
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise _BadLine(f"no caption (column {' or '.join(columns)})")


def _number(value: object, name: str, kind: type) -> float | int | None:
    """An optional positive number of an index row: None for absent or empty, else float / int."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _BadLine(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number) or number <= 0 or (kind is int and not number.is_integer()):
        raise _BadLine(f"{name} must be a positive {'integer' if kind is int else 'number'}; got {value!r}")
    return kind(number)


def _non_empty(entries: list, skipped: list[Skipped], path: Path, what: str) -> tuple[list, list[Skipped]]:
    if not entries:
        examples = "; ".join(f"{s.source}: {s.reason}" + (f" ({s.detail})" if s.detail else "") for s in skipped[:3])
        raise ValueError(f"{path}: no usable {what} in this index ({len(skipped)} skipped"
                         + (f": {examples}" if examples else "") + ")")
    return entries, skipped


# ---- pixels ------------------------------------------------------------------------------------------------


def resize_crop(frames: np.ndarray, height: int, width: int, crop: str, generator: torch.Generator) -> Tensor:
    """uint8 frames (t, h, w, 3) -> float32 (3, t, height, width) in [-1, 1].

    Scaled (aspect kept, bilinear with antialiasing) to the smallest size covering the target, then cropped
    at the center or at an offset drawn from ``generator`` (``crop="random"``).
    """
    video = torch.from_numpy(np.require(frames, np.uint8, ["C", "W"])).permute(0, 3, 1, 2).float()  # (t, 3, h, w)
    h, w = video.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    if crop == "random":
        top = int(torch.randint(0, size[0] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, size[1] - width + 1, (1,), generator=generator))
    else:
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top:top + height, left:left + width]
    return (video / 127.5 - 1.0).clamp(-1.0, 1.0).transpose(0, 1).contiguous()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


def _check_size(height: int, width: int, crop: str) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be at least 1; got {height}x{width}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}; got {crop!r}")


# ---- datasets ----------------------------------------------------------------------------------------------


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
        _check_size(height, width, crop)
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
        _check_size(height, width, crop)
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


# ---- skip reports ------------------------------------------------------------------------------------------


@dataclass
class SkipReport:
    """What was skipped and why: counts by reason, the number of items seen, the first examples."""

    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason", "detail"}

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, item: object) -> None:
        """Count one item seen (a Sample, a Skipped, or anything a dataset returns); record it if skipped."""
        self.seen += 1
        if isinstance(item, Skipped):
            self.counts[item.reason] = self.counts.get(item.reason, 0) + 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"source": item.source, "reason": item.reason, "detail": item.detail})

    def merge(self, other: SkipReport) -> None:
        """Add another report's counts (another process, another stream) to this one."""
        self.seen += other.seen
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
        self.examples.extend(other.examples[:max(0, MAX_EXAMPLES - len(self.examples))])

    def summary(self) -> str:
        """One line of counts, then one line per recorded example."""
        share = 100.0 * self.skipped / self.seen if self.seen else 0.0
        order = [r for r in REASONS if r in self.counts] + sorted(set(self.counts) - set(REASONS))
        reasons = ", ".join(f"{reason} {self.counts[reason]}" for reason in order)
        lines = [f"skipped {self.skipped} of {self.seen} items ({share:.1f}%)" + (f": {reasons}" if reasons else "")]
        lines += [f"  {e['source']}: {e['reason']}" + (f" ({e['detail']})" if e["detail"] else "")
                  for e in self.examples]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"seen": self.seen, "counts": dict(self.counts), "examples": [dict(e) for e in self.examples]}

    @classmethod
    def from_dict(cls, data: dict) -> SkipReport:
        return cls(int(data["seen"]), {str(k): int(v) for k, v in data["counts"].items()},
                   [dict(e) for e in data["examples"]])


# ---- the stream --------------------------------------------------------------------------------------------


class _Positions(torch.utils.data.Dataset):
    """Map-style view of the stream for DataLoader workers: position p -> (p, item index, the item drawn there)."""

    def __init__(self, dataset: VideoClips | Images, seed: int):
        self.dataset, self.seed = dataset, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def index_of(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch != self._epoch:  # positions arrive in increasing order: one permutation is cached
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, len(self.dataset))
        return int(self._perm[offset])

    def __getitem__(self, position: int) -> tuple[int, int, Sample | Skipped]:
        index = self.index_of(position)
        return position, index, self.dataset.load(index, draw_generator(self.seed, position, "augment"))


class _OwnedPositions:
    """This process's positions from ``start`` on, endless: chunks c of ``local_batch`` with c % world == rank."""

    def __init__(self, start: int, local_batch: int, rank: int, world_size: int):
        self.start, self.local_batch, self.rank, self.world_size = start, local_batch, rank, world_size

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            chunk = position // self.local_batch
            if chunk % self.world_size == self.rank:
                yield position
                position += 1
            else:  # jump to the start of this process's next chunk
                position = (chunk + (self.rank - chunk) % self.world_size) * self.local_batch


def _identity(item: object) -> object:
    return item


class ItemStream:
    """The items one process trains on, in a seeded order, failures skipped and reported (see the module doc).

    ``dataset`` is anything with ``len`` and ``load(index, generator) -> item | Skipped`` (the media datasets,
    a latent cache). ``position`` is where to continue (a previous stream's ``position``).
    """

    def __init__(self, dataset: VideoClips | Images, *, seed: int, local_batch: int, rank: int = 0,
                 world_size: int = 1, position: int = 0, num_workers: int = 0, report: SkipReport | None = None):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        if local_batch < 1:
            raise ValueError(f"local_batch must be at least 1; got {local_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got rank {rank} of {world_size}")
        if position < 0 or num_workers < 0:
            raise ValueError(f"position and num_workers must be >= 0; got {position} and {num_workers}")
        self.dataset, self.local_batch = dataset, local_batch
        self.report = report if report is not None else SkipReport()
        self._position = position
        self._failed: set[int] = set()  # item indices skipped since the last usable item
        source = _Positions(dataset, seed)
        owned = _OwnedPositions(position, local_batch, rank, world_size)
        self._loader: torch.utils.data.DataLoader | None = None
        if num_workers > 0:
            self._loader = torch.utils.data.DataLoader(
                source, batch_size=None, sampler=owned, num_workers=num_workers, collate_fn=_identity,
                persistent_workers=True, generator=torch.Generator().manual_seed(stable_seed(seed, "workers", rank)))
            self._items: Iterator | None = iter(self._loader)  # the generator keeps the global RNG untouched
        else:
            self._items = map(source.__getitem__, owned)

    @property
    def position(self) -> int:
        """The first stream position this process has not consumed: where a resumed stream continues."""
        return self._position

    def next_batch(self) -> list[Drawn]:
        """The next ``local_batch`` usable items of this process, in stream order."""
        if self._items is None:
            raise RuntimeError("this ItemStream is closed")
        batch: list[Drawn] = []
        while len(batch) < self.local_batch:
            position, index, item = next(self._items)
            self._position = position + 1
            self.report.add(item)
            if isinstance(item, Skipped):
                self._failed.add(index)
                if len(self._failed) == len(self.dataset):
                    raise RuntimeError(f"the dataset has no usable items: all {len(self.dataset)} were skipped, "
                                       f"none loaded\n{self.report.summary()}")
                continue
            self._failed.clear()
            batch.append(Drawn(position, item))
        return batch

    def close(self) -> None:
        """Stop the worker processes (dropping the loader's iterator shuts them down); the stream is then closed."""
        self._items, self._loader = None, None

    def __enter__(self) -> ItemStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---- batching ----------------------------------------------------------------------------------------------


def collate(drawn: Sequence[Drawn]) -> Batch:
    """Stack drawn samples of one shape into a Batch."""
    if not drawn:
        raise ValueError("collate needs at least one item")
    shapes = {tuple(d.sample.pixels.shape) for d in drawn}
    if len(shapes) != 1:
        raise ValueError(f"items of different shapes cannot form a batch: {sorted(shapes)}")
    return Batch(pixels=torch.stack([d.sample.pixels for d in drawn]), captions=[d.sample.caption for d in drawn],
                 fps=torch.tensor([d.sample.fps for d in drawn], dtype=torch.long),
                 keys=torch.tensor([d.key for d in drawn], dtype=torch.long))
