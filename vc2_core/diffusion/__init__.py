"""Schedule (with VideoCrafter2's latent scale), guidance and samplers."""

from .ddim import DDIMSchedule, DDIMStep, ddim_sample, ddim_timesteps, make_ddim_schedule
from .guidance import GuidedEps
from .schedule import BUFFER_NAMES, DiffusionSchedule, scale_array, scaled_linear_betas

__all__ = [
    "BUFFER_NAMES",
    "DDIMSchedule",
    "DDIMStep",
    "DiffusionSchedule",
    "GuidedEps",
    "ddim_sample",
    "ddim_timesteps",
    "make_ddim_schedule",
    "scale_array",
    "scaled_linear_betas",
]
