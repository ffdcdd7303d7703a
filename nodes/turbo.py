"""T2V-Turbo (VC2) in ComfyUI: their weights from models/loras turned into a model for the t2v-turbo sampler."""

from __future__ import annotations

import math

from ..vc2_core.t2v_turbo import TurboUNet, TurboWeightsError, check_turbo_base, read_turbo_weights, turbo_unet
from . import comfy
from .types import MODEL_TYPE, VideoModel

TURBO_EXTENSIONS = (".pt", ".pth")  # their files are torch pickles (read as tensors only)


class VC2TurboLoader:
    CATEGORY = "VideoCrafter2/loaders"
    DESCRIPTION = ("T2V-Turbo (VC2): VideoCrafter2 distilled to 4-step sampling (public repository "
                   "Ji4chenLi/t2v-turbo). Applies their unet_lora.pt (or T2V-Turbo-v2's whole UNet, unet_mg.pt / "
                   "unet_no_mg.pt) from models/loras, read as tensors only, and gives the UNet their guidance-scale "
                   "embedding. Sample it with VC2 Sampler, sampler_name t2v-turbo, steps 4, cfg 7.5 (their "
                   "defaults). Builds a second UNet: the input model stays as it was.")
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("T2V-Turbo's UNet (VideoCrafter2's weights with theirs), for VC2 Sampler with t2v-turbo.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        files = [name for name in comfy.model_files(comfy.LORA_FOLDER) if name.endswith(TURBO_EXTENSIONS)]
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": "A VideoCrafter2 UNet (Load VideoCrafter Checkpoint; VC2 LoRA Loader's "
                                              "output works too: their weights go on top)."}),
            "turbo_name": (files, {"tooltip": "T2V-Turbo's weights in ComfyUI/models/loras (.pt): unet_lora.pt of "
                                              "T2V-Turbo (VC2), or unet_mg.pt / unet_no_mg.pt of T2V-Turbo-v2."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "Their LoRA's strength: 1 = as released, 0 = VideoCrafter2's weights "
                                              "(with the guidance embedding). A whole T2V-Turbo-v2 UNet: 1 only."}),
        }}

    def apply(self, model: VideoModel, turbo_name: str, strength: float):
        check_turbo_base(model.config.unet, model.name)
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength {strength}: must be a finite number >= 0 (1 = as released)")
        path = comfy.full_path(comfy.LORA_FOLDER, turbo_name)
        try:
            weights = read_turbo_weights(path)
        except TurboWeightsError as error:
            raise ValueError(f"{turbo_name}: not T2V-Turbo's weights ({_reason(error, path)})") from None
        if isinstance(weights, TurboUNet) and strength != 1.0:
            raise ValueError(f"{turbo_name} is a whole T2V-Turbo-v2 UNet, which has no strength; set strength 1 "
                             f"(got {strength})")
        comfy.load([model.patcher])  # the input's ComfyUI weight patches (VC2 LoRA Loader) applied: read as used
        try:
            unet = turbo_unet(model.unet, weights, strength=strength, device=model.patcher.offload_device)
        except TurboWeightsError as error:
            raise ValueError(f"{turbo_name} does not fit {model.name}: {_reason(error, path)}") from None
        config = model.config.replace(unet=unet.config)
        label = f"t2v-turbo {turbo_name}" + (f" x{strength:g}" if strength != 1.0 else "")
        patcher = comfy.video_model_patcher(unet, config, model.schedule, model.attention)
        return (VideoModel(patcher, config, model.schedule, f"{model.name} + {label}", model.attention),)


def _reason(error: TurboWeightsError, path: str) -> str:
    """The library's message without the file's full path in front (the node names the file itself)."""
    return str(error).removeprefix(f"{path}: ")
