"""Load a VideoCrafter2 / VideoCrafter1 checkpoint from ComfyUI's models/videocrafter folder."""

from __future__ import annotations

from ..vc2_core.attention import backend_names, check_backend_name, default_backend
from ..vc2_core.checkpoint import load_checkpoint
from ..vc2_core.detect import CheckpointError
from ..vc2_core.precision import DTYPES
from . import comfy
from .types import MODEL_TYPE, TEXT_ENCODER_TYPE, VAE_TYPE, TextEncoderModel, VAEModel, VideoModel


class VC2CheckpointLoader:
    CATEGORY = "VideoCrafter2/loaders"
    DESCRIPTION = ("Loads a VideoCrafter2 or VideoCrafter1 text-to-video checkpoint (.ckpt read safely, or "
                   ".safetensors) from models/videocrafter: the spatio-temporal UNet, its OpenCLIP text "
                   "encoder and VAE. The family (VC2-512, VC1-512, VC1-1024, or a vc2-trained size) is recognised "
                   "from the keys. Do not load these files with Load Checkpoint: ComfyUI takes them for SD2 and "
                   "drops every temporal layer.")
    RETURN_TYPES = (MODEL_TYPE, TEXT_ENCODER_TYPE, VAE_TYPE, "MODEL")
    RETURN_NAMES = ("model", "clip", "vae", "MODEL")
    OUTPUT_TOOLTIPS = ("The spatio-temporal UNet and its schedule.",
                       "The checkpoint's OpenCLIP text encoder (penultimate layer), for VC2 Text Encode.",
                       "The checkpoint's VAE, for VC2 VAE Decode.",
                       "The same UNet as a ComfyUI MODEL (VideoCrafter's schedule, latent scale and fps condition), "
                       "for KSampler, SamplerCustom, LoraLoaderModelOnly, TorchCompileModel, EasyCache.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (comfy.model_files(comfy.MODEL_FOLDER),
                          {"tooltip": "A checkpoint in ComfyUI/models/videocrafter."}),
            "dtype": (list(DTYPES), {"default": "fp32",
                                     "tooltip": "Weight dtype. fp32 is the released precision; bf16/fp16 halve "
                                                "the memory on GPUs (the VAE always stays fp32)."}),
            "attention": (list(backend_names()), {
                "default": default_backend(),
                "tooltip": "Attention backend. auto: the Triton temporal kernel on CUDA in bf16/fp16 inference, "
                           "PyTorch SDPA elsewhere (and for training). math is the float32 reference."}),
        }}

    def load(self, ckpt_name: str, dtype: str, attention: str):
        check_backend_name(attention)
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        path = comfy.full_path(comfy.MODEL_FOLDER, ckpt_name)
        try:
            model, info = load_checkpoint(path, dtype=DTYPES[dtype], for_inference=True)
        except CheckpointError as error:
            raise ValueError(f"{ckpt_name} is not a VideoCrafter checkpoint this pack can load: {error}") from None
        config = model.config
        video = VideoModel(comfy.video_model_patcher(model.unet, config, model.schedule, attention), config,
                           model.schedule, ckpt_name, attention)
        return (video, TextEncoderModel(comfy.patcher(model.text_encoder, "text_encoder"), config),
                VAEModel(comfy.patcher(model.vae, "vae"), config), video.patcher)
