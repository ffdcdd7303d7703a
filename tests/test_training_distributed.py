"""Data parallelism: what is exact, what equals within fp32 rounding, and what is only close (docs/training.md,
"Distributed training").

- The all-reduced gradient of two gloo processes (``vc2 train`` under torchrun, DDP) equals one process's
  gradient of the same global batch within fp32 rounding, with the default optimizer code; both processes
  hold the same bits.
- FSDP with the settings of trainers/accelerate/fsdp.yaml, on the CPU (tests/fsdp_worker.py), ends where DDP ends.
- Whole runs: AdamW divides by sqrt(v) + eps, which turns the rounding differences of near-zero gradient
  entries (behind the zero-initialised output layers of a fresh model) into steps of up to lr; the end-to-end
  weight comparisons therefore run with ``optim.eps = 1`` (updates proportional to the gradient), and a run on
  other data is shown to differ by far more.
- A launch this machine cannot run (FSDP or DeepSpeed on a CPU, ...) stops with one line before training.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gradient_capture import first_step_gradients, from_file
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_media import make_images, make_videos

from vc2_core.checkpoint import save_checkpoint
from vc2_core.keys import UNET_PREFIX
from vc2_core.modules import TemporalConvBlock
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.training.config import load_config
from vc2_core.training.launch_check import Launch, Machine, launch_problem
from vc2_core.training.stages import get_stage, set_up_stage
from vc2_core.training.trainer import build_training_model, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "trainers" / "configs" / "tiny_stage1.yaml"
FSDP_CONFIG = ROOT / "trainers" / "accelerate" / "fsdp.yaml"
SETTINGS = {"run.max_steps": 3, "checkpoint.every": 3, "optim.eps": 1.0, "optim.lr": 0.01}
# |run - reference| / |the reference's change from the initial weights|, over all UNet tensors. Measured on a
# 2-core CPU: 1.3e-6 after one step (float order), 4.0e-4 after three (the float noise grows through the
# near-zero gradients behind the zero-initialised outputs); other batches (images.ratio 0.9): 0.059.
RELATIVE_TOLERANCE = 5e-3

# The step-1 gradient bound. A weight gradient entry is a sum over the batch's samples and positions, at most
# N = 2 samples x 8 frames x 8x8 latent positions = 1024 terms; one process sums them in one reduction, two
# sum 512 each and add. Each rounding has a relative error below u = 2^-24 and a random sign, so two summation
# orders differ by about u * sqrt(N) times the size of the terms (1.9e-6; worst case u * N). Here the terms are
# no larger than the largest gradient entry G (the rounding noise left on gradients that are exactly zero in
# exact arithmetic, ~1e-9, points to terms of ~5e-4; G is ~0.1). A factor 4 covers the rounding of the layers
# a gradient passes through before that sum. Checked: |difference| <= tol * |gradient| over the whole
# gradient, and each entry within tol * G. Measured: 0.14 and 0.07 of these bounds.
SUMMED_TERMS = 2 * 8 * 8 * 8
GRADIENT_TOLERANCE = 4 * 2.0**-24 * SUMMED_TERMS**0.5
# FSDP vs DDP after three steps, same measure as RELATIVE_TOLERANCE. With two processes each gradient entry is
# the sum of two terms halved, exact in any order, and AdamW works entry by entry; only the clipping norm is
# summed in another order (per shard, then across processes). That norm's relative error is below
# u * log2(1.9e6 values) = 1.3e-6 (blocked sums) and scales every update by as much: over three steps 4e-6.
# Measured: 0 (bit-identical).
FSDP_TOLERANCE = 1e-5


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


def set_arguments(nested: dict[str, dict]) -> list[str]:
    """``--set`` arguments for a config override (values as JSON, which YAML reads: null, 1.0, "path")."""
    return [f"--set={section}.{name}={json.dumps(value)}" for section, values in nested.items()
            for name, value in values.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*arguments: str) -> None:
    """Two gloo processes of a module (``-m NAME``) or a script; this checkout's vc2_core first on the path."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), *arguments], capture_output=True, text=True, timeout=600,
                         env=environment, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


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


@pytest.fixture(scope="module")
def ddp_run(clean_media, tmp_path_factory) -> Path:
    """``vc2 train`` on two gloo processes, one item each per step: three steps, eps 1 (see the module)."""
    out = tmp_path_factory.mktemp("ddp") / "two"
    torchrun("-m", "vc2_core.cli", "train", "--config", str(CONFIG), "--no-progress",
             *set_arguments(overrides(out, clean_media, **{"videos.batch_size": 1, "images.batch_size": 1})))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["parameters_identical"]  # every rank holds the same weights
    return out


