"""Write a vc2 LoRA in the layout ComfyUI's LoraLoaderModelOnly maps onto the VC2 MODEL."""

from __future__ import annotations

import os

from ..vc2_core.training.lora import LoRAError, read_lora
from ..vc2_core.training.lora.comfyui_format import write_comfyui_lora
from . import comfy

SUFFIX = "_comfyui.safetensors"


class VC2LoraToComfyUI:
    CATEGORY = "VideoCrafter2/loaders"
    DESCRIPTION = ("Writes a copy of a vc2 LoRA (vc2 train, VC2 Spatial Fine-Tune) that ComfyUI's LoraLoaderModelOnly "
                   "applies to the VC2 MODEL: keys under diffusion_model. and alpha per layer, the same weights. "
                   f"The copy is NAME{SUFFIX} beside it in models/loras (refresh to see it).")
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "lora_name": (comfy.model_files(comfy.LORA_FOLDER), {"tooltip": "A vc2 LoRA in ComfyUI/models/loras."}),
        }}

    def convert(self, lora_name: str):
        path = comfy.full_path(comfy.LORA_FOLDER, lora_name)
        try:
            lora = read_lora(path)
        except LoRAError as error:
            raise ValueError(f"{lora_name}: not a LoRA written by vc2 ({error})") from None
        target = path.removesuffix(".safetensors") + SUFFIX
        write_comfyui_lora(lora, target)
        return {"ui": {"text": [f"wrote {os.path.basename(target)} for LoraLoaderModelOnly ({lora.family})"]}}
