"""The training objective with its timesteps and noise drawn from one generator, for tests that train a bare UNet
(the library draws them per item in vc2_core.training.batches)."""

from __future__ import annotations

import torch

from vc2_core.training.objective import diffusion_loss


def drawn_loss(unet, schedule, latents: torch.Tensor, context: torch.Tensor, fps, generator: torch.Generator):
    """diffusion_loss with (b,) uniform timesteps, then noise like ``latents``, drawn from ``generator``."""
    timesteps = torch.randint(0, schedule.num_timesteps, (latents.shape[0],), generator=generator)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    return diffusion_loss(unet, schedule, latents, context, fps, timesteps, noise)
