"""Samplers beyond the official DDIM, derived for VideoCrafter2's scaled forward process.

With the latent scale, x_t = a_t x0 + s_t eps where a_t = sqrt(alpha_bar_t) * scale_t and
s_t = sqrt(1 - alpha_bar_t) (without it scale_t = 1). Dividing by a_t gives the variance-exploding
form z = x / a_t = x0 + sigma_t eps with sigma_t = s_t / a_t, whose probability-flow ODE is
dz/dsigma = eps. DDIM with eta = 0 is exactly the Euler step of that ODE, so every sampler here
solves the same ODE as DDIM(eta=0) and lands on the same final state: the official last level,
alpha_bar_0 (the model is never asked for t = 0, as in the official sampler).

Each sampler evaluates the model only at integer timesteps it was trained on: the official DDIM
grid (``uniform``) or the integer timesteps nearest to uniform log-SNR steps (``logsnr``, the
default of the non-DDIM samplers), so no timestep interpolation is involved.

- ``euler``: first order; equal to DDIM(eta=0) up to rounding.
- ``euler_ancestral``: Euler with ancestral noise (``eta`` scales it; 0 is ``euler``).
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022), second-order multistep in log-sigma.
- ``ddim``: the official sampler (:mod:`vc2_core.diffusion.ddim`), eta 1 by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .ddim import DDIMSchedule, ddim_sample, ddim_timesteps, make_ddim_schedule
from .noise import NoiseFn
from .schedule import DiffusionSchedule
from .steps import EpsFn, SamplerStep

Tensor = torch.Tensor
Callback = Callable[[SamplerStep], None]


@dataclass(frozen=True)
class Levels:
    """The noise levels a sampler walks through, in sampling order."""

    timesteps: list[int]  # model timesteps, descending (N)
    alphas: list[float]  # a = sqrt(alpha_bar) * scale at each timestep, then at the final level (N + 1)
    stds: list[float]  # s = sqrt(1 - alpha_bar), same positions (N + 1)

    @property
    def sigmas(self) -> list[float]:
        """Variance-exploding noise levels s / a (N + 1), decreasing."""
        return [s / a for s, a in zip(self.stds, self.alphas, strict=True)]


SPACINGS = ("uniform", "logsnr")


def make_levels(schedule: DiffusionSchedule, num_steps: int, spacing: str = "uniform") -> Levels:
    """The levels of ``num_steps`` model evaluations, ending at the official final level alpha_bar_0.

    ``uniform``: the official DDIM grid (arange(0, T, T // S) + 1). ``logsnr``: integer timesteps as
    close as possible to uniform steps in log-SNR from t = T - 1 to the final level, the spacing
    DPM-Solver is designed for (the uniform grid makes the last steps very long in log-SNR).
    """
    if spacing == "uniform":
        steps = [int(t) for t in ddim_timesteps(num_steps, schedule.num_timesteps)[::-1]]
    elif spacing == "logsnr":
        steps = _logsnr_timesteps(schedule, num_steps)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    alpha_bar = schedule.alphas_cumprod.detach().double().cpu()
    scale = schedule.scales().detach().double().cpu()
    final = 0  # the official DDIM ends at alpha_bar_0
    return Levels(
        timesteps=steps,
        alphas=[math.sqrt(alpha_bar[t]) * scale[t].item() for t in (*steps, final)],
        stds=[math.sqrt(1 - alpha_bar[t]) for t in (*steps, final)],
    )


def _logsnr_timesteps(schedule: DiffusionSchedule, num_steps: int) -> list[int]:
    """Strictly decreasing integer timesteps in [1, T-1] nearest to uniform log-SNR spacing."""
    last = schedule.num_timesteps - 1
    if not 1 <= num_steps <= last:
        raise ValueError(f"log-SNR spacing takes 1 to {last} steps; got {num_steps}")
    alpha_bar = schedule.alphas_cumprod.detach().double().cpu()
    log_snr = (alpha_bar.sqrt() * schedule.scales().detach().double().cpu() / (1 - alpha_bar).sqrt()).log()
    targets = np.linspace(log_snr[last].item(), log_snr[0].item(), num_steps + 1)[:-1]  # the final level is t = 0
    # log-SNR falls with t: interpolate t on the reversed (increasing) curve
    times = np.interp(targets, log_snr.flip(0).numpy(), np.arange(last, -1, -1, dtype=np.float64))
    steps = [int(round(t)) for t in times]
    for i in range(num_steps - 1, -1, -1):  # keep clear of t = 0 and of each other, from the low end up
        steps[i] = max(steps[i], 1 if i == num_steps - 1 else steps[i + 1] + 1)
    for i in range(num_steps):  # and below T - 1, from the top down
        steps[i] = min(steps[i], last if i == 0 else steps[i - 1] - 1)
    return steps


def _denoise(eps_fn: EpsFn, x: Tensor, levels: Levels, i: int) -> tuple[Tensor, Tensor]:
    """(eps, x0 estimate) at step i; x0 = (x - s eps) / a is un-scaled."""
    t = torch.full((x.shape[0],), levels.timesteps[i], dtype=torch.long, device=x.device)
    eps = eps_fn(x, t)
    return eps, (x - levels.stds[i] * eps) / levels.alphas[i]


def euler(eps_fn: EpsFn, x_T: Tensor, levels: Levels, *, noise: NoiseFn | None = None,
          callback: Callback | None = None) -> Tensor:
    return euler_ancestral(eps_fn, x_T, levels, eta=0.0, noise=noise, callback=callback)


def euler_ancestral(eps_fn: EpsFn, x_T: Tensor, levels: Levels, *, eta: float = 1.0, noise: NoiseFn | None = None,
                    callback: Callback | None = None) -> Tensor:
    """Euler in z = x / a; with eta > 0 part of each step's noise is removed deterministically and re-drawn."""
    if eta > 0 and noise is None:
        raise ValueError("euler_ancestral with eta > 0 needs a noise source")
    sigmas = levels.sigmas
    x = x_T
    for i in range(len(levels.timesteps)):
        eps, x0 = _denoise(eps_fn, x, levels, i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        down = math.sqrt(sigma_next**2 - up**2)
        z = x / levels.alphas[i] + (down - sigma) * eps  # (z - x0) / sigma = eps
        if up > 0:
            z = z + up * noise(x.shape).to(x.device, x.dtype)
        x = levels.alphas[i + 1] * z
        if callback is not None:
            callback(SamplerStep(i, len(levels.timesteps), levels.timesteps[i], x, x0))
    return x


def dpmpp_2m(eps_fn: EpsFn, x_T: Tensor, levels: Levels, *, noise: NoiseFn | None = None,
             callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M): data-prediction multistep, second order from the second step on."""
    sigmas = levels.sigmas
    x = x_T
    previous_x0, previous_h = None, None
    for i in range(len(levels.timesteps)):
        _, x0 = _denoise(eps_fn, x, levels, i)
        h = math.log(sigmas[i] / sigmas[i + 1])  # step in lambda = -log(sigma)
        if previous_x0 is None:
            direction = x0
        else:
            r = previous_h / h
            direction = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        z = (sigmas[i + 1] / sigmas[i]) * (x / levels.alphas[i]) - math.expm1(-h) * direction
        x = levels.alphas[i + 1] * z
        previous_x0, previous_h = x0, h
        if callback is not None:
            callback(SamplerStep(i, len(levels.timesteps), levels.timesteps[i], x, x0))
    return x


# name -> (default eta, whether eta is used, default timestep spacing)
SAMPLERS = {
    "ddim": (1.0, True, "uniform"),
    "euler": (0.0, False, "logsnr"),
    "euler_ancestral": (1.0, True, "logsnr"),
    "dpmpp_2m": (0.0, False, "logsnr"),
}


def resolve_eta(sampler: str, eta: float | None) -> float:
    """The sampler's default eta when none is given; an error for eta on a deterministic sampler."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    default, uses_eta, _ = SAMPLERS[sampler]
    if eta is None:
        return default
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    if not uses_eta and eta != 0:
        raise ValueError(f"{sampler} is deterministic; eta applies to ddim and euler_ancestral")
    return eta


def plan_sampling(sampler: str, schedule: DiffusionSchedule, num_steps: int, eta: float | None = None,
                  spacing: str | None = None) -> tuple[float, DDIMSchedule | Levels]:
    """(eta, the per-step values) of a sampler by name, or a ValueError saying what does not fit.

    ``spacing`` None is the sampler's default: the official grid for ddim, log-SNR for the others.
    ddim always uses the official grid.
    """
    eta = resolve_eta(sampler, eta)
    if sampler == "ddim":
        if spacing not in (None, "uniform"):
            raise ValueError("ddim runs on the official (uniform) timestep grid; drop the spacing")
        return eta, make_ddim_schedule(schedule, num_steps, eta)
    return eta, make_levels(schedule, num_steps, spacing or SAMPLERS[sampler][2])


def sample(sampler: str, eps_fn: EpsFn, x_T: Tensor, schedule: DiffusionSchedule, num_steps: int, *,
           eta: float | None = None, spacing: str | None = None, noise: NoiseFn | None = None,
           callback: Callback | None = None) -> Tensor:
    """Run a sampler by name from x_T with ``num_steps`` model evaluations (see :func:`plan_sampling`)."""
    eta, plan = plan_sampling(sampler, schedule, num_steps, eta, spacing)
    if sampler == "ddim":
        return ddim_sample(eps_fn, x_T, plan, noise=noise, callback=callback)
    if sampler == "euler_ancestral":
        return euler_ancestral(eps_fn, x_T, plan, eta=eta, noise=noise, callback=callback)
    return {"euler": euler, "dpmpp_2m": dpmpp_2m}[sampler](eps_fn, x_T, plan, noise=noise, callback=callback)
