"""Samplers beyond the official DDIM, as small functions over a denoiser and its levels.

They work in the variance-exploding form z = x / a of VideoCrafter2's scaled process (see
:mod:`vc2_core.diffusion.levels`), whose probability-flow ODE is dz/dsigma = eps. DDIM with eta = 0
is exactly the Euler step of that ODE, so every sampler here solves the same ODE as DDIM(eta=0) and
lands on the same final state. The denoiser turns eps into x0; a sampler only steps.

- ``euler``: first order; equal to DDIM(eta=0) up to rounding.
- ``euler_ancestral``: Euler with ancestral noise (the levels' ``eta`` scales it; 0 is ``euler``).
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022), second-order multistep in log-sigma.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from .denoiser import Denoiser
from .levels import Levels
from .noise import NoiseFn
from .steps import SamplerStep

Tensor = torch.Tensor
Callback = Callable[[SamplerStep], None]


def euler(denoiser: Denoiser, x_T: Tensor, levels: Levels, *, noise: NoiseFn | None = None,
          callback: Callback | None = None) -> Tensor:
    return euler_ancestral(denoiser, x_T, dataclasses.replace(levels, eta=0.0), noise=noise, callback=callback)


def euler_ancestral(denoiser: Denoiser, x_T: Tensor, levels: Levels, *, noise: NoiseFn | None = None,
                    callback: Callback | None = None) -> Tensor:
    """Euler in z = x / a; with eta > 0 part of each step's noise is removed deterministically and re-drawn."""
    if levels.eta > 0 and noise is None:
        raise ValueError("euler_ancestral with eta > 0 needs a noise source")
    sigmas, alphas = levels.sigmas, levels.alphas
    x = x_T
    for i in range(len(levels)):
        eps, x0 = denoiser(x, levels.level(i))
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        up = min(sigma_next, levels.eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        down = math.sqrt(sigma_next**2 - up**2)
        z = x / alphas[i] + (down - sigma) * eps  # dz/dsigma = eps
        if up > 0:
            z = z + up * noise(x.shape).to(x.device, x.dtype)
        x = alphas[i + 1] * z
        if callback is not None:
            callback(SamplerStep(i, len(levels), levels.timesteps[i], x, x0))
    return x


def dpmpp_2m(denoiser: Denoiser, x_T: Tensor, levels: Levels, *, noise: NoiseFn | None = None,
             callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M): data-prediction multistep, second order from the second step on."""
    sigmas, alphas = levels.sigmas, levels.alphas
    x = x_T
    previous_x0, previous_h = None, None
    for i in range(len(levels)):
        _, x0 = denoiser(x, levels.level(i))
        h = math.log(sigmas[i] / sigmas[i + 1])  # step in lambda = -log(sigma)
        if previous_x0 is None:
            direction = x0
        else:
            r = previous_h / h
            direction = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        z = (sigmas[i + 1] / sigmas[i]) * (x / alphas[i]) - math.expm1(-h) * direction
        x = alphas[i + 1] * z
        previous_x0, previous_h = x0, h
        if callback is not None:
            callback(SamplerStep(i, len(levels), levels.timesteps[i], x, x0))
    return x
