"""Prefixes of the official checkpoint layout (a LatentDiffusion state dict)."""

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
