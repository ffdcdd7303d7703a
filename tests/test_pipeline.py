"""Text to video on the tiny model: defaults, seeds, guidance modes, precision, context windows, bad settings."""

from __future__ import annotations

import pytest
import torch

from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.pipeline import GenerationSettings, cast_for_inference, generate, pixel_multiple

# 16x24 pixels -> 8x12 latents with the tiny VAE (factor 2); 4 frames; 3 steps keep each run well under a second.
SMALL = GenerationSettings(height=16, width=24, frames=4, steps=3)


def run(model, prompts, seeds, settings=SMALL, **kwargs):
    return generate(model, prompts, seeds, settings, **kwargs)


def test_defaults_are_the_released_scripts():
    settings = GenerationSettings().resolve(preset("vc2-512"))
    assert (settings.height, settings.width, settings.frames, settings.fps) == (320, 512, 16, 28)
    assert (settings.sampler, settings.steps, settings.eta, settings.cfg) == ("ddim", 50, 1.0, 12.0)
    assert settings.negative_prompt == "" and settings.batched_cfg and settings.decode_chunk_frames == 1
    assert GenerationSettings(sampler="dpmpp_2m").resolve(preset("vc2-512")).eta == 0.0


def test_output_is_a_float32_cpu_video_of_the_settings_with_one_callback_per_step(tiny_model):
    steps = []
    video = run(tiny_model, ["a red ball"], [5], callback=steps.append)
    assert video.shape == (1, 3, 4, 16, 24) and video.dtype == torch.float32 and video.device.type == "cpu"
    assert video.isfinite().all() and (video[0, :, 1:] != video[0, :, :1]).any()  # not one frame repeated
    assert [s.step for s in steps] == [0, 1, 2] and all(s.total == 3 for s in steps)
    assert [s.timestep for s in steps] == sorted((s.timestep for s in steps), reverse=True)


def test_each_item_follows_its_own_seed(tiny_model):
    pair = run(tiny_model, ["a red ball", "a blue cube"], [1, 2])
    alone = run(tiny_model, ["a blue cube"], [2])
    again = run(tiny_model, ["a blue cube"], [2])
    other = run(tiny_model, ["a blue cube"], [3])
    assert torch.equal(alone, again)
    torch.testing.assert_close(pair[1:], alone, atol=1e-4, rtol=0)  # batching changes only rounding
    assert (alone - other).abs().max() > 0.05


def test_split_guidance_equals_batched(tiny_model):
    batched = run(tiny_model, ["a red ball"], [4])
    split = run(tiny_model, ["a red ball"], [4], GenerationSettings(**{**SMALL.__dict__, "batched_cfg": False}))
    torch.testing.assert_close(split, batched, atol=1e-4, rtol=0)


def test_negative_prompt_replaces_the_empty_unconditional(tiny_model):
    plain = run(tiny_model, ["a red ball"], [4])
    negative = run(tiny_model, ["a red ball"], [4], GenerationSettings(**{**SMALL.__dict__, "negative_prompt": "blur"}))
    assert (plain - negative).abs().max() > 1e-3


def test_window_over_all_frames_equals_plain_sampling(tiny_model):
    plain = run(tiny_model, ["a red ball"], [7])
    windowed = run(tiny_model, ["a red ball"], [7], GenerationSettings(**{**SMALL.__dict__, "context_frames": 4}))
    assert torch.equal(plain, windowed)


def test_long_video_with_context_windows_is_sampled_window_by_window(tiny_model):
    settings = GenerationSettings(**{**SMALL.__dict__, "frames": 12, "context_frames": 8, "context_overlap": 4})
    video = run(tiny_model, ["a red ball"], [7], settings)
    assert video.shape == (1, 3, 12, 16, 24) and video.isfinite().all()
    assert torch.equal(video, run(tiny_model, ["a red ball"], [7], settings))  # seeded
    plain = run(tiny_model, ["a red ball"], [7], GenerationSettings(**{**SMALL.__dict__, "frames": 12}))
    assert (video - plain).abs().max() > 1e-3  # the windows changed what the UNet saw (all 12 frames at once)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_every_sampler_gives_its_own_seeded_video(tiny_model, sampler):
    settings = GenerationSettings(**{**SMALL.__dict__, "sampler": sampler})
    steps = []
    video = run(tiny_model, ["a red ball"], [7], settings, callback=steps.append)
    assert video.shape == (1, 3, 4, 16, 24) and video.isfinite().all()
    assert [s.step for s in steps] == [0, 1, 2]  # the sampler ran the settings' 3 steps
    assert torch.equal(video, run(tiny_model, ["a red ball"], [7], settings))  # seeded (euler_ancestral's noise too)
    assert (video - run(tiny_model, ["a red ball"], [7])).abs().max() > 1e-3  # not DDIM, the default


