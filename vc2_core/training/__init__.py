"""Training: stages, the objective, and one loop (loop.py) that ``vc2 train`` and the ComfyUI node drive."""

from .objective import diffusion_loss
from .stages import STAGES, DataKind, Stage, apply_stage, get_stage

__all__ = ["STAGES", "DataKind", "Stage", "apply_stage", "diffusion_loss", "get_stage"]
