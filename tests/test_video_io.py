"""Video files: every format decodes with the frames, size and fps written; failures leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vc2_core.video_io import check_output_path, output_format, read_video, to_frames, write_video


def moving_square(frames=6, height=32, width=48):
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 8:20, 4 + 5 * t:16 + 5 * t] = (230, 40, 40)
    return video


@pytest.mark.parametrize("name, fps", [("v.mp4", 28), ("v.gif", 10), ("v.webp", 28), ("frames", 28)])
def test_written_video_decodes(tmp_path, name, fps):
    frames = moving_square()
    path = write_video(tmp_path / name, frames, fps)
    decoded, decoded_fps = read_video(path)
    assert decoded.shape == frames.shape
    assert decoded_fps == pytest.approx(fps, rel=0.01)
    tolerance = 0 if name in ("frames", "v.gif") else 4  # PNG and this 2-colour gif are lossless; H.264/webp not
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() <= tolerance
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_gif_fps_is_rounded_to_hundredths(tmp_path):
    _, fps = read_video(write_video(tmp_path / "v.gif", moving_square(), 28))
    assert fps == pytest.approx(1000 / 40, rel=0.01)  # 1000/28 ms is stored as 40 ms (25 fps)


def test_failure_leaves_nothing_behind(tmp_path):
    odd = np.zeros((3, 31, 48, 3), dtype=np.uint8)  # H.264 in yuv420p needs even sizes
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "v.mp4", odd, 28)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_whole(tmp_path):
    path = tmp_path / "v.webp"
    write_video(path, moving_square(frames=3), 8)
    write_video(path, moving_square(frames=5), 8)
    assert read_video(path)[0].shape[0] == 5


@pytest.mark.parametrize("name, message", [
    ("missing/v.mp4", "does not exist"),
    ("v.avi", "unsupported video format"),
    ("still.png", "unsupported video format"),
])
def test_bad_output_paths(tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        check_output_path(tmp_path / name)


def test_png_folder_must_be_new_or_empty(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        check_output_path(tmp_path / "frames")
    assert output_format(tmp_path / "frames") == "png"


def test_to_frames_maps_minus_one_to_one_onto_bytes():
    video = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 4, 1, 1).expand(3, 4, 1, 1)
    frames = to_frames(video)
    assert frames.shape == (4, 1, 1, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 128, 255, 255]
