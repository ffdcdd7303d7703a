"""Nodes that join the pack to ComfyUI's own sampling: the VC2 model as a ComfyUI MODEL, vc2's noise levels as
SIGMAS for SamplerCustom, and the fps condition on a CONDITIONING."""

from __future__ import annotations

import torch

from ..vc2_core.diffusion.levels import SPACINGS, make_levels
from .types import MODEL_TYPE, VideoModel

ENDS = ("official", "zero")


def vc2_schedule(model):
    """The schedule of a ComfyUI MODEL loaded by this pack, or a ValueError for other models."""
    schedule = getattr(model.model, "vc2_schedule", None)
    if schedule is None:
        raise ValueError("model: expected the MODEL output of Load VideoCrafter Checkpoint (or VC2 Model to MODEL); "
                         f"got a {type(model.model).__name__}")
    return schedule


class VC2ModelToComfy:
    CATEGORY = "VideoCrafter2/loaders"
    DESCRIPTION = ("The pack's VC2_MODEL (e.g. from VC2 Spatial Fine-Tune or VC2 LoRA Loader) as a ComfyUI MODEL for "
                   "KSampler and ComfyUI's model nodes. Nothing is copied: both are the same ModelPatcher.")
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The same UNet as a ComfyUI MODEL.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (MODEL_TYPE, {"tooltip": "A VideoCrafter model of the pack."})}}

    def convert(self, model: VideoModel):
        if not isinstance(model, VideoModel):
            raise ValueError(f"model: expected a VC2_MODEL of this pack; got a {type(model).__name__}")
        if model.config.unet.time_cond_proj_dim is not None:  # KSampler would call it without the scale embedding
            raise ValueError(f"model: {model.name} has T2V-Turbo's weights, whose UNet takes the guidance scale as an "
                             "input that ComfyUI's samplers do not give; sample it with VC2 Sampler (t2v-turbo)")
        return (model.patcher,)


class VC2Sigmas:
    CATEGORY = "VideoCrafter2/sampling"
    DESCRIPTION = ("The noise levels of vc2's own euler / euler_ancestral / dpmpp_2m samplers as SIGMAS for "
                   "SamplerCustom: integer timesteps on the log-SNR grid (vc2 sample's default) or the official DDIM "
                   "grid. 'official' ends at the released sampler's last level (alpha_bar_0); 'zero' at sigma 0, "
                   "as ComfyUI's schedulers do.")
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("steps + 1 decreasing sigmas of VideoCrafter's schedule (latent scale included).",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The MODEL output of Load VideoCrafter Checkpoint."}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 999, "tooltip": "Model evaluations."}),
            "spacing": (list(SPACINGS), {"default": "logsnr",
                                         "tooltip": "logsnr: vc2's default for its k-diffusion samplers; uniform: "
                                                    "the official DDIM timesteps."}),
            "end": (list(ENDS), {"default": "official",
                                 "tooltip": "official: stop at alpha_bar_0 as vc2 and the released code do; zero: "
                                            "end fully denoised, as ComfyUI's schedulers do."}),
        }}

    def sigmas(self, model, steps: int, spacing: str, end: str):
        schedule = vc2_schedule(model)
        if not 1 <= steps < schedule.num_timesteps:
            raise ValueError(f"steps {steps}: must be in [1, {schedule.num_timesteps - 1}]")
        if end not in ENDS:
            raise ValueError(f"end {end!r}: choose one of {', '.join(ENDS)}")
        levels = make_levels(schedule, steps, spacing)
        sigmas = torch.tensor(levels.sigmas, dtype=torch.float32)  # (steps + 1,), float64 -> float32 once
        if end == "zero":
            sigmas[-1] = 0.0
        return (sigmas,)


class VC2ConditioningFPS:
    CATEGORY = "VideoCrafter2/conditioning"
    DESCRIPTION = ("Sets VideoCrafter2's fps condition on a CONDITIONING for KSampler on the VC2 MODEL (without it the "
                   "checkpoint's released fps is used: 28 for VideoCrafter2). Lower = more motion.")
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The conditioning with its fps entry set.",)
    FUNCTION = "set_fps"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "From VC2 Text Encode or CLIP Text Encode."}),
            "fps": ("INT", {"default": 28, "min": 1, "max": 120, "tooltip": "The fps condition (released 28)."}),
        }}

    def set_fps(self, conditioning: list, fps: int):
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise ValueError(f"fps {fps}: must be a positive whole number")
        return ([[embedding, {**options, "fps": fps}] for embedding, options in conditioning],)
