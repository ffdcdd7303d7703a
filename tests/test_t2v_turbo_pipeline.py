"""T2V-Turbo through the pipeline: a tiny model turned T2V-Turbo, sampled in 4 steps without a CFG pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_t2v_turbo import random_lora

from vc2_core.checkpoint import save_checkpoint
from vc2_core.cli import main
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.pipeline import GenerationSettings, generate
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.t2v_turbo import TurboLoRA, turbo_config, turbo_unet, with_turbo
from vc2_core.video_io import read_video

TURBO = GenerationSettings(height=16, width=24, frames=4, steps=4, sampler="t2v-turbo", cfg=7.5)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny")).eval()
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    shape_donor = VideoCrafter(preset("tiny").replace(unet=turbo_config(preset("tiny").unet))).unet
    return model, with_turbo(model, TurboLoRA(random_lora(shape_donor, seed=2), path="unet_lora.pt"))


def test_four_steps_on_their_grid_with_the_scale_as_an_embedding(models):
    plain, turbo = models
    steps = []
    video = generate(turbo, ["a red ball"], [5], TURBO, callback=steps.append)
    assert video.shape == (1, 3, 4, 16, 24) and video.isfinite().all() and video.std() > 0
    assert [s.timestep for s in steps] == [999, 759, 519, 279]
    other_negative = generate(turbo, ["a red ball"], [5], dataclasses.replace(TURBO, negative_prompt="blurry"))
    assert torch.equal(video, other_negative)  # no unconditional branch
    other_scale = generate(turbo, ["a red ball"], [5], dataclasses.replace(TURBO, cfg=2.0))
    assert (video - other_scale).abs().max() > 1e-4  # the scale reaches the UNet


def test_the_source_model_is_left_as_it_was_and_shares_its_networks(models):
    plain, turbo = models
    assert plain.config.unet.time_cond_proj_dim is None and not hasattr(plain.unet, "time_cond_proj")
    assert turbo.vae is plain.vae and turbo.text_encoder is plain.text_encoder and turbo.unet is not plain.unet


def test_t2v_turbo_needs_a_turbo_unet(models):
    plain, _ = models
    with pytest.raises(ValueError, match="samples T2V-Turbo's distilled UNet"):
        generate(plain, ["a red ball"], [5], TURBO)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A tiny checkpoint (vc2 init) and a T2V-Turbo LoRA for it in their file layout (a list of tensors)."""
    folder = tmp_path_factory.mktemp("turbo")
    checkpoint, lora = folder / "tiny.safetensors", folder / "unet_lora.pt"
    assert main(["init", "--preset", "tiny", "--out", str(checkpoint), "--randomize-zero-init"]) == 0
    shape_donor = VideoCrafter(preset("tiny").replace(unet=turbo_config(preset("tiny").unet))).unet
    torch.save(random_lora(shape_donor, seed=3), lora)
    return checkpoint, lora


CLI_SMALL = ["--frames", "4", "--height", "16", "--width", "24", "--prompt", "a red ball"]


def test_vc2_sample_with_their_lora_in_four_steps(cli_files, tmp_path, capsys):
    """No --steps or --cfg: the t2v-turbo sampler's defaults are T2V-Turbo's (4 steps, guidance 7.5)."""
    checkpoint, lora = cli_files
    out = tmp_path / "turbo.gif"
    code = main(["sample", "--ckpt", str(checkpoint), "--lora", str(lora), "--sampler", "t2v-turbo",
                 "--out", str(out), *CLI_SMALL])
    assert code == 0, capsys.readouterr().err
    frames, _ = read_video(out)
    assert frames.shape == (4, 16, 24, 3) and frames.std() > 0
    printed = capsys.readouterr().out
    assert "t2v-turbo 4 steps" in printed and "cfg 7.5" in printed, printed


