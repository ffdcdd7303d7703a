"""Step caching on the tiny model: the UNet hook is exact, caching off (or reusing nothing) is the plain sampler bit
for bit, each preset stays within a bound that a broken cache exceeds, and bad parameters are named."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import random_unet, tiny_unet_config

from vc2_core.commands.main import main
from vc2_core.config import preset
from vc2_core.diffusion.step_cache import PRESETS, StepCache, parse_step_cache, step_cache_preset
from vc2_core.modules import DeepFeatureCache
from vc2_core.pipeline import GenerationSettings, generate

# 4 frames at 16x16 pixels (8x8 latents), 12 steps: long enough for the schedules to reuse and refresh
SIZE = {"height": 16, "width": 16, "frames": 4}
PROMPTS, SEEDS = ["a red ball", "a green cube"], [1, 2]
# Relative L2 of the decoded videos against the uncached ones (random weights, ddim, eta 1, cfg 12, 12 steps).
# Measured: safe 0.066, fast 0.117 (0.119 on dpmpp_2m, 0.097 with context windows); a deep feature kept from the
# first step forever (the deliberately wrong cache) 0.365, twice the bound and more.
PRESET_BOUND = 0.15


def sample(model, cache: StepCache | None, **changes) -> torch.Tensor:
    settings = GenerationSettings(**{**SIZE, **changes}, steps=12, step_cache=cache)
    return generate(model, PROMPTS, SEEDS, settings)


def relative_error(video: torch.Tensor, reference: torch.Tensor) -> float:
    return float((video - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def uncached(tiny_model):
    return sample(tiny_model, None)


def test_the_unet_hook_stores_without_changing_the_output_and_reuse_of_the_same_feature_is_exact():
    unet = random_unet(tiny_unet_config())
    x, t, context = torch.randn(2, 4, 4, 8, 12), torch.tensor([500, 300]), torch.randn(2, 5, 32)  # (b, c, t, h, w)
    with torch.no_grad():
        plain = unet(x, t, context, 8)
        for depth in range(1, len(unet.input_blocks) + 1):
            cache = DeepFeatureCache(depth)
            assert torch.equal(unet(x, t, context, 8, deep_cache=cache), plain)
            assert cache.feature.shape[0] == 2 * 4  # (b t) rows
            assert torch.equal(unet(x, t, context, 8, deep_cache=cache), plain), f"depth {depth}"
            other = unet(x, torch.tensor([100, 100]), context, 8, deep_cache=cache)
            assert not torch.equal(other, plain)  # the shallow blocks do run on the new input


def test_off_is_the_plain_sampler(tiny_model, uncached):
    assert step_cache_preset("off") is None
    assert torch.equal(sample(tiny_model, PRESETS["off"]), uncached)


@pytest.mark.parametrize("batched", [True, False])
def test_a_cache_that_reuses_nothing_runs_its_own_path_bit_identical(tiny_model, uncached, batched):
    reference = uncached if batched else sample(tiny_model, None, batched_cfg=False)
    assert torch.equal(sample(tiny_model, StepCache(), batched_cfg=batched), reference)


@pytest.mark.parametrize("name", [name for name, cache in PRESETS.items() if cache is not None])
def test_each_preset_stays_within_its_bound(tiny_model, uncached, name):
    error = relative_error(sample(tiny_model, PRESETS[name]), uncached)
    assert 0 < error < PRESET_BOUND, f"{name}: {error:.3f}"


def test_a_stale_feature_kept_forever_exceeds_the_bound(tiny_model, uncached):
    stale = StepCache(deep_interval=1000, deep_depth=1)  # one full step, then the first step's feature forever
    error = relative_error(sample(tiny_model, stale), uncached)
    assert error > 2 * PRESET_BOUND, error


def test_a_stale_unconditional_branch_kept_forever_exceeds_the_bound(tiny_model, uncached):
    stale = StepCache(uncond_interval=1000, uncond_reuse="uncond")
    error = relative_error(sample(tiny_model, stale), uncached)
    assert error > 2 * PRESET_BOUND, error


def test_presets_compose_with_another_sampler(tiny_model):
    reference = sample(tiny_model, None, sampler="dpmpp_2m")
    error = relative_error(sample(tiny_model, PRESETS["fast"], sampler="dpmpp_2m"), reference)
    assert 0 < error < PRESET_BOUND, error


def test_split_guidance_and_context_windows_keep_their_own_features(tiny_model):
    windows = {"frames": 6, "context_frames": 4, "context_overlap": 2}  # two windows a step
    reference = sample(tiny_model, None, **windows)
    assert torch.equal(sample(tiny_model, StepCache(), **windows), reference)
    batched = sample(tiny_model, PRESETS["fast"], **windows)
    split = sample(tiny_model, PRESETS["fast"], batched_cfg=False, **windows)
    assert 0 < relative_error(batched, reference) < PRESET_BOUND, relative_error(batched, reference)
    torch.testing.assert_close(split, batched, rtol=1e-4, atol=1e-4)  # the same features, kept per branch


def test_parse_takes_presets_and_explicit_values():
    assert parse_step_cache("safe") == PRESETS["safe"]
    assert parse_step_cache("deep=4, depth=2, uncond=4, reuse=uncond, first=3, last=2") == StepCache(
        deep_interval=4, deep_depth=2, uncond_interval=4, uncond_reuse="uncond", full_first=3, full_last=2)
    assert parse_step_cache("uncond=2") == StepCache(uncond_interval=2)


@pytest.mark.parametrize("text, message", [
    ("fastest", "unknown step cache preset 'fastest'; choose one of off, safe, fast"),
    ("deep=0", "deep_interval 0: must be a whole number >= 1"),
    ("deep=two", "deep='two': expected a whole number"),
    ("speed=3", "unknown name"),
    ("first=0", "full_first 0"),
    ("last=-1", "full_last -1"),
    ("reuse=cond", "uncond_reuse 'cond'"),
    ("deep=3,uncond=2", "must be 1 or a multiple of deep_interval 3"),
])
def test_bad_parameters_are_named(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_step_cache(text)


@pytest.mark.parametrize("cache, sampler, message", [
    (StepCache(deep_interval=2, deep_depth=5), "ddim", "deep_depth 5: this UNet has 4 input blocks"),
    (StepCache(deep_interval=2, deep_depth=0), "ddim", "deep_depth 0"),
    (StepCache(deep_interval=2), "t2v-turbo", "nothing to reuse"),
])
def test_settings_refuse_what_the_model_or_sampler_cannot_run(cache, sampler, message):
    config = preset("tiny")
    if sampler == "t2v-turbo":
        config = config.replace(unet=dataclasses.replace(config.unet, time_cond_proj_dim=256))
    with pytest.raises(ValueError, match=message):
        GenerationSettings(step_cache=cache, sampler=sampler, steps=4).resolve(config)


def test_the_unet_refuses_a_feature_of_another_batch_and_a_depth_it_does_not_have():
    unet = random_unet(tiny_unet_config())
    x, context = torch.randn(1, 4, 4, 8, 12), torch.randn(1, 5, 32)
    with torch.no_grad(), pytest.raises(ValueError, match="b\\*t = 4"):
        unet(x, 10, context, deep_cache=DeepFeatureCache(1, torch.zeros(8, 32, 8, 12)))
    with torch.no_grad(), pytest.raises(ValueError, match="depth must be in \\[1, 4\\]"):
        unet(x, 10, context, deep_cache=DeepFeatureCache(5))


def test_vc2_sample_names_a_bad_cache_before_reading_anything(tmp_path, capsys):
    argv = ["sample", "--ckpt", str(tmp_path / "missing.ckpt"), "--prompt", "a", "--out", str(tmp_path / "v.mp4"),
            "--cache", "deep=3,uncond=2"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert "argument --cache: step cache uncond_interval 2" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
