"""Training data: indexes, and datasets that skip and report bad files (the stream: test_training_stream.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_media import FPS, LENGTH, SIZE, all_clips, frame_offsets, good_clips, load, make_media

from vc2_core.training import video_reader
from vc2_core.training.data import (
    ImageEntry,
    Images,
    Sample,
    Skipped,
    VideoClips,
    VideoEntry,
    draw_generator,
    read_image_index,
    read_video_index,
    resize_crop,
)
from vc2_core.video_io import read_video


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


# ---- indexes -----------------------------------------------------------------------------------------------


def test_csv_index_resolves_paths_and_reports_bad_lines(tmp_path):
    index = tmp_path / "index.csv"
    index.write_text("path,caption,fps,frames\n"
                     "a.mp4, a cat ,30,120\n"
                     "/abs/b.mp4,a dog,,\n"
                     "c.mp4,a bird,fast,10\n"
                     "d.mp4,,25,10\n"
                     "e.mp4,a fish,25,2.5\n")
    entries, skipped = read_video_index(index)
    assert entries == [VideoEntry(tmp_path / "a.mp4", "a cat", 30.0, 120), VideoEntry(Path("/abs/b.mp4"), "a dog")]
    assert [(s.source, s.reason) for s in skipped] == [
        (f"{index}:4", "bad index line"), (f"{index}:5", "bad index line"), (f"{index}:6", "bad index line")]
    assert "fps is not a number" in skipped[0].detail and "no caption" in skipped[1].detail
    assert read_video_index(index, root="/data")[0][0].path == Path("/data/a.mp4")


def test_webvid_csv_columns(tmp_path):
    index = tmp_path / "results_10M_train.csv"
    index.write_text('videoid,contentUrl,duration,page_dir,name\n'
                     '1066,https://x/1066.mp4,PT00H00M11S,006001_006050,"Aerial shot, sunrise"\n')
    entries, skipped = read_video_index(index, root="/webvid")
    assert entries == [VideoEntry(Path("/webvid/006001_006050/1066.mp4"), "Aerial shot, sunrise")] and not skipped


def test_jsonl_index_skips_malformed_lines(tmp_path):
    index = tmp_path / "index.jsonl"
    lines = [{"path": "a.mp4", "caption": "one", "fps": 24}, {"path": "b.mp4"}, "not json {", [1, 2],
             {"path": "c.mp4", "caption": "three", "fps": "x"}, {"caption": "no path"}, {"path": "d.mp4", "caption":
             "four", "frames": 48}]
    index.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines[:3])
                     + "\n\n" + "\n".join(json.dumps(line) for line in lines[3:]) + "\n")
    entries, skipped = read_video_index(index)
    assert entries == [VideoEntry(tmp_path / "a.mp4", "one", 24.0), VideoEntry(tmp_path / "d.mp4", "four", None, 48)]
    assert [s.source for s in skipped] == [f"{index}:{n}" for n in (2, 3, 5, 6, 7)]  # line 4 is blank
    assert {s.reason for s in skipped} == {"bad index line"}
    assert "bad JSON" in skipped[1].detail and "not a JSON object" in skipped[2].detail


def test_folder_index_finds_captioned_videos_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, caption in [("b.mp4", "bee"), ("sub/a.MOV", " ant \n"), ("c.webm", ""), ("d.gif", None),
                          ("notes.pdf", "not a video")]:
        (tmp_path / name).write_bytes(b"")
        if caption is not None:
            (tmp_path / name).with_suffix(".txt").write_text(caption)
    entries, skipped = read_video_index(tmp_path)
    assert entries == [VideoEntry(tmp_path / "b.mp4", "bee"), VideoEntry(tmp_path / "sub/a.MOV", "ant")]
    assert [(Path(s.source).name, s.reason) for s in skipped] == [("c.webm", "no caption"), ("d.gif", "no caption")]


def test_index_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no such index"):
        read_video_index(tmp_path / "nothing.csv")
    (tmp_path / "empty.jsonl").write_text('{"path": "a.mp4"}\n')
    with pytest.raises(ValueError, match=r"no usable videos in this index \(1 skipped"):
        read_video_index(tmp_path / "empty.jsonl")
    (tmp_path / "columns.csv").write_text("file,text\na.mp4,hello\n")
    with pytest.raises(ValueError, match="expected the columns path,caption"):
        read_video_index(tmp_path / "columns.csv")
    (tmp_path / "index.txt").write_text("a.mp4\n")
    with pytest.raises(ValueError, match="a .csv or .jsonl"):
        read_image_index(tmp_path / "index.txt")


def test_image_indexes(media, tmp_path):
    entries, skipped = read_image_index(media["images"])
    assert [e.path.name for e in entries] == ["alpha.png", "corrupt.png", "grey.png", "im0.png", "im1.png",
                                              "im2.png", "photo.jpg"]
    assert entries[3].caption == "image 0"
    assert [(Path(s.source).name, s.reason) for s in skipped] == [("uncaptioned.png", "no caption")]
    journeydb = tmp_path / "train.jsonl"
    journeydb.write_text('{"img_path": "imgs/1.jpg", "prompt": "a castle", "Task1": {}}\n'
                         '{"path": "imgs/2.jpg", "caption": "a river"}\n{"path": "imgs/3.jpg"}\n')
    entries, skipped = read_image_index(journeydb)
    assert entries == [ImageEntry(tmp_path / "imgs/1.jpg", "a castle"), ImageEntry(tmp_path / "imgs/2.jpg", "a river")]
    assert [s.reason for s in skipped] == ["bad index line"]
    (tmp_path / "images.csv").write_text("path,prompt\nx.png,an x\n")
    assert read_image_index(tmp_path / "images.csv", root="/r")[0] == [ImageEntry(Path("/r/x.png"), "an x")]


# ---- datasets ----------------------------------------------------------------------------------------------


def test_clips_and_skips_by_reason(media):
    dataset = all_clips(media)
    items = [load(dataset, i) for i in range(len(dataset))]
    for sample in items[:4]:
        assert isinstance(sample, Sample)
        assert sample.pixels.shape == (3, 8, 16, 16) and sample.pixels.dtype == torch.float32
        assert -1.0 <= sample.pixels.min() < sample.pixels.max() <= 1.0
        assert sample.fps == FPS and sample.caption.endswith("square")
    reasons = [(Path(s.source).name, s.reason) for s in items[4:]]
    assert reasons == [("short.mp4", "too short"), ("zero.mp4", "unreadable"), ("random.mp4", "unreadable"),
                       ("gone.mp4", "missing")]
    assert items[4].detail == "5 frames, 8 needed"
    assert items[5].detail and "\n" not in items[5].detail and items[6].detail


def test_frames_are_taken_every_stride(media):
    reference, _ = read_video(media["good"][1])
    dataset = good_clips(media, height=SIZE[0], width=SIZE[1], frame_stride=(3, 3))  # source size: no resampling
    for key in range(3):
        sample = load(dataset, 1, key)
        offsets = frame_offsets(sample, reference)
        assert np.diff(offsets).tolist() == [3] * 7 and sample.fps == round(FPS / 3)
        expected = torch.from_numpy(reference[offsets]).permute(3, 0, 1, 2).float() / 127.5 - 1
        assert torch.allclose(sample.pixels, expected, atol=1e-6)


def test_fps_condition_follows_the_drawn_stride(media):
    reference, _ = read_video(media["good"][0])
    dataset = good_clips(media, height=SIZE[0], width=SIZE[1], frame_stride=(1, 4))
    strides = {}
    for key in range(10):
        sample = load(dataset, 0, key)
        stride = int(np.diff(frame_offsets(sample, reference))[0])
        assert sample.fps == max(1, round(FPS / stride))
        strides[key] = stride
    assert len(set(strides.values())) > 1  # the stride (and the fps condition) varies across draws
    assert set(strides.values()) <= {1, 2, 3}  # 4 does not fit 8 frames into 24: reduced to 3
    entry = VideoEntry(media["good"][0], "index fps", fps=30.0)
    sample = VideoClips([entry], frames=8, height=16, width=16, frame_stride=(5, 5)).load(0, draw_generator(0, 0, "a"))
    assert sample.fps == round(30 / 3)  # the index's fps wins over the file's; stride 5 reduced to 3


def test_overstated_length_uses_the_last_frames(media):
    reference, _ = read_video(media["good"][2])
    entry = VideoEntry(media["good"][2], "says 100 frames", frames=100)
    dataset = VideoClips([entry], frames=8, height=SIZE[0], width=SIZE[1], frame_stride=(4, 4))
    for key in range(3):
        sample = load(dataset, 0, key)
        assert frame_offsets(sample, reference) == list(range(2, 24, 3))  # the last 22 frames at stride 3
        assert sample.fps == FPS // 3
    short = VideoClips([VideoEntry(media["clips"] / "short.mp4", "short", frames=100)], frames=8, height=16, width=16)
    skipped = load(short, 0)
    assert skipped.reason == "too short" and skipped.detail.startswith("5 frames, 8 needed")


def test_unknown_length_is_counted(media, monkeypatch):
    opened = video_reader.VideoFile.__init__

    def without_length(self, path):
        opened(self, path)
        self.length = None

    monkeypatch.setattr(video_reader.VideoFile, "__init__", without_length)
    reference, _ = read_video(media["good"][3])
    sample = load(good_clips(media, height=SIZE[0], width=SIZE[1], frame_stride=(3, 3)), 3, key=5)
    offsets = frame_offsets(sample, reference)
    assert np.diff(offsets).tolist() == [3] * 7 and offsets[-1] < LENGTH


def test_gif_clip(media):
    sample = VideoClips([VideoEntry(media["gif"], "gif")], frames=6, height=16, width=24).load(0, torch.Generator())
    assert sample.pixels.shape == (3, 6, 16, 24) and sample.fps == 25  # gif durations: 40 ms


def test_center_and_random_crops():
    frames = np.random.default_rng(0).integers(0, 256, (2, 20, 40, 3), dtype=np.uint8)
    full = resize_crop(frames, 10, 20, "center", torch.Generator())  # (3, 2, 10, 20): only scaled
    assert full.shape == (3, 2, 10, 20)
    assert torch.equal(resize_crop(frames, 10, 10, "center", torch.Generator()), full[..., 5:15])
    lefts = set()
    for seed in range(12):
        crop = resize_crop(frames, 10, 10, "random", torch.Generator().manual_seed(seed))
        left = [x for x in range(11) if torch.equal(crop, full[..., x:x + 10])]
        assert len(left) == 1
        lefts.add(left[0])
    assert len(lefts) > 3
    same = resize_crop(frames, 20, 40, "random", torch.Generator())
    assert torch.allclose(same, torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)


def test_images(media):
    entries, _ = read_image_index(media["images"])
    entries.append(ImageEntry(media["images"] / "gone.png", "missing"))
    dataset = Images(entries, height=16, width=16, crop="random", fps=12)
    items = {Path(e.path).name: load(dataset, i) for i, e in enumerate(entries)}
    assert items["corrupt.png"].reason == "unreadable" and items["gone.png"].reason == "missing"
    for name in ("alpha.png", "grey.png", "im0.png", "photo.jpg"):
        sample = items[name]
        assert sample.pixels.shape == (3, 1, 16, 16) and sample.pixels.dtype == torch.float32 and sample.fps == 12
        assert -1.0 <= sample.pixels.min() < sample.pixels.max() <= 1.0
    grey = items["grey.png"].pixels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_loading_is_deterministic_and_datasets_pickle(media):
    dataset = good_clips(media, frame_stride=(1, 4), crop="random")
    first = load(dataset, 2, key=11)
    again = pickle.loads(pickle.dumps(dataset)).load(2, draw_generator(0, 11, "augment"))
    assert torch.equal(first.pixels, again.pixels) and first.fps == again.fps
    assert not torch.equal(first.pixels, load(dataset, 2, key=12).pixels)


def test_constructor_arguments_are_checked(media):
    entries = [VideoEntry(media["good"][0], "x")]
    for settings, message in [({"frames": 0}, "frames"), ({"height": 0}, "height and width"),
                              ({"frame_stride": (3, 2)}, "frame_stride"), ({"frame_stride": (0, 2)}, "frame_stride"),
                              ({"crop": "left"}, "crop"), ({"default_fps": 0}, "default_fps")]:
        with pytest.raises(ValueError, match=message):
            VideoClips(entries, **{"frames": 8, "height": 16, "width": 16, **settings})
    with pytest.raises(ValueError, match="crop"):
        Images([ImageEntry(Path("a.png"), "a")], height=8, width=8, crop="top")
    with pytest.raises(ValueError, match="unknown skip reason"):
        Skipped("a.mp4", "broken")
