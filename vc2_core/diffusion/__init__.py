"""Schedule (with VideoCrafter2's latent scale), the denoiser, guidance, noise sources, context windows, samplers."""

from .context import ContextWindows, windowed_eps
from .ddim import DDIMSchedule, ddim_sample, ddim_timesteps, make_ddim_schedule
from .denoiser import Denoiser, NoiseLevel, Prediction
from .guidance import GuidedEps
from .levels import SPACINGS, Levels, make_levels
from .noise import NoiseFn, generator_noise, replayed_noise, seeded_noise
from .registry import SAMPLERS, Sampler, SamplingPlan, get_sampler, plan_sampling, resolve_eta, sample
from .samplers import dpmpp_2m, euler, euler_ancestral
from .schedule import BUFFER_NAMES, DiffusionSchedule, scale_array, scaled_linear_betas
from .steps import EpsFn, SamplerStep

__all__ = [
    "BUFFER_NAMES",
    "SAMPLERS",
    "SPACINGS",
    "ContextWindows",
    "DDIMSchedule",
    "Denoiser",
    "DiffusionSchedule",
    "EpsFn",
    "GuidedEps",
    "Levels",
    "NoiseFn",
    "NoiseLevel",
    "Prediction",
    "Sampler",
    "SamplerStep",
    "SamplingPlan",
    "ddim_sample",
    "ddim_timesteps",
    "dpmpp_2m",
    "euler",
    "euler_ancestral",
    "generator_noise",
    "get_sampler",
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
