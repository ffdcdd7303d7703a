"""The optional noise-level weighting of the eps objective: weights from the schedule's SNR (with VideoCrafter2's
latent scale), applied per sample by its timestep, and the plain loss when it is off."""

from __future__ import annotations

import pytest
import torch
from conftest import random_unet, tiny_unet_config

from vc2_core.config import ScheduleConfig
from vc2_core.diffusion import DiffusionSchedule
from vc2_core.training.objective import diffusion_loss, signal_to_noise, snr_weights

SCHEDULE = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))


def test_snr_includes_the_latent_scale():
    plain = DiffusionSchedule(ScheduleConfig(use_scale=False))
    ratio = signal_to_noise(SCHEDULE) / signal_to_noise(plain)
    assert torch.allclose(ratio, SCHEDULE.scales().double() ** 2)
    assert float(ratio[-1]) < 0.5  # scale_arr shrinks the signal at high noise (s_T ~ 0.7)


def test_snr_weights_are_clamped_inverse_snr_with_mean_one():
    weights = snr_weights(SCHEDULE, cap=50)
    assert weights.shape == (SCHEDULE.num_timesteps,)
    assert abs(float(weights.mean()) - 1) < 1e-5
    assert bool((weights[1:] >= weights[:-1]).all())  # more noise, more weight
    assert float(weights.max() / weights.min()) == pytest.approx(50, rel=1e-5)  # 1 at low noise, cap at high
    inverse = 1 / signal_to_noise(SCHEDULE)
    middle = (inverse > 1) & (inverse < 50)
    expected = (inverse[middle] / inverse.clamp(1, 50).mean()).float()
    assert torch.allclose(weights[middle], expected, rtol=1e-5)
    with pytest.raises(ValueError, match=">= 1"):
        snr_weights(SCHEDULE, cap=0.5)


def test_weighted_loss_weights_each_sample_by_its_timestep():
    unet = random_unet(tiny_unet_config(), seed=0)
    g = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 2, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    timesteps, noise = torch.tensor([10, 900]), torch.randn(2, 4, 2, 8, 8, generator=g)
    weights = torch.zeros(SCHEDULE.num_timesteps)
    weights[10], weights[900] = 3.0, 0.5
    with torch.no_grad():
        each = [float(diffusion_loss(unet, SCHEDULE, latents[i:i + 1], context[i:i + 1], 8, timesteps[i:i + 1],
                                     noise[i:i + 1])) for i in range(2)]
        weighted = float(diffusion_loss(unet, SCHEDULE, latents, context, 8, timesteps, noise,
                                        weights=weights))
        ones = float(diffusion_loss(unet, SCHEDULE, latents, context, 8, timesteps, noise,
                                    weights=torch.ones(SCHEDULE.num_timesteps)))
    assert weighted == pytest.approx((3.0 * each[0] + 0.5 * each[1]) / 2, rel=1e-5)
    assert ones == pytest.approx((each[0] + each[1]) / 2, rel=1e-5)  # all ones: the plain mean
