"""The training objective: eps-prediction MSE on the shared schedule's forward process.

    t ~ U{0, ..., T-1},  eps ~ N(0, I),  x_t = schedule.q_sample(z0, t, eps)
    loss = mean((UNet(x_t, t, context, fps) - eps)^2)

``q_sample`` applies VideoCrafter2's latent scale (``x_t = sqrt(a_t) s_t z0 + sqrt(1 - a_t) eps``)
when the schedule has ``use_scale``, exactly as sampling undoes it. The fps condition is passed
to the UNet for every sample (a model without fps_cond ignores it). Timesteps, noise and caption
dropout are drawn per item in :mod:`vc2_core.training.batches`.

Optionally each sample's MSE is weighted by its noise level (:func:`snr_weights`); the objective stays
eps-prediction, only the share of each noise level in the gradient changes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..diffusion.schedule import DiffusionSchedule

Tensor = torch.Tensor


def signal_to_noise(schedule: DiffusionSchedule) -> Tensor:
    """(T,) float64 SNR(t) = a_t s_t^2 / (1 - a_t) of x_t = sqrt(a_t) s_t z0 + sqrt(1 - a_t) eps."""
    alphas = schedule.alphas_cumprod.double().cpu()
    return alphas * schedule.scales().double().cpu() ** 2 / (1 - alphas)


def snr_weights(schedule: DiffusionSchedule, cap: float) -> Tensor:
    """(T,) float32 loss weights clamp(1 / SNR(t), 1, cap), scaled to mean 1 over the timesteps.

    At high noise the eps target is almost the input itself (x_t / sqrt(1 - a_t)); what the prompt can add
    there is worth SNR(t) of its x0 error, under 0.5 % of the loss at t > 900 for VideoCrafter2's schedule,
    so with uniform weights a small UNet never learns it precisely. 1/SNR turns the high-noise terms into
    x0 errors; the cap keeps the highest levels from dominating (1/SNR reaches ~400 at t = 999)."""
    if cap < 1:
        raise ValueError(f"the SNR weight cap must be >= 1; got {cap}")
    weights = (1 / signal_to_noise(schedule)).clamp(1, cap)
    return (weights / weights.mean()).float()


def diffusion_loss(unet: nn.Module, schedule: DiffusionSchedule, latents: Tensor, context: Tensor,
                   fps: Tensor | int | None, timesteps: Tensor, noise: Tensor, *,
                   weights: Tensor | None = None) -> Tensor:
    """Scalar float32 MSE between the UNet's noise prediction and the noise.

    latents: (b, c, t, h, w) scaled VAE latents (t = 1 for an image as a one-frame clip);
    context: (b, L, d); timesteps: (b,) int64; noise: like latents (drawn per item by the caller:
    :class:`vc2_core.training.batches.BatchMaker`). weights: optional (T,) per-timestep weights
    (:func:`snr_weights`); each sample's mean squared error is multiplied by the weight of its timestep.
    """
    if latents.ndim != 5:
        raise ValueError(f"latents must be (b, c, t, h, w); got {tuple(latents.shape)}")
    timesteps, noise = timesteps.to(latents.device), noise.to(latents.device, torch.float32)
    x_t = schedule.q_sample(latents.float(), timesteps, noise)
    dtype = next(unet.parameters()).dtype
    prediction = unet(x_t.to(dtype), timesteps, context, fps)
    if weights is None:
        return F.mse_loss(prediction.float(), noise)
    per_sample = (prediction.float() - noise).pow(2).mean(dim=(1, 2, 3, 4))  # (b,)
    return (per_sample * weights.to(per_sample.device)[timesteps]).mean()
