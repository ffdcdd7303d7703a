"""Data parallelism: two gloo processes equal one process with the same global batch, and so does accumulation.

AdamW divides by sqrt(v): for parameters whose gradient is nearly zero (behind the zero-initialised
output layers of a fresh model) it turns float-order differences between an all-reduced and a
single-batch gradient into full-size steps of opposite sign. These comparisons therefore run with
``optim.eps = 1`` (updates proportional to the gradient), where such differences stay small, and
a run on different data is shown to differ by orders of magnitude more.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_media import make_images, make_videos

from vc2_core.keys import UNET_PREFIX
from vc2_core.training.config import load_config
from vc2_core.training.trainer import build_training_model, train

CONFIG = Path(__file__).resolve().parents[1] / "trainers" / "configs" / "tiny_stage1.yaml"
SETTINGS = {"run.max_steps": 3, "checkpoint.every": 3, "optim.eps": 1.0, "optim.lr": 0.01}
# |run - reference| / |the reference's change from the initial weights|, over all UNet tensors. Measured on a
# 2-core CPU: 1.3e-6 after one step (float order), 4.0e-4 after three (the float noise grows through the
# near-zero gradients behind the zero-initialised outputs); other batches (images.ratio 0.9): 0.059.
RELATIVE_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def clean_media(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")  # no broken files: a skip would shift one process's items
    return {"videos": make_videos(base / "videos", broken=False), "images": make_images(base / "images", broken=False)}


def overrides(out: Path, media: dict, **values) -> dict[str, dict]:
    flat = {"run.output_dir": str(out), "videos.index": str(media["videos"]), "images.index": str(media["images"]),
            **SETTINGS, **values}
    nested: dict[str, dict] = {}
    for key, value in flat.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    return nested


def unet(out: Path) -> dict[str, torch.Tensor]:
    state = load_file(out / "checkpoints" / "step-00000003" / "model.safetensors")
    return {k: v for k, v in state.items() if k.startswith(UNET_PREFIX)}


def initial_unet(config) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + k: v for k, v in build_training_model(config).unet.state_dict().items()}


def relative_difference(run: dict, reference: dict, initial: dict) -> float:
    """Norm of (run - reference) over the norm of the reference's change from the initial weights."""
    difference = torch.cat([(run[k] - reference[k]).flatten() for k in reference]).norm()
    update = torch.cat([(reference[k] - initial[k]).flatten() for k in reference]).norm()
    return (difference / update).item()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_with_the_same_global_batch(clean_media, tmp_path):
    two = tmp_path / "two"
    args = [f"--set={k}={v}" for section, values in overrides(two, clean_media, **{"videos.batch_size": 1,
                                                                                    "images.batch_size": 1}).items()
            for k, v in ((f"{section}.{name}", value) for name, value in values.items())]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "-m", "vc2_core.cli", "train", "--config", str(CONFIG), "--no-progress",
                          *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["parameters_identical"]  # every rank holds the same weights

    config = load_config(CONFIG, overrides(tmp_path / "one", clean_media, **{"videos.batch_size": 2,
                                                                             "images.batch_size": 2}))
    one = train(config, show_progress=False)
    initial = initial_unet(config)
    assert relative_difference(unet(two), unet(one.output_dir), initial) < RELATIVE_TOLERANCE

    other = train(config.replace("run", output_dir=str(tmp_path / "other")).replace("images", ratio=0.9),
                  show_progress=False)  # other batches: the comparison can fail
    assert relative_difference(unet(other.output_dir), unet(one.output_dir), initial) > 5 * RELATIVE_TOLERANCE


def test_gradient_accumulation_equals_the_bigger_batch(clean_media, tmp_path):
    # partial: videos only, so both runs draw the same items (a joint run draws a source per micro-batch)
    big = train(load_config(CONFIG, overrides(tmp_path / "big", clean_media, **{
        "stage.name": "partial", "videos.batch_size": 2})), show_progress=False)
    accumulated = train(load_config(CONFIG, overrides(tmp_path / "acc", clean_media, **{
        "stage.name": "partial", "videos.batch_size": 1, "optim.gradient_accumulation": 2})), show_progress=False)
    initial = initial_unet(load_config(CONFIG, overrides(tmp_path / "x", clean_media)))
    assert relative_difference(unet(accumulated.output_dir), unet(big.output_dir), initial) < RELATIVE_TOLERANCE
