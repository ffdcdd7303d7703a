"""Text to CONDITIONING with the checkpoint's own OpenCLIP text encoder."""

from __future__ import annotations

import torch

from . import comfy
from .types import TEXT_ENCODER_TYPE, TextEncoderModel


class VC2TextEncode:
    CATEGORY = "VideoCrafter2/conditioning"
    DESCRIPTION = ("Encodes a prompt with the checkpoint's OpenCLIP text encoder (penultimate layer, 77 tokens, "
                   "longer prompts truncated as in the official code). Use one for the prompt and one for the "
                   "negative prompt (empty = the official unconditional prompt).")
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The text embedding (1, 77, width) for VC2 Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": (TEXT_ENCODER_TYPE, {"tooltip": "The text encoder from Load VideoCrafter Checkpoint."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                "tooltip": "The prompt (or the negative prompt; empty is the official "
                                           "unconditional prompt)."}),
        }}

    def encode(self, clip: TextEncoderModel, text: str):
        comfy.load([clip.patcher])
        with torch.no_grad():
            embedding = clip.patcher.model.encode([text])  # (1, 77, width)
        return ([[embedding.float().to(comfy.intermediate_device()), {}]],)
