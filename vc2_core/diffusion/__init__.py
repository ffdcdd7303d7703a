"""Schedule (with VideoCrafter2's latent scale), guidance, noise sources, context windows and samplers."""

from .context import ContextWindows, windowed_eps
from .ddim import DDIMSchedule, ddim_sample, ddim_timesteps, make_ddim_schedule
from .guidance import GuidedEps
from .noise import NoiseFn, generator_noise, replayed_noise, seeded_noise
from .samplers import (
                       SAMPLERS,
                       SPACINGS,
                       Levels,
                       dpmpp_2m,
                       euler,
                       euler_ancestral,
                       make_levels,
                       plan_sampling,
                       resolve_eta,
                       sample,
)
from .schedule import BUFFER_NAMES, DiffusionSchedule, scale_array, scaled_linear_betas
from .steps import EpsFn, SamplerStep

__all__ = [
    "BUFFER_NAMES",
    "SAMPLERS",
    "SPACINGS",
    "ContextWindows",
    "DDIMSchedule",
    "DiffusionSchedule",
    "EpsFn",
    "GuidedEps",
    "Levels",
    "NoiseFn",
    "SamplerStep",
    "ddim_sample",
    "ddim_timesteps",
    "dpmpp_2m",
    "euler",
    "euler_ancestral",
    "generator_noise",
    "make_ddim_schedule",
    "make_levels",
    "plan_sampling",
    "replayed_noise",
    "resolve_eta",
    "sample",
    "scale_array",
    "scaled_linear_betas",
    "seeded_noise",
    "windowed_eps",
]
