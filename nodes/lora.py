"""Apply a LoRA written by the vc2 training pipeline, through ComfyUI's weight patches."""

from __future__ import annotations

import math

from ..vc2_core.training.lora import LoRAError, lora_weight_deltas, read_lora
from . import comfy
from .types import MODEL_TYPE, VideoModel


def patched(model: VideoModel, deltas: dict, strength: float, label: str) -> VideoModel:
    """A clone of the model's patcher with ``deltas`` added to its weights at load time (the input model,
    which ComfyUI may have cached for other branches, is left as it is)."""
    shapes = {key: value.shape for key, value in model.unet.state_dict().items()}
    wrong = [key for key, delta in deltas.items() if shapes.get(key) != delta.shape]
    if wrong:
        raise ValueError(f"{label} does not fit {model.name}: {len(wrong)} weights missing or of another shape, "
                         f"e.g. {wrong[0]}")
    patcher = model.patcher.clone()
    patcher.add_patches({f"diffusion_model.{key}": (delta,) for key, delta in deltas.items()}, strength)
    return VideoModel(patcher, model.config, model.schedule, f"{model.name} + {label}", model.attention)


class VC2LoraLoader:
    CATEGORY = "VideoCrafter2/loaders"
    DESCRIPTION = ("Applies a LoRA written by vc2's training (vc2 train with a -lora stage, or VC2 Spatial "
                   "Fine-Tune with a LoRA variant) from models/loras. Chain several for several LoRAs.")
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": "The VideoCrafter UNet."}),
            "lora_name": (comfy.model_files(comfy.LORA_FOLDER), {"tooltip": "A vc2 LoRA in ComfyUI/models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "1 = as trained, 0 = off."}),
        }}

    def apply(self, model: VideoModel, lora_name: str, strength: float):
        if not math.isfinite(strength):
            raise ValueError(f"strength {strength}: must be finite")
        path = comfy.full_path(comfy.LORA_FOLDER, lora_name)
        try:
            lora = read_lora(path)
        except LoRAError as error:
            raise ValueError(f"{lora_name}: not a LoRA written by vc2 ({error})") from None
        if lora.family != model.config.name:
            raise ValueError(f"{lora_name} was trained on {lora.family}; this model is {model.config.name}")
        return (patched(model, lora_weight_deltas(lora), strength, f"lora {lora_name}"),)
