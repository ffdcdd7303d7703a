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
    conditional branch only, as the official sampler does. ``rescale`` (0 = off) is guidance
    rescale (Lin et al. 2024, eq. 15-16): the guided prediction is pulled back to the standard
    deviation of the conditional one. ``dtype`` is the UNet's compute dtype; the samplers keep
    their state in x's dtype (float32).
    """

    unet: nn.Module
    context: Tensor
    uncond_context: Tensor | None
    scale: float
    fps: Tensor | int | None = None
    batched: bool = True
    rescale: float = 0.0
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"guidance scale must be >= 0; got {self.scale}")
        if not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"guidance rescale must be in [0, 1]; got {self.rescale}")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        x_in = x if self.dtype is None else x.to(self.dtype)
        if self.uncond_context is None or self.scale == 1.0:
            return self.unet(x_in, t, self.context, self.fps).to(x.dtype)
        if self.batched:
            fps = self.fps
            if isinstance(fps, Tensor) and fps.ndim == 1:
                fps = torch.cat([fps, fps])
            both = self.unet(torch.cat([x_in, x_in]), torch.cat([t, t]),
                             torch.cat([self.context, self.uncond_context]), fps)
            e_cond, e_uncond = both.to(x.dtype).chunk(2)
        else:
            e_cond = self.unet(x_in, t, self.context, self.fps).to(x.dtype)
            e_uncond = self.unet(x_in, t, self.uncond_context, self.fps).to(x.dtype)
        return guide(e_cond, e_uncond, self.scale, self.rescale)


def guide(e_cond: Tensor, e_uncond: Tensor, scale: float, rescale: float) -> Tensor:
    """e_u + scale * (e_c - e_u), with ``rescale`` of guidance rescale (see :class:`GuidedEps`)."""
    guided = e_uncond + scale * (e_cond - e_uncond)
    if rescale > 0:
        dims = tuple(range(1, guided.ndim))
        rescaled = guided * (e_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = rescale * rescaled + (1 - rescale) * guided
    return guided
