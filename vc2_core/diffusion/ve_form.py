"""VideoCrafter's scaled process in the variance-exploding form that k-diffusion samplers (ComfyUI's) step in.

The UNet is trained on x_t = a_t x0 + sqrt(1 - alpha_bar_t) eps with a_t = sqrt(alpha_bar_t) s_t, where s_t
is VideoCrafter2's latent scale (``scale_arr``; 1 without ``use_scale``). Dividing by a_t gives

    z = x_t / a_t = x0 + sigma_t eps,    sigma_t = sqrt(1 - alpha_bar_t) / a_t,

the form k-diffusion samplers expect: they hold z, ask for the denoised x0 = z - sigma eps, and step in
sigma. The scale enters in one place only, the model input x_t = a(sigma) z: with s_t = 1 this is the
familiar z / sqrt(1 + sigma^2) of Stable Diffusion, and with the scale it is not (sigma alone does not
give a_t, so a is looked up by sigma on the same table). The samplers of :mod:`.samplers` step in the
same z (``levels.py``), so both families solve one ODE.

The sampler's start from pure noise is x_T ~ N(0, I) in the UNet's coordinates (the official sampler),
i.e. z_T = noise / a(sigma_T); with s_t = 1 that is ComfyUI's noise * sqrt(1 + sigma^2).
"""

from __future__ import annotations

import torch

from .schedule import DiffusionSchedule

Tensor = torch.Tensor


class VEForm:
    """sigma_t and a_t of every timestep (float64, CPU), and the conversions between x_t and z."""

    def __init__(self, schedule: DiffusionSchedule):
        alpha_bar = schedule.alphas_cumprod.detach().double().cpu()
        self.signals = alpha_bar.sqrt() * schedule.scales().detach().double().cpu()  # a_t, (T,)
        self.sigmas = (1 - alpha_bar).sqrt() / self.signals  # sigma_t, (T,), increasing with t
        self._log_sigmas = self.sigmas.log()
        self._log_signals = self.signals.log()

    def timestep(self, sigma: Tensor) -> Tensor:
        """The timestep whose sigma is nearest in log sigma (an integer, as float64), per element of sigma."""
        distances = (sigma.detach().double().cpu().reshape(-1, 1).log() - self._log_sigmas).abs()  # (n, T)
        return distances.argmin(dim=1).double().reshape(sigma.shape)

    def signal(self, sigma: Tensor) -> Tensor:
        """a(sigma) (float64, CPU, like sigma): a_t at the table's sigmas, log a linear in log sigma between
        them (the same interpolation that gives sigma at a fractional timestep), a_0 / a_(T-1) outside."""
        log_sigma = sigma.detach().double().cpu().reshape(-1).log().clamp(self._log_sigmas[0], self._log_sigmas[-1])
        upper = torch.searchsorted(self._log_sigmas, log_sigma).clamp(1, len(self.sigmas) - 1)  # (n,)
        lower = upper - 1
        weight = (log_sigma - self._log_sigmas[lower]) / (self._log_sigmas[upper] - self._log_sigmas[lower])
        log_signal = torch.lerp(self._log_signals[lower], self._log_signals[upper], weight)
        return log_signal.exp().reshape(sigma.shape)

    def model_input(self, sigma: Tensor, z: Tensor) -> Tensor:
        """x_t = a(sigma) z, the UNet's input. sigma: (b,) or scalar; z: (b, c, t, h, w)."""
        return z * _per_sample(self.signal(sigma), z)

    @staticmethod
    def denoised(sigma: Tensor, eps: Tensor, z: Tensor) -> Tensor:
        """x0 = z - sigma eps (the un-scaled clean latents)."""
        return z - eps * _per_sample(sigma, z)

    def start(self, sigma: Tensor, noise: Tensor, latent: Tensor, from_pure_noise: bool) -> Tensor:
        """z at the first level: from pure noise x_T = noise (z = noise / a); else the forward process of
        ``latent`` at sigma (z = latent + sigma noise), as for image-to-image or a later start."""
        if from_pure_noise:
            return noise / _per_sample(self.signal(sigma), noise) + latent
        return latent + noise * _per_sample(sigma, noise)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """A scalar or (b,) tensor shaped (b, 1, ..., 1) (or ()) to broadcast over ``like``, on its device and dtype."""
    values = values.to(like.device, like.dtype)
    if values.numel() == 1:
        return values.reshape(())
    return values.reshape(values.shape[0], *((1,) * (like.ndim - 1)))
