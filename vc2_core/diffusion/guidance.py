"""Classifier-free guidance around the UNet, as an eps predictor for the samplers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

Tensor = torch.Tensor


@dataclass
class GuidedEps:
    """eps(x, t) = e_u + scale * (e_c - e_u) with e_c = UNet(x, t, context), e_u = UNet(x, t, uncond_context).

    context / uncond_context: (b, L, d) text embeddings (the official unconditional one is the
    encoding of ""). ``batched`` runs both branches in one UNet call of batch 2b (faster); False
    runs two calls of batch b (less memory). A scale of 1 or no uncond_context runs the
    conditional branch only, as the official sampler does.
    """

    unet: nn.Module
    context: Tensor
    uncond_context: Tensor | None
    scale: float
    fps: Tensor | int | None = None
    batched: bool = True

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.uncond_context is None or self.scale == 1.0:
            return self.unet(x, t, self.context, self.fps)
        if self.batched:
            fps = self.fps
            if isinstance(fps, Tensor) and fps.ndim == 1:
                fps = torch.cat([fps, fps])
            both = self.unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.context, self.uncond_context]), fps)
            e_cond, e_uncond = both.chunk(2)
        else:
            e_cond = self.unet(x, t, self.context, self.fps)
            e_uncond = self.unet(x, t, self.uncond_context, self.fps)
        return e_uncond + self.scale * (e_cond - e_uncond)