def test_vc2_sample_names_a_lora_that_does_not_fit_and_writes_nothing(cli_files, tmp_path, capsys):
    checkpoint, lora = cli_files
    short = tmp_path / "short.pt"
    torch.save(torch.load(lora, weights_only=True)[:-2], short)  # one layer missing
    out = tmp_path / "turbo.gif"
    code = main(["sample", "--ckpt", str(checkpoint), "--lora", str(short), "--sampler", "t2v-turbo", "--steps", "4",
                 "--out", str(out), *CLI_SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "the LoRA adapts" in err and "nothing was loaded" in err and "Traceback" not in err
    assert not out.exists()
    code = main(["sample", "--ckpt", str(checkpoint), "--sampler", "t2v-turbo", "--out", str(out), *CLI_SMALL])
    assert code == 1 and "--lora unet_lora.pt" in capsys.readouterr().err


def test_vc2_sample_refuses_their_lora_on_videocrafter1_and_writes_nothing(cli_files, tmp_path, capsys):
    """T2V-Turbo is distilled from VideoCrafter2: on a VideoCrafter1 checkpoint the CLI says so, before building."""
    _, lora = cli_files
    config = preset("tiny")
    vc1 = VideoCrafter(config.replace(unet=dataclasses.replace(config.unet, use_relative_position=True)))
    checkpoint = tmp_path / "vc1_tiny.safetensors"
    save_checkpoint(vc1, checkpoint)
    out = tmp_path / "turbo.gif"
    code = main(["sample", "--ckpt", str(checkpoint), "--lora", str(lora), "--sampler", "t2v-turbo",
                 "--out", str(out), *CLI_SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert f"--lora unet_lora.pt: {checkpoint} is a VideoCrafter1 model" in err and "fit only its UNet" in err, err
    assert not out.exists()


def test_the_library_refuses_a_base_that_is_not_the_released_videocrafter2_unet(models):
    plain, turbo = models
    lora = TurboLoRA(random_lora(turbo.unet, seed=2), path="unet_lora.pt")
    with pytest.raises(ValueError, match="the UNet already has T2V-Turbo's weights"):
        turbo_unet(turbo.unet, lora)
    config = preset("tiny")
    vc1 = VideoCrafter(config.replace(unet=dataclasses.replace(config.unet, use_relative_position=True)))
    with pytest.raises(ValueError, match="the UNet is a VideoCrafter1 model"):
        with_turbo(vc1, lora)


def test_motion_guidance_reaches_a_v2_unet_only_in_its_share_of_the_steps():
    """T2V-Turbo-v2's motion condition: the scale changes the video; with a share of 0 no step gets it, so
    every scale gives the same video (the condition embeds 0 then)."""
    torch.manual_seed(0)
    config = preset("tiny")
    v2 = VideoCrafter(config.replace(unet=turbo_config(config.unet, motion=True))).eval()
    randomize_zero_initialized(v2.unet, torch.Generator().manual_seed(4))
    small = dataclasses.replace(TURBO, motion_scale=0.05)
    video = generate(v2, ["a red ball"], [5], small)
    strong = generate(v2, ["a red ball"], [5], dataclasses.replace(small, motion_scale=1.0))
    assert (video - strong).abs().max() > 1e-4
    none_on = dataclasses.replace(small, motion_share=0.0)
    assert torch.equal(generate(v2, ["a red ball"], [5], none_on),
                       generate(v2, ["a red ball"], [5], dataclasses.replace(none_on, motion_scale=1.0)))


def test_motion_guidance_is_refused_where_it_cannot_apply(models):
    plain, turbo_v1 = models
    with pytest.raises(ValueError, match="has no motion condition"):
        generate(turbo_v1, ["a red ball"], [5], dataclasses.replace(TURBO, motion_scale=0.05))
    ddim = GenerationSettings(height=16, width=24, frames=4, steps=2, motion_scale=0.05)
    with pytest.raises(ValueError, match="needs --sampler t2v-turbo"):
        generate(plain, ["a red ball"], [5], ddim)
    with pytest.raises(ValueError, match="motion share 1.5"):
        generate(turbo_v1, ["a red ball"], [5], dataclasses.replace(TURBO, motion_share=1.5))


def test_vc2_sample_refuses_motion_guidance_for_a_v1_lora_and_writes_nothing(cli_files, tmp_path, capsys):
    checkpoint, lora = cli_files
    out = tmp_path / "turbo.gif"
    code = main(["sample", "--ckpt", str(checkpoint), "--lora", str(lora), "--sampler", "t2v-turbo",
                 "--motion-scale", "0.05", "--out", str(out), *CLI_SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "no motion condition" in err and "Traceback" not in err, err
    assert not out.exists()
