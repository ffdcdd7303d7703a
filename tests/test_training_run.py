"""The training loop end to end on the tiny model and tiny media: stages, checkpoints, resume, skips, NaN, LoRA, cache.

The runs are in-process (``train``) except where a process boundary is the point (SIGKILL, the CLI).
A module-scoped stage-1 run is the base the stage-2 tests fine-tune.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_media import make_images, make_videos, media_config

from vc2_core.checkpoint import load_checkpoint, read_checkpoint
from vc2_core.config import preset
from vc2_core.keys import UNET_PREFIX
from vc2_core.model import split_official_state_dict
from vc2_core.modules import UNetModel
from vc2_core.parameter_groups import Group, classify_unet_parameters
from vc2_core.training.checkpoints import EXIT_INSIDE_WRITE, EXIT_INSIDE_WRITE_STATUS
from vc2_core.training.engine_state import UntrustedState
from vc2_core.training.trainer import NonFiniteLoss, train
from vc2_core.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "trainers" / "configs"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    base = tmp_path_factory.mktemp("media")
    return {"videos": make_videos(base / "videos"), "images": make_images(base / "images")}


def unet_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    state, _ = read_checkpoint(checkpoint)
    return split_official_state_dict(state)["unet"]


def groups_of(unet_state_names) -> dict[str, Group]:
    """The group of every UNet parameter name of the tiny model (built on the meta device)."""
    with torch.device("meta"):
        unet = UNetModel(preset("tiny").unet)
    info = classify_unet_parameters(unet)
    return {name: info[name].group for name in unet_state_names if name in info}


@pytest.fixture(scope="module")
def stage1(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    config = media_config("tiny_stage1.yaml", out, media, run={"max_steps": 6}, checkpoint={"every": 3})
    return train(config, show_progress=False)


def test_stage1_writes_checkpoints_logs_and_reports_skipped_files(stage1):
    out = stage1.output_dir
    assert stage1.steps == 6 and stage1.final_checkpoint.name == "step-00000006"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    record = json.loads((out / "summary.json").read_text())
    reasons = record["skip_report"]["counts"]
    assert reasons.get("unreadable", 0) >= 1  # corrupt.mp4 (and broken.png if the image stream reached it)
    assert reasons.get("no caption") == 1  # uncaptioned.mp4, reported from the index
    assert "skipped" in stage1.skipped_items
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(line["loss"])) for line in lines)
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # tensorboard


def test_a_trained_checkpoint_is_an_official_layout_model_that_samples(stage1, tmp_path):
    path = stage1.final_checkpoint / "model.safetensors"
    result = subprocess.run([sys.executable, "-m", "vc2_core.cli", "inspect", str(path), "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["family"] == "tiny"
    out = tmp_path / "v.gif"
    subprocess.run([sys.executable, "-m", "vc2_core.cli", "sample", "--ckpt", str(path), "--prompt", "a red square",
                    "--out", str(out), "--steps", "2", "--frames", "4"], check=True, capture_output=True)
    frames, _ = read_video(out)
    assert frames.shape[0] == 4


def test_stage2_changes_only_spatial_tensors(stage1, media, tmp_path):
    base = stage1.final_checkpoint / "model.safetensors"
    config = media_config("tiny_stage2.yaml", tmp_path / "run", media, model={"checkpoint": str(base)},
                         run={"max_steps": 3}, checkpoint={"every": 3})
    summary = train(config, show_progress=False)
    before, after = unet_tensors(base), unet_tensors(summary.final_checkpoint / "model.safetensors")
    groups = groups_of(before)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(groups[name] == Group.SPATIAL for name in changed)
    frozen = [n for n, g in groups.items() if g != Group.SPATIAL]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)  # temporal + fps: bit-identical
    vae_text_before, vae_text_after = read_checkpoint(base)[0], read_checkpoint(
        summary.final_checkpoint / "model.safetensors")[0]
    assert all(torch.equal(v, vae_text_after[k]) for k, v in vae_text_before.items() if not k.startswith(UNET_PREFIX))


def test_partial_stage_leaves_spatial_tensors_identical(stage1, media, tmp_path):
    base = stage1.final_checkpoint / "model.safetensors"
    config = media_config("tiny_stage1.yaml", tmp_path / "run", media, model={"checkpoint": str(base), "preset": None},
                         stage={"name": "partial"}, run={"max_steps": 2}, checkpoint={"every": 2})
    summary = train(config, show_progress=False)
    before, after = unet_tensors(base), unet_tensors(summary.final_checkpoint / "model.safetensors")
    groups = groups_of(before)
    assert all(torch.equal(before[n], after[n]) for n, g in groups.items() if g == Group.SPATIAL)
    assert any(not torch.equal(before[n], after[n]) for n, g in groups.items() if g == Group.TEMPORAL)


def test_model_attention_is_the_backend_of_the_run(media, tmp_path):
    # xformers needs CUDA: a run under the config's backend stops at its first step, saying why
    config = media_config("tiny_stage1.yaml", tmp_path / "run", media, model={"attention": "xformers"},
                          run={"max_steps": 1})
    with pytest.raises(RuntimeError, match="attention backend 'xformers' cannot run here: CUDA tensors only"):
        train(config, show_progress=False)


class _MakesMarker:
    """Unpickled by a full unpickler, this creates the folder ``marker``: the proof that a pickle's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl"])
