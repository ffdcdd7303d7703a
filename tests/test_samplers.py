"""Samplers on data whose exact denoiser is known (a Gaussian), for VideoCrafter2's scaled process.

For x0 ~ N(mu, v) and x_t = a_t x0 + s_t eps, E[x0 | x_t] = mu + a v (x_t - a mu) / (a^2 v + s^2),
and the probability-flow ODE has a closed form in z = x / a, sigma = s / a:
z(sigma) = mu + sqrt((v + sigma^2) / (v + sigma_T^2)) (z_T - mu). Every deterministic sampler must
converge to it (and so to many-step DDIM with eta 0); stochastic ones must reproduce the marginal.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_unet, tiny_unet_config

from vc2_core.config import ScheduleConfig
from vc2_core.diffusion import DiffusionSchedule, generator_noise, make_levels, sample

SCHEDULE = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))  # VideoCrafter2's
MU, VAR = 0.5, 0.25


def gaussian_eps(schedule: DiffusionSchedule):
    alpha_bar, scale = schedule.alphas_cumprod.double(), schedule.scales().double()

    def eps_fn(x, t):
        a = (alpha_bar[t].sqrt() * scale[t]).view(-1, 1, 1, 1, 1).to(x.dtype)
        s = (1 - alpha_bar[t]).sqrt().view(-1, 1, 1, 1, 1).to(x.dtype)
        x0 = MU + a * VAR * (x - a * MU) / (a**2 * VAR + s**2)
        return (x - a * x0) / s

    return eps_fn


def exact_solution(x_T, levels):
    """The ODE's solution from x_T at the first level to the last one."""
    z_T = x_T / levels.alphas[0]
    growth = math.sqrt((VAR + levels.sigmas[-1] ** 2) / (VAR + levels.sigmas[0] ** 2))
    return levels.alphas[-1] * (MU + growth * (z_T - MU))


def run(sampler, steps, x_T, eta=None, seed=0, spacing=None):
    return sample(sampler, gaussian_eps(SCHEDULE), x_T, SCHEDULE, steps, eta=eta, spacing=spacing,
                  noise=generator_noise(torch.Generator().manual_seed(seed)))


def levels_of(sampler, steps):
    return make_levels(SCHEDULE, steps, "uniform" if sampler == "ddim" else "logsnr")


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def error(result, reference):
    return (result - reference).abs().max().item()


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
def test_deterministic_samplers_converge_to_the_ode_solution(x_T, sampler):
    eta = 0.0 if sampler == "ddim" else None
    errors = [error(run(sampler, n, x_T, eta), exact_solution(x_T, levels_of(sampler, n))) for n in (10, 25, 50, 100)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05, errors


def test_samplers_converge_to_many_step_ddim(x_T):
    """Same start (t = 999) and end (alpha_bar_0) as DDIM with 500 steps: the same ODE solution."""
    reference = run("ddim", 500, x_T, eta=0.0)
    assert error(reference, exact_solution(x_T, levels_of("ddim", 500))) < 0.01
    for sampler in ("euler", "dpmpp_2m"):
        errors = [error(run(sampler, n, x_T), reference) for n in (10, 25, 100)]
        assert errors[0] > errors[1] > errors[2] and errors[2] < 0.03, (sampler, errors)


def test_dpmpp_2m_at_20_to_25_steps_is_as_close_as_ddim_at_50(x_T):
    ddim_50 = error(run("ddim", 50, x_T, eta=0.0), exact_solution(x_T, levels_of("ddim", 50)))
    for steps in (20, 25):
        assert error(run("dpmpp_2m", steps, x_T), exact_solution(x_T, levels_of("dpmpp_2m", steps))) < ddim_50


def test_euler_on_the_official_grid_is_ddim_with_eta_zero(x_T):
    # DDIM rounds its coefficients to float32 as the official code does
    assert error(run("euler", 25, x_T, spacing="uniform"), run("ddim", 25, x_T, eta=0.0)) < 1e-5


def test_logsnr_grid_has_the_requested_steps():
    for steps in (1, 7, 50, 250, 999):
        levels = make_levels(SCHEDULE, steps, "logsnr")
        assert len(levels.timesteps) == steps and levels.timesteps[0] == 999
        assert all(a > b >= 1 for a, b in zip(levels.timesteps, levels.timesteps[1:]))


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_stochastic_samplers_reproduce_the_marginal(sampler):
    """From the data marginal at the first level, the final state is distributed as a_f x0 + s_f eps.

    Exactly only in the limit of many steps (the posterior mean replaces a posterior sample), so the
    standard deviation's error must shrink as the steps grow and be small at 400.
    """
    gaps = []
    for steps in (25, 100, 400):
        levels = make_levels(SCHEDULE, steps, "uniform" if sampler == "ddim" else "logsnr")
        x_T = torch.randn(1, 1, 8, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x_T = x_T * math.sqrt(levels.alphas[0] ** 2 * VAR + levels.stds[0] ** 2) + levels.alphas[0] * MU
        final = run(sampler, steps, x_T, eta=1.0, seed=2)
        a_f, s_f = levels.alphas[-1], levels.stds[-1]
        assert abs(final.mean().item() - a_f * MU) < 0.01
        gaps.append(abs(final.std().item() - math.sqrt(a_f**2 * VAR + s_f**2)))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.015, gaps


def test_eta_rules():
    x = torch.zeros(1, 4, 1, 2, 2)
    with pytest.raises(ValueError, match="dpmpp_2m is deterministic"):
        sample("dpmpp_2m", gaussian_eps(SCHEDULE), x, SCHEDULE, 5, eta=0.5)
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        sample("heun", gaussian_eps(SCHEDULE), x, SCHEDULE, 5)
    with pytest.raises(ValueError, match="official"):
        sample("ddim", gaussian_eps(SCHEDULE), x, SCHEDULE, 5, spacing="logsnr")


def test_samplers_converge_on_a_tiny_unet_denoiser():
    """The tiny VideoCrafter2 UNet (random weights) as a smooth perturbation of the Gaussian denoiser:
    no closed form, so many-step DDIM(eta=0) is the reference every sampler must approach."""

    unet = random_unet(tiny_unet_config())
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(3))
    gaussian = gaussian_eps(SCHEDULE)

    @torch.no_grad()
    def eps_fn(x, t):
        return gaussian(x, t) + 0.05 * unet(x, t, context, 8)

    x_T = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    reference = sample("ddim", eps_fn, x_T, SCHEDULE, 500, eta=0.0)
    ddim_50 = error(sample("ddim", eps_fn, x_T, SCHEDULE, 50, eta=0.0), reference)
    for sampler in ("euler", "dpmpp_2m"):
        errors = [error(sample(sampler, eps_fn, x_T, SCHEDULE, n), reference) for n in (10, 25, 100)]
        assert errors[0] > errors[1] > errors[2] and errors[2] < 0.03, (sampler, errors)
    dpm_25 = error(sample("dpmpp_2m", eps_fn, x_T, SCHEDULE, 25), reference)
    assert dpm_25 < ddim_50 / 2, (dpm_25, ddim_50)  # measured 0.016 vs 0.083
