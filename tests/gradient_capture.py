"""The gradients of a run's first optimizer step, as AdamW receives them (all-reduced, clipped).

In a test: ``with first_step_gradients() as gradients: train(config)``. As the worker of a data-parallel run:

    python -m torch.distributed.run --nproc_per_node 2 tests/gradient_capture.py OUT_PREFIX train --config ...

runs ``vc2 train`` and writes each process's gradients to ``OUT_PREFIX-rank{r}.safetensors``, keyed by the
parameter's position in the optimizer (the order of :func:`vc2_core.training.stages.set_up_stage`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch
from safetensors.torch import save_file
from torch.optim.optimizer import register_optimizer_step_pre_hook


@contextlib.contextmanager
def first_step_gradients() -> Iterator[list[torch.Tensor]]:
    """Inside: the first ``optimizer.step()`` of any optimizer records the gradients it is about to apply."""
    gradients: list[torch.Tensor] = []

    def record(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not gradients:
            gradients.extend(torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                             for group in optimizer.param_groups for p in group["params"])

    handle = register_optimizer_step_pre_hook(record)
    try:
        yield gradients
    finally:
        handle.remove()


def as_file(gradients: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{i:05d}": g.contiguous() for i, g in enumerate(gradients)}


def from_file(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [tensors[key] for key in sorted(tensors)]


if __name__ == "__main__":
    from vc2_core.commands.main import main

    with first_step_gradients() as captured:
        status = main(sys.argv[2:])
    if status == 0:
        save_file(as_file(captured), f"{sys.argv[1]}-rank{os.environ['RANK']}.safetensors")
    raise SystemExit(status)
