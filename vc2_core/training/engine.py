"""Where training steps run: the few calls the step makes into a (possibly distributed) engine.

``vc2 train`` runs on accelerate's ``Accelerator`` (one process, DDP, FSDP, DeepSpeed), which has
these calls; the ComfyUI fine-tune node runs on :class:`LocalEngine`, one process on one device,
without accelerate (whose process-wide state a ComfyUI server should not carry between prompts).
With one process and no mixed precision both compute the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import ContextManager, Protocol

import torch
import torch.nn as nn

Tensor = torch.Tensor


class Engine(Protocol):
    """The subset of ``accelerate.Accelerator`` a training step uses."""

    device: torch.device
    process_index: int
    num_processes: int

    def no_sync(self, model: nn.Module) -> ContextManager:
        """Inside: backward passes accumulate gradients without synchronising processes."""

    def autocast(self) -> ContextManager:
        """Inside: the forward pass runs in the configured mixed precision."""

    def backward(self, loss: Tensor) -> None: ...

    def clip_grad_norm_(self, parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
        """Clip the gradients' global norm to ``max_norm``; the norm before clipping."""

    def reduce(self, tensor: Tensor, reduction: str = "sum") -> Tensor:
        """The tensor summed (or averaged, ``reduction="mean"``) over the processes."""


class LocalEngine:
    """One process on one device in float32: the engine of the ComfyUI fine-tune node."""

    process_index = 0
    num_processes = 1

    def __init__(self, device: torch.device):
        self.device = device

    def no_sync(self, model: nn.Module) -> ContextManager:
        return contextlib.nullcontext()

    def autocast(self) -> ContextManager:
        return contextlib.nullcontext()

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    def reduce(self, tensor: Tensor, reduction: str = "sum") -> Tensor:
        return tensor
