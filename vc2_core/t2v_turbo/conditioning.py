"""The scale embedding T2V-Turbo feeds its UNet, and the eps predictor its sampler calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

EMBEDDING_DIM = 256  # their pipeline's embedding_dim, and the width of time_cond_proj / motion_cond_proj


def scale_embedding(scales: Tensor, dim: int = EMBEDDING_DIM) -> Tensor:
    """VDM's sinusoid of a guidance scale w (their ``get_w_embedding``): (b,) -> (b, dim) float32.

    w is multiplied by 1000; f_k = exp(-k ln(10000) / (half - 1)) for k < half = dim // 2; the result
    is [sin(1000 w f), cos(1000 w f)], **sin first** (the UNet's timestep sinusoid puts cos first),
    with a zero column appended for odd dim.
    """
    if scales.ndim != 1:
        raise ValueError(f"scale_embedding takes one scale per sample (b,); got shape {tuple(scales.shape)}")
    half = dim // 2
    # float32 throughout, in their order: the arguments reach ~10^4, so one ulp of the frequency step matters
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    args = (scales.float().cpu() * 1000.0)[:, None] * freqs[None, :]  # (b, half)
    embedding = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding.to(scales.device)


@dataclass
class TurboEps:
    """eps(x, t) of a T2V-Turbo UNet: one call, with the guidance scale (and motion guidance) as embeddings.

    ``unet`` is called as ``unet(x, t, context, fps, timestep_cond=..., motion_cond=...)``
    (:class:`vc2_core.modules.UNetModel` built with :func:`vc2_core.t2v_turbo.turbo_config`).
    context: (b, L, d) text embeddings. ``motion_scale`` is T2V-Turbo-v2's motion guidance (their
    ``motion_gs``; None leaves the condition out, as their v1 does): it applies while t >= T * (1 -
    ``motion_share``) (their ``percentage``) and is 0 below. ``dtype`` is the UNet's compute dtype;
    the result is in x's dtype.
    """

    unet: Callable[..., Tensor]
    context: Tensor
    guidance_scale: float = 7.5
    fps: Tensor | int | None = None
    motion_scale: float | None = None
    motion_share: float = 0.5  # their release's percentage
    num_timesteps: int = 1000
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.motion_share <= 1.0:
            raise ValueError(f"motion_share is a share of the timesteps, 0 to 1; got {self.motion_share}")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        conditions = {"timestep_cond": scale_embedding(torch.full((b,), float(self.guidance_scale))).to(x.device)}
        if self.motion_scale is not None:
            on = t.cpu() >= self.num_timesteps * (1 - self.motion_share)  # (b,)
            motion = torch.where(on, float(self.motion_scale), 0.0)
            conditions["motion_cond"] = scale_embedding(motion).to(x.device)
        if self.dtype is not None:
            conditions = {name: value.to(self.dtype) for name, value in conditions.items()}
        x_in = x if self.dtype is None else x.to(self.dtype)
        return self.unet(x_in, t, self.context, self.fps, **conditions).to(x.dtype)
