"""The official DDIM sampler of VideoCrafter, as a small function over a denoiser.

Notation (paper -> code): alpha_bar_t -> ``alphas``, alpha_bar_{t-1} -> ``alphas_prev``,
sigma_t(eta) -> ``sigmas`` (DDIM eq. 16), s_t (VideoCrafter2 latent scale) -> ``scales``.

One step at timestep t (index i counts down from S-1 to 0), all in float32:

    x0_hat  = (x - sqrt(1 - a_t) eps) / sqrt(a_t) / s_t            # un-scaled start estimate (the Denoiser)
    x_prev  = sqrt(a_prev) * s_prev * x0_hat + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z

As released: the timesteps are ``arange(0, T, T // S) + 1`` (so S that does not divide T gives
more than S steps), the first ``a_prev`` is alpha_bar_0 = 0.99915 (not 1), so the last step
still adds noise when eta > 0, and there is no extra final denoising step. Without use_scale
the scales are exactly 1 and the formula reduces to plain DDIM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .denoiser import Denoiser, NoiseLevel
from .noise import NoiseFn
from .schedule import DiffusionSchedule
from .steps import SamplerStep

Tensor = torch.Tensor


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, discretize: str = "uniform") -> np.ndarray:
    """Ascending int64 timesteps of the official ``make_ddim_timesteps`` ("uniform" or "quad")."""
    if num_steps < 1:
        raise ValueError(f"DDIM needs at least one step; got {num_steps}")
    if num_steps > num_train_timesteps:
        raise ValueError(f"{num_steps} DDIM steps exceed the {num_train_timesteps} training timesteps")
    if discretize == "uniform":
        steps = np.arange(0, num_train_timesteps, num_train_timesteps // num_steps)
    elif discretize == "quad":
        steps = (np.linspace(0, np.sqrt(num_train_timesteps * 0.8), num_steps) ** 2).astype(int)
    else:
        raise ValueError(f"unknown DDIM discretization {discretize!r}; use 'uniform' or 'quad'")
    steps = steps.astype(np.int64) + 1
    # For some step counts (3, 9, 27, 36, 37, 101-111, 251-333, 501-1000 of 1000) the last grid point is
    # timestep T, past the schedule, and the official sampler fails with an index error. It is dropped here.
    return steps[steps < num_train_timesteps]


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-step values, indexed like the timesteps (ascending). Dtypes follow the official code."""

    timesteps: Tensor  # (S,) int64
    alphas: Tensor  # (S,) float32, alpha_bar[t]
    alphas_prev: Tensor  # (S,) float64, [alpha_bar[0], alpha_bar[t_0], ..., alpha_bar[t_{S-2}]]
    sigmas: Tensor  # (S,) float64
    sqrt_one_minus_alphas: Tensor  # (S,) float32
    scales: Tensor  # (S,) float32, s[t] (ones without use_scale)
    scales_prev: Tensor  # (S,) float64, [s[0], s[t_0], ..., s[t_{S-2}]]

    def __len__(self) -> int:
        return self.timesteps.shape[0]

    def level(self, index: int, device: torch.device) -> NoiseLevel:
        """The noise level of step ``index`` (ascending order), in float32 as the official sampler computes."""
        return NoiseLevel(int(self.timesteps[index]), signal=_float32(self.alphas[index], device).sqrt(),
                          scale=_float32(self.scales[index], device),
                          std=_float32(self.sqrt_one_minus_alphas[index], device))


def make_ddim_schedule(schedule: DiffusionSchedule, num_steps: int, eta: float,
                       discretize: str = "uniform") -> DDIMSchedule:
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    steps = ddim_timesteps(num_steps, schedule.num_timesteps, discretize)
    ac = schedule.alphas_cumprod.detach().cpu()
    alphas = ac[steps]
    alphas_prev = torch.tensor([ac[0].item(), *ac[steps[:-1]].tolist()], dtype=torch.float64)
    a64 = alphas.double()
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - a64) * (1 - a64 / alphas_prev))
    scale = schedule.scales().detach().cpu()
    return DDIMSchedule(
        timesteps=torch.from_numpy(steps),
        alphas=alphas,
        alphas_prev=alphas_prev,
        sigmas=sigmas,
        sqrt_one_minus_alphas=torch.from_numpy(np.sqrt(1.0 - alphas.numpy())),
        scales=scale[steps],
        scales_prev=torch.tensor([scale[0].item(), *scale[steps[:-1]].tolist()], dtype=torch.float64),
    )


def ddim_sample(denoiser: Denoiser, x_T: Tensor, ddim: DDIMSchedule, *, noise: NoiseFn | None = None,
                callback: Callable[[SamplerStep], None] | None = None) -> Tensor:
    """Run DDIM from x_T (b, ...) down to the final latent.

    ``noise`` supplies the standard normal draws for eta > 0 (see :mod:`vc2_core.diffusion.noise`).
    """
    stochastic = bool((ddim.sigmas > 0).any())
    if stochastic and noise is None:
        raise ValueError("DDIM with eta > 0 needs a noise source (e.g. seeded_noise(seeds))")
    x = x_T
    for step, index in enumerate(reversed(range(len(ddim)))):
        eps, pred_x0 = denoiser(x, ddim.level(index, x.device))
        a_prev, sigma = _float32(ddim.alphas_prev[index], x.device), _float32(ddim.sigmas[index], x.device)
        previous = NoiseLevel(int(ddim.timesteps[index - 1]) if index else 0, signal=a_prev.sqrt(),
                              scale=_float32(ddim.scales_prev[index], x.device), std=(1.0 - a_prev).sqrt())
        x = previous.scaled(pred_x0) + (1.0 - a_prev - sigma**2).sqrt() * eps  # scaled start + direction
        if stochastic:
            x = x + sigma * noise(x.shape).to(x.device, x.dtype)
        if callback is not None:
            callback(SamplerStep(step, len(ddim), int(ddim.timesteps[index]), x, pred_x0))
    return x


def _float32(value: Tensor, device: torch.device) -> Tensor:
    """One per-step value as the official sampler uses it: a float32 scalar tensor on x's device."""
    return torch.tensor(value.item(), dtype=torch.float32, device=device)
