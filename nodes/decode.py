"""Video latents to IMAGE frames with the checkpoint's VAE."""

from __future__ import annotations

import torch

from . import comfy
from .types import VAE_TYPE, VAEModel


class VC2VAEDecode:
    CATEGORY = "VideoCrafter2/latent"
    DESCRIPTION = ("Decodes video latents frame by frame with the checkpoint's VAE (as the official inference "
                   "does) into IMAGE frames: every frame of video 1, then of video 2, ...")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Frames [N, H, W, 3] in 0..1 (N = videos x frames), for VC2 Save Video or any IMAGE node.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE_TYPE, {"tooltip": "The VAE from Load VideoCrafter Checkpoint."}),
            "latent": ("LATENT", {"tooltip": "Video latents from VC2 Sampler."}),
            "chunk_frames": ("INT", {"default": 1, "min": 1, "max": 1024,
                                     "tooltip": "Frames (of every video) decoded per VAE call (1 = the official "
                                                "frame-by-frame decode, least memory)."}),
        }}

    def decode(self, vae: VAEModel, latent: dict, chunk_frames: int):
        samples = latent["samples"]  # (b, z, t, h, w), unscaled
        channels = vae.config.vae.z_channels
        if samples.ndim != 5 or samples.shape[1] != channels:
            raise ValueError(f"latent: expected video latents (batch, {channels}, frames, h, w) from VC2 Sampler; "
                             f"got {tuple(samples.shape)}")
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames {chunk_frames}: must be at least 1")
        comfy.load([vae.patcher])
        network = vae.patcher.model
        device, dtype = vae.patcher.load_device, next(network.parameters()).dtype
        with torch.no_grad():
            videos = network.decode_unscaled_video(samples.to(device, dtype), chunk_frames=chunk_frames,
                                                   before_chunk=comfy.check_interrupt)  # (b, 3, t, H, W) in [-1, 1]
        frames = videos.permute(0, 2, 3, 4, 1).flatten(0, 1)  # ((b t), H, W, 3)
        return (((frames.float() + 1) / 2).clamp(0, 1).to(comfy.intermediate_device()),)
