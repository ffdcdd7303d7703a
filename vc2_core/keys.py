"""Prefixes of the official checkpoint layout (a LatentDiffusion state dict)."""

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."


def under_prefix(state: dict, prefix: str) -> dict:
    """The entries of ``state`` whose keys start with ``prefix``, the prefix removed."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
