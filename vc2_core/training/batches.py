"""From drawn data items to what the loss needs: latents, text context, fps, timesteps and noise.

Every random number of an item comes from a generator keyed by (seed, stream, item key, purpose)
(:func:`vc2_core.training.data.draw_generator`): the VAE posterior sample, caption dropout, the
timestep and the noise. So an item is treated the same whatever process, batch or resumed run it
lands in, which is what makes data-parallel runs equal one-process runs with the same global
batch, and killed-and-resumed runs equal uninterrupted ones.

Images enter the video model in one of two ways (``images.mode``):

- ``frame`` (default): each image is a one-frame clip (t = 1). Temporal layers see a single frame,
  as they would for a still, and learn no motion from unrelated images.
- ``pack``: ``frames`` images form one pseudo-clip (t = frames) with one text per frame and one
  timestep per clip; more images per UNet call, but the temporal layers mix unrelated images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..text import TextEncoder
from ..vae import VideoVAE
from .data import Drawn, draw_generator

Tensor = torch.Tensor


@dataclass(frozen=True)
class TrainBatch:
    latents: Tensor  # (b, z, t, h, w) scaled latents
    context: Tensor  # (b, L, d), or (b*t, L, d) for packed images (one text per frame)
    fps: Tensor  # (b,) int64
    timesteps: Tensor  # (b,) int64
    noise: Tensor  # (b, z, t, h, w) float32
    keys: list[int]  # the item key of each clip (its first item for packed images)


@dataclass(frozen=True)
class CachedSample:
    """An item of a latent cache: the VAE posterior moments and the text embedding of its caption."""

    moments: Tensor  # (2z, t, h, w): posterior mean and log-variance, concatenated on channels
    context: Tensor  # (L, d)
    fps: int
    source: str


class BatchMaker:
    """Encodes drawn items (pixels through the frozen VAE and text encoder, or cached) into a TrainBatch."""

    def __init__(self, vae: VideoVAE, text_encoder: TextEncoder | None, num_timesteps: int, *, seed: int,
                 caption_dropout: float, uncond: Tensor, device: torch.device):
        """``text_encoder`` may be None when every batch comes from a cache (its contexts are encoded)."""
        self.vae, self.text_encoder, self.num_timesteps = vae, text_encoder, num_timesteps
        self.seed, self.caption_dropout, self.device = seed, caption_dropout, device
        self.uncond = uncond.to(device)  # (1, L, d): the text embedding of ""

    def _generator(self, stream: str, key: int, purpose: str) -> torch.Generator:
        return draw_generator(self.seed, key, f"{stream}/{purpose}")

    @torch.no_grad()
    def from_pixels(self, stream: str, drawn: list[Drawn], pack: int = 1) -> TrainBatch:
        """``drawn`` samples' pixels (3, t, H, W) -> a batch; ``pack`` > 1 groups one-frame items into clips."""
        pixels = torch.stack([d.sample.pixels for d in drawn])  # (n, 3, t, H, W)
        n, _, t, height, width = pixels.shape
        f, z = self.vae.config.downsample_factor, self.vae.config.z_channels
        posterior_noise = torch.cat([
            torch.randn((t, z, height // f, width // f), generator=self._generator(stream, d.key, "posterior"))
            for d in drawn])  # ((n t), z, h, w), row i*t + frame
        if pack > 1:
            if t != 1 or n % pack:
                raise ValueError(f"packing needs one-frame items in groups of {pack}; got {n} items of {t} frames")
            pixels = pixels.view(n // pack, pack, 3, height, width).transpose(1, 2)  # (b, 3, pack, H, W)
        vae = self.vae
        dtype = next(vae.parameters()).dtype
        latents = vae.encode_video(pixels.to(self.device, dtype), noise=posterior_noise).float()
        if self.text_encoder is None:
            raise ValueError("batches from pixels need the text encoder")
        context = self.text_encoder.encode([d.sample.caption for d in drawn])  # (n, L, d)
        context = self._drop_captions(stream, drawn, context)
        firsts = drawn[::pack]
        fps = torch.tensor([d.sample.fps for d in firsts], dtype=torch.long)
        return self._finish(stream, firsts, latents, context, fps)

    @torch.no_grad()
    def from_cache(self, stream: str, drawn: list[Drawn], pack: int = 1) -> TrainBatch:
        """Cached moments -> latents sampled as ``encode_video`` samples them (same keyed noise)."""
        moments = torch.stack([d.sample.moments.float() for d in drawn])  # (n, 2z, t, h, w)
        n, _, t, h, w = moments.shape
        mean, logvar = self.vae.split_moments(moments)  # (n, z, t, h, w) each, logvar clamped
        eps = torch.stack([
            torch.randn((t, mean.shape[1], h, w), generator=self._generator(stream, d.key, "posterior"))
            .transpose(0, 1) for d in drawn])  # (n, z, t, h, w)
        latents = self.vae.scale_factor * (mean + torch.exp(0.5 * logvar) * eps)
        if pack > 1:
            if t != 1 or n % pack:
                raise ValueError(f"packing needs one-frame items in groups of {pack}; got {n} items of {t} frames")
            latents = latents.view(n // pack, pack, -1, h, w).transpose(1, 2)  # (b, z, pack, h, w)
        context = torch.stack([d.sample.context.float() for d in drawn]).to(self.device)
        context = self._drop_captions(stream, drawn, context)
        firsts = drawn[::pack]
        fps = torch.tensor([d.sample.fps for d in firsts], dtype=torch.long)
        return self._finish(stream, firsts, latents.to(self.device), context, fps)

    def _drop_captions(self, stream: str, drawn: list[Drawn], context: Tensor) -> Tensor:
        """Each item's text replaced by the encoding of "" with probability ``caption_dropout``."""
        if self.caption_dropout == 0.0:
            return context
        drop = torch.tensor([torch.rand((), generator=self._generator(stream, d.key, "dropout")).item()
                             < self.caption_dropout for d in drawn], device=context.device)
        return torch.where(drop.view(-1, 1, 1), self.uncond.to(context.dtype), context)

    def _finish(self, stream: str, firsts: list[Drawn], latents: Tensor, context: Tensor, fps: Tensor) -> TrainBatch:
        num_timesteps = self.num_timesteps
        timesteps, noise = [], []
        for d in firsts:
            generator = self._generator(stream, d.key, "noise")
            timesteps.append(torch.randint(0, num_timesteps, (1,), generator=generator))
            noise.append(torch.randn(latents.shape[1:], generator=generator))
        return TrainBatch(latents=latents, context=context, fps=fps.to(self.device),
                          timesteps=torch.cat(timesteps).to(self.device), noise=torch.stack(noise).to(self.device),
                          keys=[d.key for d in firsts])
