"""Durable writes: every writer flushes its data before the rename that publishes it, and the rename after.

``vc2_core.files.sync_path`` is the project's one fsync; these tests replace it, for the test only, with a
recorder that notes each call (and whether the destination existed at that moment) and then does the real
fsync. A power loss cannot be simulated here: what is checked is that the calls are made, on the right
paths, in the right order (file(s), then the temporary folder, then the rename, then the parent folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import random_unet, tiny_unet_config
from tiny_media import make_images, make_videos, media_config

from vc2_core import files
from vc2_core.checkpoint import save_checkpoint
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.training.latent_cache import build_cache
from vc2_core.training.lora import inject_lora, save_lora
from vc2_core.training.trainer import data_sets, train
from vc2_core.video_io import write_video


@dataclass(frozen=True)
class Sync:
    path: Path
    target_existed: bool  # whether the watched destination existed when this fsync was made
    size: int | None  # a file's size when it was flushed (None: a folder)


class SyncLog:
    """Stands in for ``vc2_core.files.sync_path``: records each call, then does the real fsync."""

    def __init__(self, real):
        self.real, self.calls, self.target = real, [], None

    def watch(self, target: Path) -> Path:
        """Start a new record, noting in each call whether ``target`` exists; returns ``target``."""
        self.target, self.calls = target, []
        return target

    def __call__(self, path) -> None:
        path = Path(path)
        self.calls.append(Sync(path, self.target is not None and self.target.exists(),
                               None if path.is_dir() else path.stat().st_size))
        self.real(path)


@pytest.fixture
def syncs(monkeypatch) -> SyncLog:
    log = SyncLog(files.sync_path)
    monkeypatch.setattr(files, "sync_path", log)  # our module's seam, for this test only
    return log


def until_published(calls: list[Sync]) -> list[Sync]:
    """The calls up to the first one made after the watched destination appeared (the rename's own fsync)."""
    first = next(i for i, sync in enumerate(calls) if sync.target_existed)
    return calls[:first + 1]


def assert_file_published(calls: list[Sync], target: Path) -> None:
    """The last two fsyncs: a temporary file beside ``target`` before it existed, then the folder after the rename."""
    temporary, parent = calls[-2:]
    assert temporary.path.parent == target.parent and temporary.path != target
    assert not temporary.path.exists() and not temporary.target_existed  # renamed away, after its fsync
    assert temporary.size == target.stat().st_size  # flushed complete
    assert parent.path == target.parent and parent.target_existed  # the rename itself, flushed


def assert_folder_published(calls: list[Sync], target: Path) -> None:
    """The temporary folder's every file and folder flushed (each file before its folder), the folder last,
    before ``target`` existed; then ``target``'s parent after the rename."""
    inside = sorted(p.relative_to(target) for p in target.rglob("*"))
    *walk, temporary, parent = calls[-(len(inside) + 2):]
    assert parent.path == target.parent and parent.target_existed
    assert temporary.path.parent == target.parent and temporary.path != target and not temporary.path.exists()
    assert not any(sync.target_existed for sync in [*walk, temporary])
    relative = [sync.path.relative_to(temporary.path) for sync in walk]
    assert sorted(relative) == inside  # every file and subfolder, once
    order = {path: position for position, path in enumerate(relative)}
    for path, position in order.items():
        if (target / path).is_dir():  # a folder after what it holds
            assert all(order[child.relative_to(target)] < position for child in (target / path).iterdir())
        else:
            assert walk[position].size == (target / path).stat().st_size  # flushed complete


def test_write_atomically_syncs_the_file_before_the_rename_and_the_folder_after(syncs, tmp_path):
    target = tmp_path / "out.txt"
    files.write_text_atomically(target, "old")
    files.write_text_atomically(syncs.watch(target), "newer")  # over an existing file
    assert len(syncs.calls) == 2
    temporary, parent = syncs.calls
    assert temporary.path.parent == tmp_path and temporary.path.name.startswith(".out.txt.")
    assert temporary.size == len("newer") and not temporary.path.exists()  # flushed complete, then renamed
    assert parent.path == tmp_path and target.read_text() == "newer"


def test_publish_folder_syncs_every_file_and_folder_then_the_parent(syncs, tmp_path):
    temporary = Path(files.temporary_folder(tmp_path / "result"))
    (temporary / "sub" / "deeper").mkdir(parents=True)
    for name in ("a.bin", "sub/b.json", "sub/deeper/c.txt"):
        (temporary / name).write_text(name)
    files.publish_folder(temporary, syncs.watch(tmp_path / "result"))
    assert len(syncs.calls) == 3 + 3 + 1  # 3 files, 3 folders (the temporary one included), the parent
    assert_folder_published(syncs.calls, tmp_path / "result")


def test_make_folder_syncs_the_parent_of_each_new_folder(syncs, tmp_path):
    (tmp_path / "a").mkdir()
    files.make_folder(tmp_path / "a" / "b" / "c")
    assert [sync.path for sync in syncs.calls] == [tmp_path / "a", tmp_path / "a" / "b"]
    assert (tmp_path / "a" / "b" / "c").is_dir()


@pytest.mark.parametrize("name", ["clip.gif", "clip.mp4", "frames"])
def test_videos_are_published_durably(syncs, name, tmp_path):
    target = syncs.watch(tmp_path / name)
    write_video(target, np.zeros((2, 8, 8, 3), np.uint8), 8)
    if name == "frames":
        assert_folder_published(syncs.calls, target)  # a folder of PNGs
    else:
        assert len(syncs.calls) == 2
        assert_file_published(syncs.calls, target)


def test_lora_and_model_files_are_published_durably(syncs, tmp_path):
    unet = random_unet(tiny_unet_config())
    inject_lora(unet, ["spatial"], rank=2)
    target = syncs.watch(tmp_path / "lora.safetensors")
    save_lora(unet, target, family="tiny", groups=["spatial"], rank=2, alpha=None, targets="attention")
    assert len(syncs.calls) == 2
    assert_file_published(syncs.calls, target)

    model = VideoCrafter(preset("tiny"))
    for name in ("model.safetensors", "model.ckpt"):
        target = syncs.watch(tmp_path / name)
        save_checkpoint(model, target)
        assert len(syncs.calls) == 2
        assert_file_published(syncs.calls, target)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    base = tmp_path_factory.mktemp("media")
    return {"videos": make_videos(base / "videos", broken=False),
            "images": make_images(base / "images", count=2, broken=False)}


def test_latent_cache_items_are_published_durably_before_cache_json(syncs, media, tmp_path):
    config = media_config("tiny_stage1.yaml", tmp_path / "run", media)
    model = VideoCrafter(preset("tiny"))
    datasets, _ = data_sets(config, model.config, kinds=("images",))
    root = tmp_path / "cache"
    syncs.watch(root / "cache.json")
    info = build_cache(model, datasets, root, seed=0, device="cpu", show_progress=False)
    count = info["kinds"]["images"]["count"]
    assert count >= 1
    assert_file_published(syncs.calls, root / "cache.json")
    assert not any(sync.target_existed for sync in syncs.calls[:-1])  # everything flushed before cache.json
    folders = [sync.path for sync in syncs.calls if sync.size is None]
    # the new cache folder's name, uncond's rename, the new images folder's name, each item's rename, cache.json's
    assert folders == [tmp_path, root, root] + [root / "images"] * count + [root]
    assert len(syncs.calls) - len(folders) == 1 + count + 1  # uncond, the items, cache.json: each file flushed


def test_a_run_checkpoint_is_published_durably(syncs, media, tmp_path):
    config = media_config("tiny_stage1.yaml", tmp_path / "run", media, run={"max_steps": 1}, checkpoint={"every": 1})
    target = syncs.watch(tmp_path / "run" / "checkpoints" / "step-00000001")
    train(config, show_progress=False)
    assert_folder_published(until_published(syncs.calls), target)
    assert {"state", "model.safetensors", "progress.json"} <= {p.name for p in target.iterdir()}
    assert any((target / "state").iterdir())  # accelerate's files are among those the walk flushed
    assert json.loads((target / "progress.json").read_text())["step"] == 1
