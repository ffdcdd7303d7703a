"""The real `vc2` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def vc2(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vc2_core.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.parametrize("family, manifest", [("vc2-512", "vc2_512_manifest.json"),
                                              ("vc1-512", "vc1_512_manifest.json")])
def test_preset_manifest_equals_the_released_manifest(reference_dir, tmp_path, family, manifest):
    out = tmp_path / "m.json"
    result = vc2("inspect", "--preset", family, "--manifest", out)
    assert result.returncode == 0, result.stderr
    ours = json.loads(out.read_text())["keys"]
    released = json.loads((reference_dir / manifest).read_text())["keys"]
    assert list(ours) == list(released)  # key for key, in checkpoint order
    assert {k: v[0] for k, v in ours.items()} == {k: v[0] for k, v in released.items()}  # shape for shape


def test_group_counts_equal_the_split_file(reference_dir):
    result = vc2("inspect", "--preset", "vc2-512", "--json")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)["unet_groups"]
    split = json.loads((reference_dir / "vc2_unet_temporal_spatial_split.json").read_text())["groups"]
    assert groups["spatial"] == split["spatial"]["total"] == 865_910_724
    assert groups["temporal"] == split["temporal"]["total"] == 545_323_136
    assert groups["conditioning"] == 2_050_560


def test_init_then_inspect(tmp_path):
    path = tmp_path / "tiny.safetensors"
    result = vc2("init", "--preset", "tiny", "--out", path, "--randomize-zero-init")
    assert result.returncode == 0, result.stderr
    assert "random weights, not a trained model" in result.stdout
    result = vc2("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "family:      tiny" in result.stdout and "key problems: none" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["inspect", "missing.ckpt"], "no such checkpoint file"),
    (["inspect"], "give a checkpoint file, or --preset NAME"),
    (["init", "--preset", "tiny", "--out", "model.bin"], "must end in .safetensors"),
    (["init", "--preset", "tiny", "--out", "no/such/dir/m.safetensors"], "does not exist"),
])
def test_bad_input_exits_1_with_a_message(tmp_path, args, message):
    result = vc2(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_demo_rejects_an_unknown_preset():
    result = vc2("demo", "--preset", "huge")
    assert result.returncode == 2 and "invalid choice" in result.stderr