@pytest.fixture(scope="module")
def working_start(tmp_path_factory) -> Path:
    """A tiny model whose zero-initialised layers have random values, so every block passes gradients, but for
    the temporal convolutions' last layers: their gradient depends on dropout masks, which are drawn per
    process (keyed by micro-batch and process, not by item), and at zero they keep the masks out of every
    other gradient."""
    model = build_training_model(load_config(CONFIG))
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for block in model.unet.modules():
            if isinstance(block, TemporalConvBlock):
                block.conv4[3].weight.zero_()
                block.conv4[3].bias.zero_()
    return save_checkpoint(model, tmp_path_factory.mktemp("start") / "start.safetensors")


def test_all_reduced_gradients_equal_one_process_within_rounding(clean_media, working_start, tmp_path):
    # one step from working_start, videos only (N above), no clipping: its coefficient depends on the
    # dropout-keyed gradients too; AdamW's settings do not matter, the gradient is taken before it acts
    start = {"model.checkpoint": str(working_start), "model.preset": None, "run.max_steps": 1,
             "checkpoint.every": 1, "images.ratio": 0.0, "optim.max_grad_norm": None}
    prefix = tmp_path / "gradients"
    torchrun(str(ROOT / "tests" / "gradient_capture.py"), str(prefix), "train", "--config", str(CONFIG),
             "--no-progress", *set_arguments(overrides(tmp_path / "two", clean_media, **start, **{
                 "videos.batch_size": 1, "images.batch_size": 1})))
    two, other_rank = (from_file(load_file(f"{prefix}-rank{rank}.safetensors")) for rank in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(two, other_rank, strict=True))  # every process steps alike

    config = load_config(CONFIG, overrides(tmp_path / "one", clean_media, **start, **{
        "videos.batch_size": 2, "images.batch_size": 2}))
    with first_step_gradients() as one:
        train(config, show_progress=False)
    names = [name for name, _ in set_up_stage(build_training_model(config).unet, get_stage("full"), config.stage)]
    assert len(names) == len(one) == len(two)
    dropout_keyed = [i for i, name in enumerate(names) if name.endswith("temopral_conv.conv4.3.weight")]
    compared = [i for i in range(len(names)) if i not in dropout_keyed]
    assert sum(one[i].count_nonzero() for i in compared) > 0.8 * sum(one[i].numel() for i in compared)

    difference = torch.cat([(two[i] - one[i]).flatten() for i in compared])
    gradient = torch.cat([one[i].flatten() for i in compared])
    assert difference.norm() <= GRADIENT_TOLERANCE * gradient.norm()
    assert difference.abs().max() <= GRADIENT_TOLERANCE * gradient.abs().max()
    for i in dropout_keyed:  # other dropout masks: far outside the bound, which tells such differences apart
        assert (two[i] - one[i]).norm() > 1000 * GRADIENT_TOLERANCE * one[i].norm(), names[i]


def test_two_processes_equal_one_with_the_same_global_batch(ddp_run, clean_media, tmp_path):
    config = load_config(CONFIG, overrides(tmp_path / "one", clean_media, **{"videos.batch_size": 2,
                                                                             "images.batch_size": 2}))
    one = train(config, show_progress=False)
    initial = initial_unet(config)
    assert relative_difference(unet(ddp_run), unet(one.output_dir), initial) < RELATIVE_TOLERANCE

    other = train(config.replace("run", output_dir=str(tmp_path / "other")).replace("images", ratio=0.9),
                  show_progress=False)  # other batches: the comparison can fail
    assert relative_difference(unet(other.output_dir), unet(one.output_dir), initial) > 5 * RELATIVE_TOLERANCE


def test_fsdp_ends_where_ddp_ends(ddp_run, clean_media, tmp_path):
    out = tmp_path / "fsdp.safetensors"
    nested = overrides(tmp_path / "fsdp", clean_media, **{"videos.batch_size": 1, "images.batch_size": 1})
    torchrun(str(ROOT / "tests" / "fsdp_worker.py"), str(CONFIG), str(FSDP_CONFIG), str(out),
             *(argument.removeprefix("--set=") for argument in set_arguments(nested)))
    with safe_open(out, "pt") as file:
        held = json.loads(file.metadata()["held"])
    fsdp = load_file(out)
    total = sum(v.numel() for v in fsdp.values())
    assert sum(held) == total and max(held) < 0.6 * total  # sharded: each process held about half
    initial = initial_unet(load_config(CONFIG, nested))
    assert relative_difference(fsdp, unet(ddp_run), initial) <= FSDP_TOLERANCE


