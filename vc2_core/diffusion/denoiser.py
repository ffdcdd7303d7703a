"""The one place where an eps prediction becomes an x0 estimate (k-diffusion's denoiser wrapper).

VideoCrafter's UNet predicts the noise eps of the *scaled* forward process (VideoCrafter2's
``use_scale``, see :mod:`vc2_core.diffusion.schedule`):

    x_t = sqrt(alpha_bar_t) * s_t * x0 + sqrt(1 - alpha_bar_t) * eps

A sampler hands :class:`Denoiser` the latents and a :class:`NoiseLevel`; it gets back eps and the
un-scaled x0 estimate, and never converts one into the other itself. Without the latent scale
s_t is exactly 1 and the same arithmetic is the plain eps parameterisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .steps import EpsFn

Tensor = torch.Tensor
Scalar = Tensor | float  # a 0-dim float32 tensor (the official DDIM's arithmetic) or a Python float


@dataclass(frozen=True)
class NoiseLevel:
    """One level of the scaled process: x = signal * scale * x0 + std * eps."""

    timestep: int  # the model timestep evaluated at this level
    signal: Scalar  # sqrt(alpha_bar_t)
    scale: Scalar  # s_t, VideoCrafter2's latent scale (1 without use_scale)
    std: Scalar  # sqrt(1 - alpha_bar_t)

    def x0(self, x: Tensor, eps: Tensor) -> Tensor:
        """The un-scaled start estimate (x - std * eps) / signal / scale."""
        return (x - self.std * eps) / self.signal / self.scale

    def scaled(self, x0: Tensor) -> Tensor:
        """The signal part of x at this level: signal * scale * x0."""
        return self.signal * self.scale * x0


class Prediction(NamedTuple):
    eps: Tensor  # the predicted noise, like x
    x0: Tensor  # the un-scaled clean latents it implies, like x


@dataclass(frozen=True)
class Denoiser:
    """An eps predictor seen by the samplers: (x, level) -> (eps, x0)."""

    eps_fn: EpsFn  # (x (b, ...), t (b,) int64) -> eps: the guided UNet, context windows, ...

    def __call__(self, x: Tensor, level: NoiseLevel) -> Prediction:
        t = torch.full((x.shape[0],), level.timestep, dtype=torch.long, device=x.device)  # (b,)
        eps = self.eps_fn(x, t)
        return Prediction(eps, level.x0(x, eps))
