"""Types shared by every sampler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
EpsFn = Callable[[Tensor, Tensor], Tensor]  # (x (b, ...), t (b,) int64) -> predicted noise, like x


@dataclass(frozen=True)
class SamplerStep:
    """What a sampler's callback receives after each step (progress bars, previews, interrupts)."""

    step: int  # 0 for the first step
    total: int  # number of steps
    timestep: int  # the model timestep of this step
    x: Tensor  # the latents after this step
    pred_x0: Tensor  # this step's estimate of the clean (un-scaled) latents
