"""Training: which parameters a stage trains, and the diffusion objective (the loop, data and engine follow)."""

from .objective import UNCOND_PROB, diffusion_loss, drop_captions, sample_timesteps
from .stages import STAGES, Stage, apply_stage, get_stage

__all__ = ["STAGES", "UNCOND_PROB", "Stage", "apply_stage", "diffusion_loss", "drop_captions", "get_stage",
           "sample_timesteps"]
