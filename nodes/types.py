"""The pack's own ComfyUI types: the networks of a VideoCrafter checkpoint, each under a ModelPatcher.

The pack returns its own text encoder and VAE types rather than ComfyUI's CLIP and VAE: ComfyUI
recognises a released VideoCrafter2 file's OpenCLIP and VAE (as SD2's), but not the sizes this
project trains and tests with, and its default fp16 text encoder on CPU is 3.6e-3 away from the
official fp32 embeddings. ComfyUI's standard CLIP Text Encode still plugs in: the sampler takes
CONDITIONING, from ``VC2_TextEncode`` or from CLIP Text Encode with the same checkpoint loaded by
ComfyUI's CheckpointLoaderSimple (its CLIP is this OpenCLIP-H; only its MODEL is wrong for video).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..vc2_core.config import ModelConfig
from ..vc2_core.diffusion.schedule import DiffusionSchedule

MODEL_TYPE = "VC2_MODEL"
TEXT_ENCODER_TYPE = "VC2_CLIP"
VAE_TYPE = "VC2_VAE"


@dataclass(frozen=True)
class VideoModel:
    """The spatio-temporal UNet (``unet``), its schedule and the checkpoint's config. ``patcher`` is also the
    loader's ComfyUI MODEL output, so the pack's nodes and ComfyUI's share one ModelPatcher."""

    patcher: object  # comfy.model_patcher.ModelPatcher of nodes/comfy_native.py's VideoCrafterModel
    config: ModelConfig
    schedule: DiffusionSchedule
    name: str  # the checkpoint it came from, with what was applied to it ("+ lora x", "+ spa-dir 200 steps")
    attention: str  # the loader's attention backend; the sampler and fine-tune nodes run the UNet under it

    @property
    def unet(self):
        """The vc2_core UNetModel (``diffusion_model`` of the ComfyUI model)."""
        return self.patcher.model.diffusion_model


@dataclass(frozen=True)
class TextEncoderModel:
    patcher: object  # ModelPatcher of a vc2_core TextEncoder
    config: ModelConfig


@dataclass(frozen=True)
class VAEModel:
    patcher: object  # ModelPatcher of a vc2_core VideoVAE
    config: ModelConfig
