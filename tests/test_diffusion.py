"""Schedule (VC2 latent scale) and the official DDIM sampler beyond the goldens."""

from __future__ import annotations

import pytest
import torch

from vc2_core.config import ScheduleConfig, preset
from vc2_core.diffusion import (
    Denoiser,
    DiffusionSchedule,
    GuidedEps,
    ddim_sample,
    ddim_timesteps,
    generator_noise,
    make_ddim_schedule,
)


def test_scale_arr_as_released():
    vc2 = DiffusionSchedule(preset("vc2-512").schedule)
    assert vc2.scale_arr.shape == (1400,)  # the released bug: a 1000-long tail after the 400-step ramp
    assert vc2.scale_arr[0] == 1.0 and torch.allclose(vc2.scale_arr[399:], torch.tensor(0.7))
    assert torch.allclose(vc2.scale_arr[200], torch.tensor(1 - 0.3 * 200 / 399, dtype=torch.float32))
    vc1_1024 = DiffusionSchedule(preset("vc1-1024").schedule)
    assert vc1_1024.scale_arr.shape == (1000,) and torch.allclose(vc1_1024.scale_arr[-1], torch.tensor(0.3))
    assert "scale_arr" not in DiffusionSchedule(preset("vc1-512").schedule).official_state_dict()


def test_q_sample_diffuses_the_scaled_latent():
    schedule = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))
    x0, noise = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    t = torch.tensor([0, 399, 999])
    s = torch.tensor([1.0, 0.7, 0.7]).view(3, 1, 1, 1, 1)
    a = schedule.alphas_cumprod[t].view(3, 1, 1, 1, 1)
    torch.testing.assert_close(schedule.q_sample(x0, t, noise), a.sqrt() * s * x0 + (1 - a).sqrt() * noise)


@pytest.mark.parametrize("steps, count, first, last", [(50, 50, 1, 981), (10, 10, 1, 901), (30, 31, 1, 991)])
def test_ddim_timesteps_as_released(steps, count, first, last):
    ts = ddim_timesteps(steps)
    assert (len(ts), ts[0], ts[-1]) == (count, first, last)  # 30 steps run 31: the official quirk


@pytest.mark.parametrize("use_scale", [True, False])
def test_ddim_with_the_true_noise_lands_on_the_forward_process(use_scale):
    """Given the exact eps of a known x0, DDIM(eta=0) must follow q(x_t|x0) to the last step.

    This is the check that the sampler inverts VC2's scaled forward process correctly.
    """
    schedule = DiffusionSchedule(ScheduleConfig(use_scale=use_scale, scale_b=0.7))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    ddim = make_ddim_schedule(schedule, 20, eta=0.0)
    t_start = torch.full((2,), int(ddim.timesteps[-1]))
    x_T = schedule.q_sample(x0, t_start, eps)
    pred = []
    final = ddim_sample(Denoiser(lambda x, t: eps), x_T, ddim, callback=lambda step: pred.append(step.pred_x0))
    a0, s0 = schedule.alphas_cumprod[0], schedule.scales()[0]
    torch.testing.assert_close(final, a0.sqrt() * s0 * x0 + (1 - a0).sqrt() * eps, rtol=1e-4, atol=1e-4)
    for estimate in pred:  # every step recovers the un-scaled x0
        torch.testing.assert_close(estimate, x0, rtol=1e-4, atol=1e-4)


def test_ddim_noise_is_reproducible_and_required():
    schedule = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))
    ddim = make_ddim_schedule(schedule, 5, eta=1.0)
    x_T = torch.randn(1, 4, 2, 4, 4)
    eps_fn = lambda x, t: 0.1 * x  # noqa: E731
    one = ddim_sample(Denoiser(eps_fn), x_T, ddim, noise=generator_noise(torch.Generator().manual_seed(7)))
    two = ddim_sample(Denoiser(eps_fn), x_T, ddim, noise=generator_noise(torch.Generator().manual_seed(7)))
    other = ddim_sample(Denoiser(eps_fn), x_T, ddim, noise=generator_noise(torch.Generator().manual_seed(8)))
    assert torch.equal(one, two) and not torch.equal(one, other)
    with pytest.raises(ValueError, match="needs a noise source"):
        ddim_sample(Denoiser(eps_fn), x_T, ddim)
    assert ddim.sigmas[0] > 0  # the last step still adds noise: a_prev = alpha_bar_0 < 1


def test_guidance_batched_equals_two_calls():
    calls = []

    def unet(x, t, context, fps):
        calls.append(x.shape[0])
        per_sample = context.mean(dim=(1, 2)) + t * 1e-3 + (0 if fps is None else fps)
        return x * per_sample.view(-1, 1, 1, 1, 1)

    x, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([5, 5])
    c, uc, fps = torch.ones(2, 3, 8), torch.zeros(2, 3, 8) + 0.5, torch.tensor([8, 16])
    batched = GuidedEps(unet, c, uc, 7.5, fps=fps, batched=True)(x, t)
    split = GuidedEps(unet, c, uc, 7.5, fps=fps, batched=False)(x, t)
    torch.testing.assert_close(batched, split)
    assert calls == [4, 2, 2]
    torch.testing.assert_close(GuidedEps(unet, c, uc, 1.0, fps=fps)(x, t), unet(x, t, c, fps))


def test_guidance_rescale_restores_the_conditional_std():
    e_cond = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    e_uncond = 0.3 * torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))

    def unet(x, t, context, fps):
        return torch.where(context[:, :1, :1, None, None] > 0, e_cond.repeat(x.shape[0] // 2, 1, 1, 1, 1),
                           e_uncond.repeat(x.shape[0] // 2, 1, 1, 1, 1))

    x, t = torch.zeros(2, 4, 2, 4, 4), torch.tensor([5, 5])
    c, uc = torch.ones(2, 3, 8), -torch.ones(2, 3, 8)
    plain = GuidedEps(unet, c, uc, 7.5)(x, t)
    torch.testing.assert_close(plain, e_uncond + 7.5 * (e_cond - e_uncond))
    full = GuidedEps(unet, c, uc, 7.5, rescale=1.0)(x, t)
    dims = (1, 2, 3, 4)
    torch.testing.assert_close(full.std(dim=dims), e_cond.std(dim=dims))
    torch.testing.assert_close(full / full.std(dim=dims, keepdim=True), plain / plain.std(dim=dims, keepdim=True))
    half = GuidedEps(unet, c, uc, 7.5, rescale=0.5)(x, t)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)
    with pytest.raises(ValueError, match="rescale"):
        GuidedEps(unet, c, uc, 7.5, rescale=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        GuidedEps(unet, c, uc, -1.0)


def test_grid_points_past_the_schedule_are_dropped():
    # 1000 // 3 = 333: the official grid is [1, 334, 667, 1000] and timestep 1000 does not exist
    assert ddim_timesteps(3).tolist() == [1, 334, 667]
    assert ddim_timesteps(50).tolist() == list(range(1, 1000, 20))  # the released 50 steps are untouched
    assert len(ddim_timesteps(30)) == 31  # 1000 // 30 = 33 gives 31 points, as official
    assert ddim_timesteps(1000).tolist() == list(range(1, 1000))
