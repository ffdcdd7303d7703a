"""The noise levels the non-DDIM samplers walk through, on VideoCrafter2's scaled process.

With the latent scale, x_t = a_t x0 + s_t eps where a_t = sqrt(alpha_bar_t) * scale_t and
s_t = sqrt(1 - alpha_bar_t) (without it scale_t = 1). Dividing by a_t gives the variance-exploding
form z = x / a_t = x0 + sigma_t eps with sigma_t = s_t / a_t, whose probability-flow ODE is
dz/dsigma = eps. The levels end at the official last level, alpha_bar_0 (the model is never asked
for t = 0, as in the official sampler), and use integer timesteps only: the official DDIM grid
(``uniform``) or the integer timesteps nearest to uniform log-SNR steps (``logsnr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ddim import ddim_timesteps
from .denoiser import NoiseLevel
from .schedule import DiffusionSchedule

SPACINGS = ("uniform", "logsnr")


@dataclass(frozen=True)
class Levels:
    """The noise levels a sampler walks through, in sampling order."""

    timesteps: list[int]  # model timesteps, descending (N)
    alphas: list[float]  # a = sqrt(alpha_bar) * scale at each timestep, then at the final level (N + 1)
    stds: list[float]  # s = sqrt(1 - alpha_bar), same positions (N + 1)
    eta: float = 0.0  # the share of each step's noise re-drawn (ancestral samplers)

    def __len__(self) -> int:
        return len(self.timesteps)

    def level(self, i: int) -> NoiseLevel:
        """The level of step i (the model's input there). The latent scale is already in ``a`` (multiplied
        in float64 by :func:`make_levels`), so the level's own scale is 1 (dividing by 1.0 is exact)."""
        return NoiseLevel(self.timesteps[i], signal=self.alphas[i], scale=1.0, std=self.stds[i])

    @property
    def sigmas(self) -> list[float]:
        """Variance-exploding noise levels s / a (N + 1), decreasing."""
        return [s / a for s, a in zip(self.stds, self.alphas, strict=True)]


def make_levels(schedule: DiffusionSchedule, num_steps: int, spacing: str = "uniform", eta: float = 0.0) -> Levels:
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
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    alpha_bar = schedule.alphas_cumprod.detach().double().cpu()
    scale = schedule.scales().detach().double().cpu()
    positions = (*steps, 0)  # the official DDIM ends at alpha_bar_0
    return Levels(
        timesteps=steps,
        alphas=[math.sqrt(alpha_bar[t]) * scale[t].item() for t in positions],
        stds=[math.sqrt(1 - alpha_bar[t]) for t in positions],
        eta=eta,
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
