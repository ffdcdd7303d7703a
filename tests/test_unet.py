"""The UNet beyond the goldens: layouts, frame counts, options, errors, key layout of the full models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_unet, tiny_unet_config

from vc2_core.attention import attention_backend
from vc2_core.config import preset
from vc2_core.modules import ResBlock, SpatialTransformer, UNetModel


def _inputs(unet: UNetModel, b=2, t=4, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(b, cfg.in_channels, t, hw, hw, generator=g)
    context = torch.randn(b, 77, cfg.context_dim, generator=g)
    return x, torch.tensor([10, 900][:b] + [500] * (b - 2)), context


@pytest.mark.parametrize("family, prefix", [("vc2-512", "vc2"), ("vc1-512", "vc1")])
def test_full_unet_keys_and_shapes_equal_the_released_manifest(reference_dir, family, prefix):
    manifest = json.loads((reference_dir / f"{prefix}_512_manifest.json").read_text())["keys"]
    expected = {k.removeprefix("model.diffusion_model."): v[0] for k, v in manifest.items()
                if k.startswith("model.diffusion_model.")}
    with torch.device("meta"):
        state = UNetModel(preset(family).unet).state_dict()
    assert list(state) == list(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected


@pytest.mark.parametrize("frames", [1, 3, 8, 13])
def test_any_frame_count_runs_and_samples_do_not_mix(frames):
    unet = random_unet(tiny_unet_config(use_relative_position=True, temporal_conv=True))
    x, t, context = _inputs(unet, b=2, t=frames)
    with torch.no_grad():
        both = unet(x, t, context, fps=8)
        first = unet(x[:1], t[:1], context[:1], fps=8)
    assert both.shape == x.shape
    assert both.abs().max() > 0
    torch.testing.assert_close(both[:1], first, rtol=0, atol=2e-5)


def test_frames_interact_only_through_temporal_layers():
    """Without temporal layers a frame's output ignores the other frames; with them it does not."""
    spatial_only = random_unet(tiny_unet_config(temporal_attention=False, temporal_conv=False,
                                                addition_attention=False))
    full = random_unet(tiny_unet_config())
    for unet, coupled in ((spatial_only, False), (full, True)):
        x, t, context = _inputs(unet, b=1, t=4)
        x2 = x.clone()
        x2[:, :, 3] += 1.0  # change the last frame only
        with torch.no_grad():
            change = (unet(x, t, context, 8) - unet(x2, t, context, 8))[:, :, 0].abs().max()
        assert (change > 1e-4) == coupled


def test_fps_matters_only_with_fps_cond():
    with_fps = random_unet(tiny_unet_config(fps_cond=True))
    without = random_unet(tiny_unet_config(fps_cond=False))
    x, t, context = _inputs(with_fps)
    with torch.no_grad():
        assert (with_fps(x, t, context, 8) - with_fps(x, t, context, 24)).abs().max() > 1e-4
        torch.testing.assert_close(with_fps(x, t, context), with_fps(x, t, context, 16), rtol=0, atol=0)
        torch.testing.assert_close(without(x, t, context, 8), without(x, t, context, 24), rtol=0, atol=0)


def test_attention_backends_agree():
    unet = random_unet(tiny_unet_config(use_causal_attention=True, temporal_length=4))
    x, t, context = _inputs(unet, t=4)
    with torch.no_grad():
        with attention_backend("sdpa"):
            sdpa = unet(x, t, context, 8)
        with attention_backend("math"):
            math = unet(x, t, context, 8)
    torch.testing.assert_close(sdpa, math, rtol=0, atol=2e-5)


def test_gradient_checkpointing_changes_nothing():
    plain = random_unet(tiny_unet_config(use_checkpoint=False)).train()
    checkpointed = random_unet(tiny_unet_config(use_checkpoint=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    for unet in (plain, checkpointed):  # dropout is 0 in ResBlocks, 0.1 in temporal convs: disable it
        for module in unet.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    x, t, context = _inputs(plain)
    grads = []
    for unet in (plain, checkpointed):
        unet.zero_grad()
        unet(x, t, context, 8).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in unet.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_shared_context_equals_per_frame_context():
    torch.manual_seed(0)
    layer = SpatialTransformer(32, 4, 8, context_dim=16, use_linear=True).eval()
    torch.nn.init.normal_(layer.proj_out.weight)
    x = torch.randn(6, 32, 4, 4)  # b=2 videos of t=3 frames
    context = torch.randn(2, 5, 16)
    with torch.no_grad():
        shared = layer(x, context)
        repeated = layer(x, context.repeat_interleave(3, dim=0))
    torch.testing.assert_close(shared, repeated, rtol=1e-5, atol=1e-5)


def test_shared_embedding_equals_per_frame_embedding():
    torch.manual_seed(0)
    block = ResBlock(32, 64, 0.0, out_channels=32, use_temporal_conv=True).eval()
    torch.nn.init.normal_(block.out_layers[3].weight)
    x, emb = torch.randn(6, 32, 4, 4), torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(block(x, emb, 3), block(x, emb.repeat_interleave(3, dim=0), 3), rtol=1e-5, atol=1e-5)


def test_causal_attention_needs_temporal_length_frames_or_one():
    unet = random_unet(tiny_unet_config(use_causal_attention=True, temporal_length=4))
    x, t, context = _inputs(unet, t=5)
    with pytest.raises(ValueError, match="temporal_length=4"):
        unet(x, t, context, 8)
    x, t, context = _inputs(unet, t=1)  # an image: it attends to itself with or without the mask
    plain = random_unet(tiny_unet_config(use_causal_attention=False, temporal_length=4))
    plain.load_state_dict(unet.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, context, 8), plain(x, t, context, 8), rtol=0, atol=0)


def test_temporal_cross_attention_needs_pixels_divisible_by_frames():
    unet = random_unet(tiny_unet_config(temporal_selfatt_only=False))
    x, t, context = _inputs(unet, t=4, hw=8)
    with torch.no_grad():
        assert unet(x, t, context, 8).shape == x.shape
    x, t, context = _inputs(unet, t=3, hw=8)  # 8x8 = 64 pixels, not divisible by 3 frames
    with pytest.raises(ValueError, match="divisible by the frame count 3"):
        unet(x, t, context, 8)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 4, 8, 8), "latent video"),
    (torch.zeros(2, 3, 2, 8, 8), "4 latent channels"),
    (torch.zeros(2, 4, 2, 7, 8), "divisible by 2"),
])
def test_bad_input_is_named(bad, message):
    unet = random_unet(tiny_unet_config())
    with pytest.raises(ValueError, match=message):
        unet(bad, torch.tensor([1, 2]), torch.zeros(2, 77, 32))


def test_config_rejects_contradictions():
    with pytest.raises(ValueError, match="num_heads or num_head_channels"):
        tiny_unet_config(num_head_channels=-1, num_heads=-1)
    with pytest.raises(TypeError):
        tiny_unet_config(no_such_flag=True)
