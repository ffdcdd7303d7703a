"""The VAE beyond the golden: official key layout, video chunking, sampling, errors, config inference."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vc2_core.config import VAEConfig
from vc2_core.vae import VideoVAE

TINY = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=32)
DEEPER = VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, z_channels=3, embed_dim=3, in_channels=2, out_ch=5)


def random_official_state(config: VAEConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        layout = VideoVAE(config).official_state_dict()
    return {k: 0.2 * torch.randn(v.shape, generator=g) for k, v in layout.items()}


def random_vae(config: VAEConfig = TINY, seed: int = 0) -> VideoVAE:
    vae = VideoVAE(config).eval()
    vae.load_official_state_dict(random_official_state(config, seed))
    return vae


def test_full_vae_keys_shapes_and_order_equal_the_released_manifest(reference_dir):
    manifest = json.loads((reference_dir / "vc2_512_manifest.json").read_text())["keys"]
    expected = {k.removeprefix("first_stage_model."): v[0] for k, v in manifest.items()
                if k.startswith("first_stage_model.")}
    with torch.device("meta"):
        state = VideoVAE(VAEConfig()).official_state_dict()
    assert list(state) == list(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected


@pytest.mark.parametrize("config", [TINY, DEEPER], ids=["tiny", "deeper"])
def test_official_state_dict_round_trip_is_bit_exact_in_order(config):
    state = random_official_state(config, seed=3)
    vae = VideoVAE(config)
    vae.load_official_state_dict(state)
    saved = vae.official_state_dict()
    assert list(saved) == list(state)
    for key, value in state.items():
        assert saved[key].shape == value.shape and torch.equal(saved[key], value), key
    attn = vae.autoencoder.decoder.mid_block.attentions[0].to_q.weight
    assert attn.ndim == 2 and torch.equal(attn, state["decoder.mid.attn_1.q.weight"][:, :, 0, 0])


def test_golden_weights_round_trip_in_the_recorded_order(reference_dir):
    golden = load_file(str(reference_dir / "goldens" / "vae_tiny.safetensors"))
    sidecar = json.loads((reference_dir / "goldens" / "vae_tiny.json").read_text())
    state = {k.removeprefix("sd."): v for k, v in golden.items() if k.startswith("sd.")}
    vae = VideoVAE(VAEConfig.from_official(sidecar["config"]))
    vae.load_official_state_dict(state)
    saved = vae.official_state_dict()
    assert list(saved) == list(sidecar["state_dict"]["keys"])
    assert all(torch.equal(saved[k], state[k]) for k in state)


def test_prefixed_keys_and_assign_onto_a_meta_model():
    state = random_official_state(TINY, seed=4)
    with torch.device("meta"):
        meta = VideoVAE(TINY)
    meta.load_official_state_dict({"first_stage_model." + k: v for k, v in state.items()}, assign=True)
    reference = VideoVAE(TINY)
    reference.load_official_state_dict(state)
    z = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(meta.eval().decode_video(z), reference.eval().decode_video(z))


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_decode_equals_batched_decode(chunk):
    vae = random_vae()
    z = torch.randn(2, 4, 5, 6, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = vae.decode_video(z)
        chunked = vae.decode_video(z, chunk_frames=chunk)
        frame = vae.decode((1.0 / vae.scale_factor) * z[:, :, 3])
    assert batched.shape == (2, 3, 5, 12, 10)
    assert (chunked - batched).abs().max() <= 1e-5
    assert (batched[:, :, 3] - frame).abs().max() <= 1e-5  # decode((1/scale) * z) frame by frame


def test_decode_multiplies_by_the_reciprocal_of_the_scale():
    vae = random_vae()
    z = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(vae.decode_video(z, chunk_frames=1)[:, :, 0], vae.decode((1.0 / 0.18215) * z[:, :, 0]))


def test_encode_video_sampling_is_reproducible_and_matches_the_formula():
    vae = random_vae()
    video = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        first = vae.encode_video(video, generator=torch.Generator().manual_seed(7))
        again = vae.encode_video(video, generator=torch.Generator().manual_seed(7))
        other = vae.encode_video(video, generator=torch.Generator().manual_seed(8))
        noise = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(7))
        explicit = vae.encode_video(video, noise=noise)
        chunked = vae.encode_video(video, noise=noise, chunk_frames=2)
        mean_only = vae.encode_video(video, sample=False)
        # row b*T + f of the flattened batch is sample b, frame f
        mean, logvar = vae.posterior(video[1:2, :, 2])
    assert first.shape == (2, 4, 3, 4, 4)
    assert torch.equal(first, again) and torch.equal(first, explicit) and not torch.equal(first, other)
    assert (chunked - explicit).abs().max() <= 1e-5
    expected = 0.18215 * (mean + torch.exp(0.5 * logvar) * noise[1 * 3 + 2: 1 * 3 + 3])
    assert (explicit[1:2, :, 2] - expected).abs().max() <= 1e-6
    assert (mean_only[1:2, :, 2] - 0.18215 * mean).abs().max() <= 1e-6


@pytest.mark.parametrize("config, size", [(TINY, (9, 6)), (DEEPER, (11, 13))], ids=["tiny", "deeper"])
def test_any_image_size_encodes_like_the_image_path(config, size):
    vae = random_vae(config)
    video = torch.randn(1, config.in_channels, 2, *size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        z = vae.encode_video(video, generator=torch.Generator().manual_seed(0))
        mean, _ = vae.posterior(video[:, :, 1])
    f = config.downsample_factor
    assert z.shape == (1, config.z_channels, 2, size[0] // f, size[1] // f) == mean.shape[:2] + (2,) + mean.shape[2:]


def test_posterior_clamps_logvar():
    mean, logvar = VideoVAE.split_moments(torch.tensor([1.0, -2.0, -100.0, 50.0]).view(1, 4, 1, 1))
    assert mean.flatten().tolist() == [1.0, -2.0]
    assert logvar.flatten().tolist() == [-30.0, 20.0]


@pytest.mark.parametrize("call, message", [
    (lambda v: v.encode_video(torch.zeros(1, 3, 8, 8)), r"expected video \(b, 3, t, h, w\).*got \[1, 3, 8, 8\]"),
    (lambda v: v.encode_video(torch.zeros(1, 4, 2, 8, 8)), r"expected video \(b, 3, t, h, w\)"),
    (lambda v: v.encode_video(torch.zeros(1, 3, 2, 8, 8), noise=torch.zeros(1, 4, 4, 4)), r"noise.*\[2, 4, 4, 4\]"),
    (lambda v: v.decode_video(torch.zeros(1, 4, 4, 4)), r"expected latents \(b, 4, t, h, w\)"),
    (lambda v: v.decode_video(torch.zeros(1, 3, 2, 4, 4)), r"expected latents \(b, 4, t, h, w\)"),
    (lambda v: v.decode_video(torch.zeros(1, 4, 0, 4, 4)), "non-empty"),
    (lambda v: v.decode_video(torch.zeros(1, 4, 2, 4, 4), chunk_frames=0), "chunk_frames must be at least 1"),
    (lambda v: v.decode_video(torch.zeros(1, 4, 2, 4, 4), chunk_frames=1.5), "chunk_frames must be at least 1"),
    (lambda v: v.encode_video(torch.zeros(1, 3, 2, 8, 8), chunk_frames=-1), "chunk_frames must be at least 1"),
    (lambda v: v.decode(torch.zeros(1, 4, 2, 4, 4)), r"expected latents \(n, 4, h, w\)"),
    (lambda v: v.posterior(torch.zeros(3, 8, 8)), r"expected images \(n, 3, h, w\)"),
])
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(random_vae())


def test_bad_state_dicts_raise_value_error_naming_the_keys():
    vae = VideoVAE(TINY)
    state = random_official_state(TINY)
    missing = {k: v for k, v in state.items() if k != "decoder.mid.attn_1.q.weight"}
    with pytest.raises(ValueError, match=r"missing \['decoder\.mid\.attn_1\.q\.weight'\]"):
        vae.load_official_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected \['loss\.logvar'\]"):
        vae.load_official_state_dict({**state, "loss.logvar": torch.zeros(())})
    wrong = {**state, "encoder.mid.attn_1.k.weight": torch.zeros(64, 64, 3, 3)}
    with pytest.raises(ValueError, match=r"attn_1\.k\.weight: got \[64, 64, 3, 3\], expected \[64, 64, 1, 1\]"):
        vae.load_official_state_dict(wrong)
    other_config = r"unexpected \[.*\(\+68 more\).*shape mismatch.*config_from_official_state_dict"
    with pytest.raises(ValueError, match=other_config):
        vae.load_official_state_dict(random_official_state(DEEPER))


def test_unsupported_config_is_rejected():
    with pytest.raises(ValueError, match=r"ch_mult\[0\]"):
        VideoVAE(VAEConfig(ch=32, ch_mult=(2, 2)))


@pytest.mark.parametrize("config", [VAEConfig(), TINY, DEEPER], ids=["full", "tiny", "deeper"])
def test_config_inferred_from_shapes(config):
    with torch.device("meta"):
        state = VideoVAE(config).official_state_dict()
    inferred = VideoVAE.config_from_official_state_dict(state)
    assert inferred == VAEConfig(**{**config.__dict__, "resolution": inferred.resolution})
    assert VideoVAE.config_from_official_state_dict({"first_stage_model." + k: v for k, v in state.items()}) == inferred


def test_config_inference_rejects_other_state_dicts():
    with pytest.raises(ValueError, match="encoder.conv_in.weight"):
        VideoVAE.config_from_official_state_dict({"input_blocks.0.0.weight": torch.zeros(1)})