def test_gradient_accumulation_equals_the_bigger_batch(clean_media, tmp_path):
    # partial: videos only, so both runs draw the same items (a joint run draws a source per micro-batch)
    big = train(load_config(CONFIG, overrides(tmp_path / "big", clean_media, **{
        "stage.name": "partial", "videos.batch_size": 2})), show_progress=False)
    accumulated = train(load_config(CONFIG, overrides(tmp_path / "acc", clean_media, **{
        "stage.name": "partial", "videos.batch_size": 1, "optim.gradient_accumulation": 2})), show_progress=False)
    initial = initial_unet(load_config(CONFIG, overrides(tmp_path / "x", clean_media)))
    assert relative_difference(unet(accumulated.output_dir), unet(big.output_dir), initial) < RELATIVE_TOLERANCE


CPU_MACHINE, GPU_MACHINE = Machine(cuda_devices=0, deepspeed_installed=False), Machine(8, deepspeed_installed=True)


@pytest.mark.parametrize("engine, world, local, machine, cpu, expected", [
    ("DDP", 1, 1, CPU_MACHINE, True, None),
    ("DDP", 2, 2, CPU_MACHINE, True, None),  # the CPU runs above
    ("DDP", 8, 8, GPU_MACHINE, False, None),
    ("FSDP", 8, 8, GPU_MACHINE, False, None),
    ("DeepSpeed", 8, 8, GPU_MACHINE, False, None),
    ("FSDP", 2, 2, CPU_MACHINE, True, "FSDP, which accelerate runs on GPUs only"),
    ("FSDP", 8, 8, GPU_MACHINE, True, "run.cpu is true"),
    ("DeepSpeed", 2, 2, CPU_MACHINE, False, "DeepSpeed, which needs CUDA GPUs"),
    ("DeepSpeed", 8, 8, Machine(8, deepspeed_installed=False), False, "pip install deepspeed"),
    ("DDP", 2, 2, CPU_MACHINE, False, "set run.cpu: true"),
    ("DDP", 16, 8, Machine(1, deepspeed_installed=False), False, "--num_processes 1"),
])
def test_launch_problems(engine, world, local, machine, cpu, expected):
    problem = launch_problem(Launch(engine, world, local), machine, cpu)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem and "\n" not in problem


def test_fsdp_refuses_an_ema_of_sharded_weights():
    """Under FSDP a process holds only its shard between steps; the EMA follows whole weights, so it is refused."""
    problem = launch_problem(Launch("FSDP", 8, 8), GPU_MACHINE, False, ema=True)
    assert "optim.ema_decay is set" in problem and "\n" not in problem
    assert launch_problem(Launch("DDP", 8, 8), GPU_MACHINE, False, ema=True) is None


def test_deepspeed_refuses_vc2_accumulation():
    """accelerate leaves the loss's division by the accumulation steps to DeepSpeed; vc2's step divides too."""
    problem = launch_problem(Launch("DeepSpeed", 8, 8), GPU_MACHINE, False, accumulation=4)
    assert "optim.gradient_accumulation 4" in problem and "\n" not in problem
    assert launch_problem(Launch("DeepSpeed", 8, 8), GPU_MACHINE, False, accumulation=1) is None
    assert launch_problem(Launch("DDP", 8, 8), GPU_MACHINE, False, accumulation=4) is None


def test_launch_reads_what_accelerate_launch_sets():
    assert Launch.from_environment({}) == Launch("DDP", 1, 1)
    assert Launch.from_environment({"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) \
        == Launch("FSDP", 16, 8)
    assert Launch.from_environment({"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "2"}) == Launch("DeepSpeed", 2, 2)


def test_the_shipped_fsdp_config_on_this_cpu_stops_before_training(clean_media, tmp_path):
    out = tmp_path / "run"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
                          "--num_processes", "1", "--main_process_port", str(free_port()),
                          str(ROOT / "trainers" / "train.py"), "--config", str(CONFIG), "--no-progress",
                          *set_arguments(overrides(out, clean_media))],
                         capture_output=True, text=True, timeout=300, env=environment, cwd=ROOT)
    assert run.returncode != 0
    ours = [line for line in run.stderr.splitlines() if line.startswith("vc2 train: error:")]
    assert len(ours) == 1 and "accelerate runs on GPUs only" in ours[0], run.stderr[-3000:]
    assert not out.exists()  # nothing written: the check runs before the run's folder is made