def test_bf16_follows_fp32(tiny_model):
    reference = run(tiny_model, ["a red ball"], [9])
    model = cast_for_inference(VideoCrafter(preset("tiny")).eval(), torch.bfloat16)
    model.load_state_dict(tiny_model.state_dict())  # copies the values, keeps bf16
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    video = run(model, ["a red ball"], [9])
    assert video.dtype == torch.float32 and video.isfinite().all()
    correlation = torch.corrcoef(torch.stack([video.flatten(), reference.flatten()]))[0, 1]
    assert correlation > 0.95, correlation


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_the_vae_in_fp32(dtype):
    model = cast_for_inference(VideoCrafter(preset("tiny")), dtype)
    assert next(model.unet.parameters()).dtype == dtype
    assert next(model.text_encoder.parameters()).dtype == dtype
    assert next(model.vae.parameters()).dtype == torch.float32


@pytest.mark.parametrize("changes, message", [
    ({"height": 30}, "height 30: must be a positive multiple of 4"),
    ({"width": 0}, "width 0: must be a positive multiple of 4"),
    ({"frames": 0}, "frames 0: must be at least 1"),
    ({"steps": 0}, "steps 0: must be at least 1"),
    ({"cfg": -1.0}, "cfg -1.0: the guidance scale must be >= 0"),
    ({"sampler": "plms"}, "sampler 'plms': unknown; choose one of ddim, euler, euler_ancestral, dpmpp_2m"),
    ({"sampler": "dpmpp_2m", "eta": 0.5}, "dpmpp_2m is deterministic"),
    ({"steps": 1001}, "exceed the 1000 training timesteps"),
    ({"context_frames": 4, "context_overlap": 4}, "context overlap must be in [0, 3]"),
    ({"fps": 0}, "fps 0: must be a positive whole number"),
])
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ValueError, match="invalid generation settings") as error:
        GenerationSettings(**{**SMALL.__dict__, **changes}).resolve(preset("tiny"))
    assert message in str(error.value)


def test_size_message_names_what_the_model_needs():
    config = preset("vc2-512")
    assert pixel_multiple(config) == 64
    with pytest.raises(ValueError) as error:
        GenerationSettings(height=360, width=500).resolve(config)
    text = str(error.value)
    assert "height 360: must be a positive multiple of 64" in text and "nearest is 384" in text
    assert "width 500" in text and "nearest is 512" in text  # every problem at once
    assert "VAE downsamples by 8 and the UNet by 8" in text


def test_causal_models_need_their_trained_length():
    config = preset("tiny")
    config = config.replace(unet=config.unet.__class__(**{**config.unet.__dict__, "use_causal_attention": True}))
    with pytest.raises(ValueError, match="causal and built for exactly 8 frames"):
        GenerationSettings(height=16, width=16, frames=12).resolve(config)
    GenerationSettings(height=16, width=16, frames=12, context_frames=8).resolve(config)  # windows of 8 are fine


def test_prompts_and_seeds_must_match(tiny_model):
    with pytest.raises(ValueError, match="2 prompts need 2 seeds"):
        run(tiny_model, ["a", "b"], [1])
    with pytest.raises(ValueError, match="no prompts"):
        run(tiny_model, [], [])


def test_resolved_settings_carry_their_plan_and_are_not_resolved_again():
    config = preset("tiny")
    settings = GenerationSettings(sampler="dpmpp_2m", steps=5).resolve(config)
    assert settings.resolve(config) is settings  # generate() reuses what the caller resolved
    assert settings.plan.sampler.name == "dpmpp_2m" and len(settings.plan.steps) == 5 and settings.plan.eta == 0.0
    other = config.replace(fps=9)  # another config: checked and planned for it
    assert settings.resolve(other) is not settings and settings.resolve(other).config == other


def test_settings_for_latents_take_frames_and_size_from_the_latents():
    config = preset("tiny")
    settings = GenerationSettings(steps=3).resolve_for_latents(config, (2, 4, 5, 16, 24))
    f = config.vae.downsample_factor
    assert (settings.frames, settings.height, settings.width) == (5, 16 * f, 24 * f)
