"""The diffusion schedule, which owns VideoCrafter2's scale quirk.

VideoCrafter2 (``use_scale``) diffuses a per-timestep *down-scaled* latent:

    x_t = sqrt(a_t) * s_t * x0 + sqrt(1 - a_t) * eps,   s_t = scale_arr[t]

with ``scale_arr`` = linspace(scale_a, scale_b, mid_step) followed by a constant scale_b tail
(s_t goes 1 -> 0.7 over t = 0..399 and stays 0.7). The eps target is unchanged. Every sampler
and the training loss read ``q_sample`` / ``scale`` from this one object, so they cannot disagree.

All buffers are computed in float64 and stored in float32 as the official ``register_schedule``
does; their names are the official checkpoint keys. The schedule is not an ``nn.Module``: moving
or casting a model (``model.to(torch.bfloat16)``) never touches it; its values are gathered onto
the device of the timesteps when used.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ScheduleConfig

Tensor = torch.Tensor

# Persistent buffers of the official LatentDiffusion, in checkpoint order (scale_arr last, VC2 only).
BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def scaled_linear_betas(timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """What the official code calls the "linear" schedule: linspace(sqrt(start), sqrt(end), T) ** 2 (float64)."""
    return np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2


def scale_array(config: ScheduleConfig) -> np.ndarray:
    """VideoCrafter2's ``scale_arr`` (float64): a ramp of ``mid_step`` values then a constant tail.

    The released code keeps a bug that makes the tail ``timesteps`` long instead of
    ``timesteps - mid_step`` (length 1400 for VC2); only indices < timesteps are ever read, so
    the values used are the same either way.
    """
    tail = config.timesteps - config.mid_step if config.fix_scale_bug else config.timesteps
    ramp = np.linspace(config.scale_a, config.scale_b, config.mid_step)
    return np.concatenate((ramp, np.full(tail, config.scale_b)))


class DiffusionSchedule:
    """Betas, cumulative alphas, posterior coefficients and (VC2) the latent scale (float32, CPU)."""

    def __init__(self, config: ScheduleConfig):
        self.config = config
        self.num_timesteps = config.timesteps
        self.use_scale = config.use_scale
        betas = scaled_linear_betas(config.timesteps, config.linear_start, config.linear_end)
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        values = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        }
        for name in BUFFER_NAMES:
            setattr(self, name, torch.tensor(values[name], dtype=torch.float32, device="cpu"))
        if config.use_scale:
            self.scale_arr = torch.tensor(scale_array(config), dtype=torch.float32, device="cpu")
        # Variational-bound weights (official non-persistent buffer; informational for eps training).
        lvlb = self.betas**2 / (2 * self.posterior_variance * torch.tensor(alphas, dtype=torch.float32, device="cpu")
                                * (1 - self.alphas_cumprod))
        lvlb[0] = lvlb[1]
        self.lvlb_weights = lvlb

    def scales(self) -> Tensor:
        """s_t for t = 0..T-1 (ones without use_scale)."""
        if self.use_scale:
            return self.scale_arr[: self.num_timesteps]
        return torch.ones(self.num_timesteps, device="cpu")

    @staticmethod
    def _at(values: Tensor, t: Tensor, ndim: int) -> Tensor:
        """values[t] on t's device, shaped (b, 1, ..., 1) to broadcast over a rank-``ndim`` tensor."""
        return values.to(t.device).gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(a_t) x0 [* s_t] + sqrt(1 - a_t) eps, evaluated in the official order. t: (b,) int64."""
        signal = self._at(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
        if self.use_scale:
            signal = signal * self._at(self.scale_arr, t, x0.ndim)
        return signal + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """sqrt(1/a_t) x_t - sqrt(1/a_t - 1) eps: the *scaled* start s_t x0 when use_scale (not scale-aware)."""
        return (self._at(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                - self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        mean = (self._at(self.posterior_mean_coef1, t, x_t.ndim) * x0
                + self._at(self.posterior_mean_coef2, t, x_t.ndim) * x_t)
        return (mean, self._at(self.posterior_variance, t, x_t.ndim),
                self._at(self.posterior_log_variance_clipped, t, x_t.ndim))

    def official_state_dict(self) -> dict[str, Tensor]:
        """The schedule buffers under their checkpoint keys (top level of a LatentDiffusion state dict)."""
        names = BUFFER_NAMES + (("scale_arr",) if self.use_scale else ())
        return {name: getattr(self, name) for name in names}
