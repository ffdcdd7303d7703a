"""Whether a launch can run on this machine: checked before ``vc2 train`` builds anything.

``accelerate launch`` passes its config to the training processes as environment variables
(``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``; ``torchrun`` and accelerate both set
``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``). Where the machine cannot give what they ask for, accelerate
(1.16) fails deep inside its setup or, worse, quietly runs something else:

- FSDP on a CPU runs plain DDP (accelerate wraps a model in FSDP only on GPU-like devices);
- DeepSpeed with ``run.cpu: true`` runs plain DDP (read in its code; deepspeed is not installed here);
  without the ``deepspeed`` package or a GPU it fails inside its setup;
- processes launched with ``run.cpu: false`` on a machine without CUDA do not form a process group:
  each trains alone on the same items and writes the same output folder;
- more processes on a machine than it has CUDA devices: a process would take a device that does not exist;
- FSDP with an EMA of the weights: each process holds only a shard between steps (read in the code, not run);
- DeepSpeed with vc2's gradient accumulation: the loss would be divided by the steps twice (read in accelerate's code).

:func:`check_launch` turns each case into one message (a ``ValueError``: ``vc2 train`` prints it and
exits with status 1).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch


class LaunchError(ValueError):
    """A launch that cannot work on this machine."""


@dataclass(frozen=True)
class Launch:
    """What the launcher asked for."""

    engine: str  # "DDP" (also one process), "FSDP" or "DeepSpeed"
    world_size: int  # processes in the run, over every machine
    local_processes: int  # processes on this machine

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Launch:
        engine = "DDP"
        if environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            engine = "DeepSpeed"
        elif environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            engine = "FSDP"
        world_size = int(environ.get("WORLD_SIZE", "1"))
        return cls(engine, world_size, int(environ.get("LOCAL_WORLD_SIZE", str(world_size))))


@dataclass(frozen=True)
class Machine:
    """What this machine offers."""

    cuda_devices: int
    deepspeed_installed: bool

    @classmethod
    def this_one(cls) -> Machine:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(count, importlib.util.find_spec("deepspeed") is not None)


def launch_problem(launch: Launch, machine: Machine, cpu: bool, ema: bool = False, accumulation: int = 1) -> str | None:
    """Why ``launch`` cannot train on ``machine`` with ``run.cpu = cpu`` (an EMA of the weights when ``ema``,
    ``optim.gradient_accumulation`` = ``accumulation``); None when it can."""
    on_cpu = cpu or machine.cuda_devices == 0
    why_cpu = "run.cpu is true" if cpu else "this machine has no CUDA device"
    if launch.engine == "DeepSpeed" and on_cpu:
        return (f"the accelerate config asks for DeepSpeed, which needs CUDA GPUs, but the run is on the CPU "
                f"({why_cpu}); use trainers/accelerate/ddp.yaml")
    if launch.engine == "DeepSpeed" and not machine.deepspeed_installed:
        return "the accelerate config asks for DeepSpeed, but the deepspeed package is missing: pip install deepspeed"
    if launch.engine == "FSDP" and on_cpu:
        return (f"the accelerate config asks for FSDP, which accelerate runs on GPUs only (on a CPU it would run DDP "
                f"instead), but the run is on the CPU ({why_cpu}); use trainers/accelerate/ddp.yaml")
    if launch.engine == "DeepSpeed" and accumulation > 1:
        return (f"the accelerate config asks for DeepSpeed with optim.gradient_accumulation {accumulation}: accelerate "
                "leaves the loss's division by the accumulation steps to DeepSpeed and vc2's step divides too (the "
                "gradients would be too small); set optim.gradient_accumulation: 1 and DeepSpeed's own accumulation")
    if launch.engine == "FSDP" and ema:
        return ("the accelerate config asks for FSDP, but optim.ema_decay is set: under FSDP each process holds only "
                "a shard of the weights between steps, and vc2's EMA follows whole weights; set optim.ema_decay: null "
                "(--set optim.ema_decay=null) or use trainers/accelerate/ddp.yaml")
    if launch.world_size > 1 and not cpu and machine.cuda_devices == 0:
        return (f"{launch.world_size} processes were launched with run.cpu false on a machine without CUDA devices: "
                f"they would not train together; set run.cpu: true (--set run.cpu=true) to train on CPUs over gloo")
    if not cpu and launch.local_processes > machine.cuda_devices > 0:
        return (f"{launch.local_processes} processes on this machine but only {machine.cuda_devices} CUDA device(s): "
                f"launch at most {machine.cuda_devices} (accelerate launch --num_processes {machine.cuda_devices})")
    return None


def check_launch(cpu: bool, ema: bool = False, accumulation: int = 1, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`LaunchError` when this process's launch cannot train on this machine (see the module)."""
    problem = launch_problem(Launch.from_environment(os.environ if environ is None else environ),
                             Machine.this_one(), cpu, ema, accumulation)
    if problem is not None:
        raise LaunchError(problem)
