"""An empty video latent of a size the model can sample."""

from __future__ import annotations

import torch

from ..vc2_core.config import size_problems
from ..vc2_core.pipeline import latent_shape
from . import comfy
from .types import MODEL_TYPE, VideoModel

MAX_SIZE = 4096


def check_size(model: VideoModel, height: int, width: int) -> None:
    """ValueError unless height and width are multiples of the model's pixel multiple (64 for VC2/VC1)."""
    problems = size_problems(model.config, height, width)
    if problems:
        raise ValueError(f"{model.name}: " + "; ".join(problems))


class VC2EmptyVideoLatent:
    CATEGORY = "VideoCrafter2/latent"
    DESCRIPTION = ("Zeros of the latent shape (batch, 4, frames, height/8, width/8) for VC2 Sampler. The model "
                   "input sets the channels and the VAE factor and checks the size (VideoCrafter2: multiples of "
                   "64; 320x512 and 16 frames as released).")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("An empty video latent (b, c, t, h, w).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": "The model the latent is for (its latent channels and size rules)."}),
            "width": ("INT", {"default": 512, "min": 8, "max": MAX_SIZE, "step": 8,
                              "tooltip": "Video width in pixels (VideoCrafter2: a multiple of 64; released 512)."}),
            "height": ("INT", {"default": 320, "min": 8, "max": MAX_SIZE, "step": 8,
                               "tooltip": "Video height in pixels (VideoCrafter2: a multiple of 64; released 320)."}),
            "frames": ("INT", {"default": 16, "min": 1, "max": 1024,
                               "tooltip": "Number of frames (released 16; longer videos: use context windows in "
                                          "the sampler)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos per run."}),
        }}

    def make(self, model: VideoModel, width: int, height: int, frames: int, batch_size: int):
        check_size(model, height, width)
        for name, value in (("frames", frames), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} {value}: must be at least 1")
        shape = latent_shape(model.config, frames, height, width, batch_size)  # (b, z, t, h, w)
        return ({"samples": torch.zeros(shape, device=comfy.intermediate_device())},)
