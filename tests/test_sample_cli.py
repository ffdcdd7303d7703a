"""`vc2 init --preset tiny` then `vc2 sample`, through the installed command, and its error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vc2_core.cli import main
from vc2_core.video_io import read_video

VC2 = Path(sys.executable).parent / "vc2"  # the console script `pip install` puts next to the interpreter


def vc2(*args, cwd=None) -> subprocess.CompletedProcess:
    assert VC2.is_file(), f"the vc2 command is not installed next to {sys.executable} (pip install -e .)"
    return subprocess.run([str(VC2), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    result = vc2("init", "--preset", "tiny", "--out", path, "--randomize-zero-init")
    assert result.returncode == 0, result.stderr
    return path


SMALL = ["--frames", "6", "--height", "32", "--width", "48", "--steps", "2"]


@pytest.mark.parametrize("name, fps, expected_fps", [("video.mp4", 12, 12), ("video.gif", 10, 10),
                                                     ("video.webp", 12, 12)])
def test_sample_writes_a_video_that_decodes(tiny_checkpoint, tmp_path, name, fps, expected_fps):
    out = tmp_path / name
    result = vc2("sample", "--ckpt", tiny_checkpoint, "--prompt", "a red ball rolls left", "--out", out,
                 "--fps", fps, *SMALL)
    assert result.returncode == 0, result.stderr
    frames, decoded_fps = read_video(out)
    assert frames.shape == (6, 32, 48, 3)
    assert decoded_fps == pytest.approx(expected_fps, rel=0.01)
    assert frames.std() > 0  # not a blank video
    assert "step/s" in result.stderr  # the progress bar
    assert "done: 1 video(s)" in result.stdout and "peak RSS" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing else left behind


def test_several_prompts_and_png_frames(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n\na blue cube\n")
    result = vc2("sample", "--ckpt", tiny_checkpoint, "--prompts", prompts, "--out", tmp_path / "clip",
                 "--sampler", "dpmpp_2m", "--batch-size", "2", "--seed", "5", *SMALL)
    assert result.returncode == 0, result.stderr
    for index, seed in ((0, 5), (1, 6)):
        frames, fps = read_video(tmp_path / f"clip_{index:03d}")
        assert frames.shape == (6, 32, 48, 3) and fps == 8  # the tiny model's fps
        assert f"seed {seed}" in result.stdout + result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--height", "30"], "height 30: must be a positive multiple of 4"),
    (["--sampler", "dpmpp_2m", "--eta", "1"], "dpmpp_2m is deterministic"),
    (["--frames", "8", "--context-frames", "4", "--context-overlap", "4"], "context overlap must be in [0, 3]"),
])
def test_settings_checked_against_the_checkpoint(tiny_checkpoint, tmp_path, capsys, extra, message):
    code = main(["sample", "--ckpt", str(tiny_checkpoint), "--prompt", "x", "--out", str(tmp_path / "v.mp4"), *extra])
    assert code == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_and_foreign_checkpoints(tmp_path, capsys):
    out = str(tmp_path / "v.mp4")
    assert main(["sample", "--ckpt", str(tmp_path / "none.ckpt"), "--prompt", "x", "--out", out]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err
    foreign = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, foreign)
    assert main(["sample", "--ckpt", str(foreign), "--prompt", "x", "--out", out]) == 1
    assert "not a VideoCrafter checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd.safetensors"]


@pytest.mark.parametrize("out, message", [("missing/v.mp4", "does not exist"), ("v.avi", "unsupported video format")])
def test_bad_output_path_is_refused_before_loading(tmp_path, capsys, out, message):
    # the checkpoint does not exist either: the output path is checked first
    assert main(["sample", "--ckpt", str(tmp_path / "none.ckpt"), "--prompt", "x", "--out", str(tmp_path / out)]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--cfg", "-2"], "argument --cfg: must be >= 0, got -2"),
    (["--sampler", "plms"], "argument --sampler: invalid choice: 'plms'"),
    (["--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
])
def test_bad_numbers_and_names_are_refused_by_the_parser(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "--ckpt", "x.ckpt", "--prompt", "x", "--out", str(tmp_path / "v.mp4"), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_prompt_file(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n  \n")
    assert main(["sample", "--ckpt", "x.ckpt", "--prompts", str(prompts), "--out", str(tmp_path / "v.mp4")]) == 1
    assert "no prompts (one per line)" in capsys.readouterr().err
