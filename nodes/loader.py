"""Load a VideoCrafter2 / VideoCrafter1 checkpoint from ComfyUI's models/videocrafter folder."""

from __future__ import annotations

import os

import torch

from ..vc2_core.attention import backend_names, default_backend
from ..vc2_core.checkpoint import load_checkpoint

MODEL_FOLDER = "videocrafter"
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _model_files() -> list[str]:
    """Files of models/videocrafter (registered on first use; users' extra_model_paths entries are kept)."""
    import folder_paths  # ComfyUI's module; imported here so the pack imports without ComfyUI

    if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    folder_paths.folder_names_and_paths[MODEL_FOLDER][1].update(CHECKPOINT_EXTENSIONS)
    return folder_paths.get_filename_list(MODEL_FOLDER)


class VC2CheckpointLoader:
    CATEGORY = "VideoCrafter2/loaders"
    DESCRIPTION = ("Loads a VideoCrafter2 or VideoCrafter1 text-to-video checkpoint (.ckpt read safely, or "
                   ".safetensors) from models/videocrafter: the spatio-temporal UNet, its OpenCLIP text "
                   "encoder and VAE. The family (VC2-512, VC1-512, VC1-1024) is recognised from the keys.")
    RETURN_TYPES = ("VC2_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The VideoCrafter model (UNet, text encoder, VAE and schedule).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (_model_files(), {"tooltip": "A checkpoint in ComfyUI/models/videocrafter."}),
            "dtype": (list(DTYPES), {"default": "fp32",
                                     "tooltip": "Weight dtype. fp32 is the released precision; bf16/fp16 halve "
                                                "the memory on GPUs."}),
            "attention": (list(backend_names()), {
                "default": default_backend(),
                "tooltip": "Attention backend. auto: the Triton temporal kernel on CUDA in bf16/fp16 inference, "
                           "PyTorch SDPA elsewhere (and for training). math is the float32 reference."}),
        }}

    def load(self, ckpt_name: str, dtype: str, attention: str):
        import folder_paths

        path = folder_paths.get_full_path_or_raise(MODEL_FOLDER, ckpt_name)
        model, _ = load_checkpoint(path, dtype=DTYPES[dtype])
        model.unet.set_attention_backend(attention)
        return (model,)
