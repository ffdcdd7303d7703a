"""T2V-Turbo's multistep consistency sampler (their ``T2VTurboScheduler``: LCM's scheduler on VideoCrafter2).

A consistency-distilled UNet maps a noisy latent straight to a clean estimate. N steps walk down N
timesteps of the *origin* grid the distillation used (``origin_steps`` evenly spaced timesteps,
taken every ``origin_steps // N``, from the top). At each one the eps prediction becomes x0, the
consistency boundary condition mixes x back in (c_skip, c_out: about 0 and 1 away from t = 0),
and that estimate is re-noised to the next timestep with fresh noise. The result is the last
step's estimate; there is no classifier-free guidance pass (T2V-Turbo feeds the guidance scale
to the UNet as an embedding, :class:`vc2_core.t2v_turbo.TurboEps`).

T2V-Turbo was distilled without VideoCrafter2's latent scale (their training asserts ``use_scale``
off), so the levels here are the plain process x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps whatever the
schedule's ``use_scale``: every NoiseLevel has scale 1. Values are 0-dim float32 tensors, as their
scheduler computes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoiser import Denoiser, NoiseLevel
from .noise import NoiseFn
from .schedule import DiffusionSchedule
from .steps import SamplerStep

Tensor = torch.Tensor
Callback = Callable[[SamplerStep], None]

SIGMA_DATA = 0.5  # LCM's boundary condition
TIMESTEP_SCALING = 10.0  # their t / 0.1: the boundary condition is close to a delta at t = 0
ORIGIN_SPACINGS = {"origin-50": 50, "origin-200": 200}  # T2V-Turbo (VC2)'s app default, T2V-Turbo-v2's


def turbo_timesteps(num_steps: int, origin_steps: int, num_timesteps: int = 1000) -> list[int]:
    """The N timesteps, descending: every (origin // N)-th of (1..origin) * (T // origin) - 1, from the top.

    4 steps on 50 origin steps: [999, 759, 519, 279]; on 200: [999, 749, 499, 249].
    """
    if not 1 <= origin_steps <= num_timesteps:
        raise ValueError(f"origin steps must be 1 to {num_timesteps}; got {origin_steps}")
    if not 1 <= num_steps <= origin_steps:
        raise ValueError(f"t2v-turbo takes 1 to {origin_steps} steps on {origin_steps} origin steps; got {num_steps}")
    every = num_timesteps // origin_steps
    origin = [(k + 1) * every - 1 for k in range(origin_steps)]
    return origin[:: -(origin_steps // num_steps)][:num_steps]


def boundary_scalings(timestep: int) -> tuple[float, float]:
    """(c_skip, c_out) of the consistency boundary condition at ``timestep``."""
    scaled = timestep * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / math.sqrt(scaled**2 + SIGMA_DATA**2)
    return c_skip, c_out


@dataclass(frozen=True)
class ConsistencySteps:
    """The per-step values of the sampler, in sampling order (N steps)."""

    timesteps: list[int]
    signals: list[Tensor]  # sqrt(alpha_bar_t), 0-dim float32
    stds: list[Tensor]  # sqrt(1 - alpha_bar_t), 0-dim float32

    def __len__(self) -> int:
        return len(self.timesteps)

    def level(self, i: int) -> NoiseLevel:
        return NoiseLevel(self.timesteps[i], signal=self.signals[i], scale=1.0, std=self.stds[i])


def make_consistency_steps(schedule: DiffusionSchedule, num_steps: int, origin_steps: int = 50) -> ConsistencySteps:
    """The steps of ``num_steps`` model evaluations on the origin grid (the schedule's alpha_bar, no latent scale)."""
    timesteps = turbo_timesteps(num_steps, origin_steps, schedule.num_timesteps)
    alpha_bar = [schedule.alphas_cumprod[t] for t in timesteps]
    return ConsistencySteps(timesteps, [a.sqrt() for a in alpha_bar], [(1 - a).sqrt() for a in alpha_bar])


def consistency_sample(denoiser: Denoiser, x_T: Tensor, steps: ConsistencySteps, *, noise: NoiseFn | None = None,
                       callback: Callback | None = None) -> Tensor:
    """The last step's clean estimate from x_T (b, ...); ``noise`` re-noises between steps (N - 1 draws).

    Step i at t: x0 from the denoiser, denoised = c_out x0 + c_skip x, then x = sqrt(a_t') denoised +
    sqrt(1 - a_t') z at the next timestep t'. Their scheduler also draws a noise tensor at the last
    step and discards it; none is drawn here, which changes no value.
    """
    if len(steps) > 1 and noise is None:
        raise ValueError("t2v-turbo re-noises between steps: it needs a noise source")
    x = x_T
    for i in range(len(steps)):
        _, x0 = denoiser(x, steps.level(i))
        c_skip, c_out = boundary_scalings(steps.timesteps[i])
        denoised = c_out * x0 + c_skip * x
        if i + 1 < len(steps):
            following = steps.level(i + 1)
            x = following.signal * denoised + following.std * noise(x.shape).to(x.device, x.dtype)
        else:
            x = denoised
        if callback is not None:
            callback(SamplerStep(i, len(steps), steps.timesteps[i], x, denoised))
    return x
