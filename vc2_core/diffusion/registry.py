"""The samplers by name: what each one needs (its per-step values, eta, spacing), and running one.

``plan_sampling`` checks a request against the registry and computes the per-step values once;
the :class:`SamplingPlan` it returns runs the sampler over any eps predictor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .consistency import ORIGIN_SPACINGS, ConsistencySteps, consistency_sample, make_consistency_steps
from .ddim import DDIMSchedule, ddim_sample, make_ddim_schedule
from .denoiser import Denoiser
from .levels import Levels, make_levels
from .noise import NoiseFn
from .samplers import dpmpp_2m, euler, euler_ancestral
from .schedule import DiffusionSchedule
from .steps import EpsFn, SamplerStep

Tensor = torch.Tensor
Steps = DDIMSchedule | Levels | ConsistencySteps  # a sampler's per-step values
Callback = Callable[[SamplerStep], None]


def _ddim_steps(schedule: DiffusionSchedule, num_steps: int, eta: float, spacing: str) -> DDIMSchedule:
    return make_ddim_schedule(schedule, num_steps, eta)  # always the official grid (spacing "uniform")


def _level_steps(schedule: DiffusionSchedule, num_steps: int, eta: float, spacing: str) -> Levels:
    return make_levels(schedule, num_steps, spacing, eta)


def _consistency_steps(schedule: DiffusionSchedule, num_steps: int, eta: float, spacing: str) -> ConsistencySteps:
    if eta != 1.0:
        raise ValueError(f"t2v-turbo re-noises with fresh noise at every step (eta 1); got eta {eta}")
    return make_consistency_steps(schedule, num_steps, ORIGIN_SPACINGS[spacing])


@dataclass(frozen=True)
class Sampler:
    """One registered sampler."""

    name: str
    run: Callable[..., Tensor]  # (denoiser, x_T, steps, *, noise, callback) -> the final latents
    make_steps: Callable[[DiffusionSchedule, int, float, str], Steps]  # (schedule, num_steps, eta, spacing)
    default_eta: float  # eta when none is given
    stochastic: bool  # draws noise when eta > 0; False: deterministic, eta must be 0
    default_spacing: str  # timestep spacing when none is given
    spacings: tuple[str, ...]  # the spacings it runs on
    guidance_in_unet: bool = False  # True: the guidance scale is an input of a distilled UNet, not a CFG pass


SAMPLERS: dict[str, Sampler] = {sampler.name: sampler for sampler in (
    Sampler("ddim", ddim_sample, _ddim_steps, default_eta=1.0, stochastic=True, default_spacing="uniform",
            spacings=("uniform",)),
    Sampler("euler", euler, _level_steps, default_eta=0.0, stochastic=False, default_spacing="logsnr",
            spacings=("uniform", "logsnr")),
    Sampler("euler_ancestral", euler_ancestral, _level_steps, default_eta=1.0, stochastic=True,
            default_spacing="logsnr", spacings=("uniform", "logsnr")),
    Sampler("dpmpp_2m", dpmpp_2m, _level_steps, default_eta=0.0, stochastic=False, default_spacing="logsnr",
            spacings=("uniform", "logsnr")),
    # T2V-Turbo's consistency sampler, for their distilled UNets only (4 steps; the guidance scale is an input
    # of the UNet, vc2_core.t2v_turbo.TurboEps); spacing = the origin grid of the distillation
    Sampler("t2v-turbo", consistency_sample, _consistency_steps, default_eta=1.0, stochastic=True,
            default_spacing="origin-50", spacings=tuple(ORIGIN_SPACINGS), guidance_in_unet=True),
)}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def resolve_eta(sampler: str, eta: float | None) -> float:
    """The sampler's default eta when none is given; an error for eta on a deterministic sampler."""
    entry = get_sampler(sampler)
    if eta is None:
        return entry.default_eta
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    if not entry.stochastic and eta != 0:
        stochastic = " and ".join(name for name, other in SAMPLERS.items() if other.stochastic)
        raise ValueError(f"{sampler} is deterministic; eta applies to {stochastic}")
    return eta


@dataclass(frozen=True)
class SamplingPlan:
    """A sampler with its eta and per-step values, ready to run."""

    sampler: Sampler
    eta: float
    steps: Steps

    def run(self, eps_fn: EpsFn, x_T: Tensor, *, noise: NoiseFn | None = None,
            callback: Callback | None = None) -> Tensor:
        """The final latents from x_T (b, ...) with ``eps_fn`` as the model."""
        return self.sampler.run(Denoiser(eps_fn), x_T, self.steps, noise=noise, callback=callback)


def plan_sampling(sampler: str, schedule: DiffusionSchedule, num_steps: int, eta: float | None = None,
                  spacing: str | None = None) -> SamplingPlan:
    """The plan of a sampler by name, or a ValueError saying what does not fit.

    ``eta`` and ``spacing`` None are the sampler's defaults: eta 1 for ddim and euler_ancestral,
    the official grid for ddim and log-SNR for the others (ddim always uses the official grid).
    """
    eta = resolve_eta(sampler, eta)
    entry = SAMPLERS[sampler]
    if spacing is not None and spacing not in entry.spacings:
        if entry.spacings == ("uniform",):
            raise ValueError(f"{sampler} runs on the official (uniform) timestep grid; drop the spacing")
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(entry.spacings)}")
    return SamplingPlan(entry, eta, entry.make_steps(schedule, num_steps, eta, spacing or entry.default_spacing))


def sample(sampler: str, eps_fn: EpsFn, x_T: Tensor, schedule: DiffusionSchedule, num_steps: int, *,
           eta: float | None = None, spacing: str | None = None, noise: NoiseFn | None = None,
           callback: Callback | None = None) -> Tensor:
    """Run a sampler by name from x_T with ``num_steps`` model evaluations (see :func:`plan_sampling`)."""
    return plan_sampling(sampler, schedule, num_steps, eta, spacing).run(eps_fn, x_T, noise=noise,
                                                                          callback=callback)
