"""Reading training indexes: which media files there are and their captions.

    videos: a CSV with a header (``path,caption[,fps,frames]``, or WebVid-10M's ``videoid,page_dir,name``),
    a JSONL index with the same fields, or a folder of videos with same-stem ``.txt`` captions.
    images: a folder of images with ``.txt`` captions, or a JSONL / CSV index (``path`` and ``caption``,
    or JourneyDB's ``prompt`` / ``img_path``). Relative paths point into ``root`` (default: the
    index's folder). Media files are not checked when an index is read (10M stats are slow); a
    missing file is reported when it is loaded. A line that cannot become an entry is a
    :class:`~.skips.Skipped` "bad index line" (or "no caption" for an uncaptioned file of a folder).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ...messages import first_few
from .skips import Skipped

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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
        examples = first_few([f"{s.source}: {s.reason}" + (f" ({s.detail})" if s.detail else "") for s in skipped],
                             3, "; ")
        raise ValueError(f"{path}: no usable {what} in this index ({len(skipped)} skipped"
                         + (f": {examples}" if examples else "") + ")")
    return entries, skipped