def test_resume_refuses_a_state_pickle_that_would_run_code(stage1, media, name, tmp_path):
    # accelerate reads both with torch.load; a refused random_states file it would skip silently
    out, marker = tmp_path / "run", tmp_path / "code_ran"
    shutil.copytree(stage1.output_dir, out)
    planted = out / "checkpoints" / "step-00000006" / "state" / name
    assert planted.is_file()  # the file accelerate wrote there is replaced
    torch.save({"state": {}, "param_groups": [], "payload": _MakesMarker(marker)}, planted)
    torch.load(planted, weights_only=False)  # the payload is live: a full unpickler runs it
    assert marker.is_dir()
    marker.rmdir()
    config = media_config("tiny_stage1.yaml", out, media, run={"max_steps": 7}, checkpoint={"every": 3})
    with pytest.raises(UntrustedState, match=rf"state/{re.escape(name)}: refused to resume: its pickle calls "
                                             r"os\.makedirs, which could run code .* nothing in it was executed"):
        train(config, resume="auto", show_progress=False)
    assert not marker.exists()
    assert not (out / "checkpoints" / "step-00000007").exists()


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vc2_core.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def cli_overrides(out: Path, media: dict, **values) -> list[str]:
    items = {"run.output_dir": str(out), "videos.index": str(media["videos"]), "images.index": str(media["images"]),
             **values}
    return [arg for key, value in items.items() for arg in ("--set", f"{key}={value}")]


KILL_SETTINGS = {"run.max_steps": 8, "checkpoint.every": 2, "checkpoint.keep_last": 10}


def train_args(out: Path, media: dict, *extra: str) -> list[str]:
    """``vc2 train`` of the kill tests: tiny stage 1, 8 steps, a checkpoint every 2, all kept."""
    return ["train", "--config", str(CONFIGS / "tiny_stage1.yaml"), "--no-progress", *extra,
            *cli_overrides(out, media, **KILL_SETTINGS)]


@pytest.fixture(scope="module")
def uninterrupted(media, tmp_path_factory) -> Path:
    """The checkpoints folder of the kill tests' run, done without interruption."""
    out = tmp_path_factory.mktemp("uninterrupted")
    straight = run_cli(train_args(out, media))
    assert straight.wait(timeout=300) == 0, straight.stdout.read()
    return out / "checkpoints"


def assert_same_model(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # tolerance 0: bit-identical on the CPU


def test_sigkill_and_resume_equals_an_uninterrupted_run(uninterrupted, media, tmp_path):
    killed_dir = tmp_path / "b"
    killed = run_cli(train_args(killed_dir, media))
    deadline = time.monotonic() + 300
    while not (killed_dir / "checkpoints" / "step-00000004" / "progress.json").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (killed_dir / "summary.json").exists()  # it really died mid-run
    resumed = run_cli(train_args(killed_dir, media, "--resume", "auto"))
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resuming from" in output
    assert_same_model(uninterrupted / "step-00000008", killed_dir / "checkpoints" / "step-00000008")


def test_exit_inside_a_checkpoint_write_is_ignored_on_resume(uninterrupted, media, tmp_path):
    # The fault is injected, not timed: the run exits (os._exit, no cleanup) inside the write of checkpoint 6,
    # after its engine state and weights, before its progress.json (vc2_core/training/checkpoints.py).
    out, root = tmp_path / "run", tmp_path / "run" / "checkpoints"
    killed = run_cli(train_args(out, media), env={**os.environ, EXIT_INSIDE_WRITE: "6"})
    output = killed.communicate(timeout=300)[0]
    assert killed.returncode == EXIT_INSIDE_WRITE_STATUS, output
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000004", "step-00000006.tmp"]
    partial = root / "step-00000006.tmp"
    assert (partial / "state").is_dir() and (partial / "model.safetensors").is_file()  # half-written ...
    assert not (partial / "progress.json").exists()  # ... and incomplete
    load_checkpoint(root / "step-00000004" / "model.safetensors")  # the previous one is intact

    resumed = run_cli(train_args(out, media, "--resume", "auto"))
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert f"resuming from {root / 'step-00000004'}" in output  # the partial folder is not a checkpoint
    assert sorted(p.name for p in root.iterdir()) == [f"step-0000000{n}" for n in (2, 4, 6, 8)]  # .tmp removed
    for step in ("step-00000006", "step-00000008"):
        assert_same_model(uninterrupted / step, root / step)


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(media, tmp_path):
    config = media_config("tiny_stage1.yaml", tmp_path / "run", media, run={"max_steps": 12},
                         optim={"lr": 1e30, "max_grad_norm": None}, checkpoint={"every": 1, "keep_last": 20})
    with pytest.raises(NonFiniteLoss, match=r"the loss is (nan|inf).*last good checkpoint is .*step-0000000\d"):
        train(config, show_progress=False)
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints and not any(p.name.endswith(".tmp") for p in checkpoints)
    load_checkpoint(checkpoints[-1] / "model.safetensors")

    skipping = config.replace("run", nan="skip", output_dir=str(tmp_path / "skip"))
    summary = train(skipping, show_progress=False)
    assert summary.steps == 12 and summary.skipped_steps >= 1
