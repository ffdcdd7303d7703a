"""VC2 T2V-Turbo Loader and VC2 Sampler's t2v-turbo: the nodes sample as the library does (with_turbo + the
pipeline), the input model stays as it was, strength 0 is VideoCrafter2's weights, bad input changes nothing.

Runs the pack's nodes with the fakes of the ComfyUI calls (tests/fake_comfyui.py) on the tiny checkpoint of
tests/test_pack.py and T2V-Turbo files of random values in their layouts (a list of (up, down) tensors; a whole
T2V-Turbo-v2 UNet state dict).
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from bad_files import tree
from conftest import random_unet, tiny_unet_config
from test_pack import PACK, comfy, encode, load_pack, load_tiny, node, tiny_file  # noqa: F401 (fixtures)
from test_t2v_turbo import Exploit, random_lora

from vc2_core.attention import attention_backend
from vc2_core.checkpoint import load_checkpoint, save_checkpoint
from vc2_core.config import ScheduleConfig, preset
from vc2_core.model import VideoCrafter
from vc2_core.modules import UNetModel
from vc2_core.pipeline import GenerationSettings, generate
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.t2v_turbo import read_turbo_weights, time_cond_proj_base, turbo_config, with_turbo

PROMPT, SEED, FRAMES, HEIGHT, WIDTH, FPS = "a red ball rolls", 7, 4, 32, 48, 8
TURBO = dict(seed=SEED, steps=4, cfg=7.5, eta=1.0, fps=FPS, sampler_name="t2v-turbo", context_frames=0,
             context_overlap=4, context_loop=False)  # T2V-Turbo's defaults: 4 steps, guidance 7.5 in the embedding
LIBRARY = GenerationSettings(height=HEIGHT, width=WIDTH, frames=FRAMES, fps=FPS, steps=4, cfg=7.5, sampler="t2v-turbo")
# The node and the library run the same arithmetic on the same weights (the UNet merged once, in float32, the same
# sampler over the same eps predictor), so the decoded frames agree to float32 rounding of the VAE, as the
# pack's DDIM test allows (test_pack.test_nodes_reproduce_the_library_pipeline): 1e-5 of the 0..1 range.
# Measured 2026-12-03 (CPU, torch 2.13.0): 0 for both files.
PIXEL_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def turbo_files(tmp_path_factory):
    """Their files for the tiny preset, random values: unet_lora.pt (T2V-Turbo VC2), unet_mg.pt (v2), and ones
    that do not fit it (a LoRA missing a layer, a LoRA and a v2 UNet of a wider UNet)."""
    folder = tmp_path_factory.mktemp("turbo")
    tiny = preset("tiny").unet
    wider = tiny_unet_config(model_channels=64)
    files = {
        "unet_lora.pt": random_lora(UNetModel(turbo_config(tiny)), seed=2),
        "unet_mg.pt": random_unet(turbo_config(tiny, motion=True), seed=4).state_dict(),
        "short_lora.pt": random_lora(UNetModel(turbo_config(tiny)), seed=2)[:-2],
        "wide_lora.pt": random_lora(UNetModel(turbo_config(wider)), seed=2),
        "wide_unet_mg.pt": UNetModel(turbo_config(wider, motion=True)).state_dict(),
        "number.pt": 7,
    }
    for name, contents in files.items():
        torch.save(contents, folder / name)
    (folder / "truncated.pt").write_bytes((folder / "unet_lora.pt").read_bytes()[:300])
    (folder / "lora.safetensors").write_bytes(b"{}")
    return folder


@pytest.fixture
def loras(comfy, turbo_files):  # noqa: F811 (comfy is test_pack's fixture)
    """models/loras of the fake ComfyUI holding the T2V-Turbo files."""
    folder = comfy.root / "models" / "loras"
    for path in turbo_files.iterdir():
        (folder / path.name).symlink_to(path)
    return folder


def turbo(model, name="unet_lora.pt", strength=1.0):
    return node("VC2_TurboLoader").apply(model, name, strength)[0]


def sample(model, clip, negative="", **changes) -> torch.Tensor:
    latent = node("VC2_EmptyVideoLatent").make(model, WIDTH, HEIGHT, FRAMES, 1)[0]
    return node("VC2_Sampler").sample(model, encode(clip, PROMPT), encode(clip, negative), latent,
                                      **(TURBO | changes))[0]["samples"]


def library_frames(tiny_path, weights_path) -> torch.Tensor:
    """Frames [t, H, W, 3] in 0..1 of with_turbo + generate, the library path of vc2 sample --lora."""
    reference, _ = load_checkpoint(tiny_path)
    model = with_turbo(reference, read_turbo_weights(weights_path))
    with attention_backend("sdpa"):  # the loader's attention input in load_tiny
        video = generate(model, [PROMPT], [SEED], LIBRARY)  # (1, 3, t, H, W) in [-1, 1]
    return ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.unet.state_dict().items()}


def same_weights(model, state: dict[str, torch.Tensor]) -> bool:
    current = model.unet.state_dict()
    return current.keys() == state.keys() and all(torch.equal(current[key], value) for key, value in state.items())


# ---- the node against the library ----------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["unet_lora.pt", "unet_mg.pt"])
def test_the_nodes_sample_as_the_library(comfy, loras, tiny_file, turbo_files, weights):  # noqa: F811
    """Loader -> T2V-Turbo Loader -> VC2 Sampler (t2v-turbo, 4 steps, cfg 7.5) -> VAE Decode equals with_turbo +
    generate, for their LoRA and for a whole T2V-Turbo-v2 UNet; four steps on their grid, one UNet call each."""
    model, clip, vae = load_tiny()
    turbo_model = turbo(model, weights)
    assert turbo_model.config.unet.time_cond_proj_dim == 256 and hasattr(turbo_model.unet, "time_cond_proj")
    assert (turbo_model.config.unet.motion_cond_proj_dim is not None) == (weights == "unet_mg.pt")
    latent = sample(turbo_model, clip)
    assert comfy.progress[-4:] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    images = node("VC2_VAEDecode").decode(vae, {"samples": latent}, 1)[0]  # (t, H, W, 3)
    expected = library_frames(tiny_file, turbo_files / weights)
    assert images.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert (images - expected).abs().max() <= PIXEL_TOLERANCE, (images - expected).abs().max()


def test_the_guidance_scale_reaches_the_unet_and_the_negative_prompt_is_unused(comfy, loras):  # noqa: F811
    model, clip, _ = load_tiny()
    turbo_model = turbo(model)
    released = sample(turbo_model, clip)
    assert torch.equal(sample(turbo_model, clip, negative="blurry, low quality"), released)  # no unconditional pass
    assert (sample(turbo_model, clip, cfg=2.0) - released).abs().max() > 1e-4


# ---- the input model ----------------------------------------------------------------------------------------


def test_the_input_model_is_left_as_it_was(comfy, loras):  # noqa: F811
    model, clip, _ = load_tiny()
    before = snapshot(model)
    ddim = dict(steps=2, sampler_name="ddim")
    plain = sample(model, clip, **ddim)
    turbo_model = turbo(model)
    sample(turbo_model, clip)
    assert turbo_model.unet is not model.unet and turbo_model.patcher is not model.patcher
    assert model.config.unet.time_cond_proj_dim is None and not hasattr(model.unet, "time_cond_proj")
    assert model.patcher.patches == {} and same_weights(model, before)
    assert torch.equal(sample(model, clip, **ddim), plain)  # ComfyUI's cached model samples as before


def test_strength_zero_is_videocrafter2s_weights_with_the_embedding(comfy, loras):  # noqa: F811
    model, _, _ = load_tiny()
    base = snapshot(model)
    zero = turbo(model, strength=0.0)
    state = zero.unet.state_dict()
    assert set(state) == set(base) | {"time_cond_proj.weight"}
    assert all(torch.equal(state[key], value) for key, value in base.items())
    assert torch.equal(state["time_cond_proj.weight"], time_cond_proj_base(zero.config.unet, 0))  # vc2 sample's
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 8, 8, generator=generator)
    context = torch.randn(1, 77, model.config.unet.context_dim, generator=generator)
    timesteps, fps = torch.tensor([500]), torch.tensor([FPS])
    with torch.no_grad():  # without the guidance embedding the UNet is the released one (the same weights, laid
        out = zero.unet(x, timesteps, context, fps)  # out anew: float32 rounding apart, 2e-6 of max|out| measured)
        released = model.unet(x, timesteps, context, fps)
    assert (out - released).abs().max() <= 1e-5 * released.abs().max()
    full = turbo(model).unet.state_dict()
    key = "input_blocks.1.0.in_layers.2.weight"
    assert not torch.equal(full[key], base[key])  # strength 1 changes it


def test_weight_patches_of_the_input_are_the_base_their_lora_goes_on(comfy, loras):  # noqa: F811
    """A model with ComfyUI weight patches (VC2 LoRA Loader's) is turned T2V-Turbo with the patches applied; the
    input's patcher keeps them to itself."""
    model, _, _ = load_tiny()
    base = snapshot(model)
    key = next(name for name in base if name.endswith("attn1.to_q.weight"))
    delta = 0.01 * torch.randn(base[key].shape, generator=torch.Generator().manual_seed(5))
    patched = importlib.import_module(f"{PACK}.nodes.lora").patched
    with_lora = patched(model, {key: delta}, 1.0, "lora test")
    zero = turbo(with_lora, strength=0.0)
    assert torch.equal(zero.unet.state_dict()[key], base[key] + delta)
    assert zero.name == "tiny.safetensors + lora test + t2v-turbo unet_lora.pt x0"
    importlib.import_module(f"{PACK}.nodes.comfy").load([model.patcher])  # loads without the LoRA's patch again
    assert same_weights(model, base)


# ---- VC2 Sampler with t2v-turbo -----------------------------------------------------------------------------


def test_t2v_turbo_on_a_model_without_their_weights_says_what_to_connect(comfy, loras):  # noqa: F811
    model, clip, _ = load_tiny()
    with pytest.raises(ValueError, match="has no T2V-Turbo weights. Put VC2 T2V-Turbo Loader") as error:
        sample(model, clip)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="t2v-turbo re-noises with fresh noise at every step \\(eta 1\\); got eta 0.5"):
        sample(turbo(model), clip, eta=0.5)


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.fixture
def vc1_model(comfy, tmp_path):  # noqa: F811
    """A tiny VideoCrafter1-layout checkpoint (relative-position temporal attention, no temporal convolutions)
    loaded by the pack's loader."""
    tiny = preset("tiny")
    config = tiny.replace(name="custom", schedule=ScheduleConfig(use_scale=False), unet=dataclasses.replace(
        tiny.unet, use_relative_position=True, temporal_conv=False, fps_cond=False))
    torch.manual_seed(0)
    vc1 = VideoCrafter(config)
    randomize_zero_initialized(vc1.unet, torch.Generator().manual_seed(1))
    save_checkpoint(vc1, comfy.root / "models" / "videocrafter" / "vc1_tiny.safetensors")
    return node("VC2_CheckpointLoader").load("vc1_tiny.safetensors", "fp32", "sdpa")[0]


BAD = [
    ("missing", "gone.pt", 1.0, FileNotFoundError, "'gone.pt' is not in ComfyUI/models/loras"),
    ("truncated", "truncated.pt", 1.0, ValueError, "truncated.pt: not T2V-Turbo's weights (not a torch file, or a "
                                                   "truncated one"),
    ("not-a-list-or-dict", "number.pt", 1.0, ValueError, "number.pt: not T2V-Turbo's weights (holds a int"),
    ("safetensors", "lora.safetensors", 1.0, ValueError, "a safetensors file; T2V-Turbo's files are torch .pt files"),
    ("a-layer-missing", "short_lora.pt", 1.0, ValueError, "short_lora.pt does not fit tiny.safetensors: the LoRA "
                                                          "adapts 247 layers, this UNet has 248"),
    ("lora-of-a-wider-unet", "wide_lora.pt", 1.0, ValueError, "wide_lora.pt does not fit tiny.safetensors: the LoRA "
                                                              "does not fit this UNet"),
    ("v2-unet-of-a-wider-unet", "wide_unet_mg.pt", 1.0, ValueError, "wrong shapes"),
    ("v2-unet-with-a-strength", "unet_mg.pt", 0.5, ValueError, "unet_mg.pt is a whole T2V-Turbo-v2 UNet, which has "
                                                               "no strength; set strength 1 (got 0.5)"),
    ("strength-negative", "unet_lora.pt", -1.0, ValueError, "strength -1.0: must be a finite number >= 0"),
    ("strength-nan", "unet_lora.pt", float("nan"), ValueError, "strength nan: must be a finite number >= 0"),
]


@pytest.mark.parametrize(("name", "turbo_name", "strength", "kind", "message"), BAD, ids=[case[0] for case in BAD])
def test_bad_input_names_the_problem_and_changes_nothing(comfy, loras, name, turbo_name, strength, kind,  # noqa: F811
                                                         message):
    model, _, _ = load_tiny()
    before, files = snapshot(model), tree(comfy.root)
    with pytest.raises(kind) as error:
        turbo(model, turbo_name, strength)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert model.patcher.patches == {} and same_weights(model, before)
    assert model.config.unet.time_cond_proj_dim is None and tree(comfy.root) == files


def test_a_pickle_with_code_is_refused_and_runs_nothing(comfy, loras):  # noqa: F811
    marker = comfy.root / "ran"
    torch.save([torch.zeros(2, 2), Exploit(str(marker))], loras / "exploit.pt")
    model, _, _ = load_tiny()
    with pytest.raises(ValueError, match="exploit.pt: not T2V-Turbo's weights \\(refused: not a plain file"):
        turbo(model, "exploit.pt")
    assert not marker.exists()


def test_videocrafter1_and_a_model_already_turbo_are_refused(comfy, loras, vc1_model):  # noqa: F811
    with pytest.raises(ValueError, match="vc1_tiny.safetensors is a VideoCrafter1 model .* distilled from "
                                         "VideoCrafter2"):
        turbo(vc1_model)
    model, _, _ = load_tiny()
    with pytest.raises(ValueError, match="already has T2V-Turbo's weights; their files go on the released"):
        turbo(turbo(model))


def test_vc2_model_to_model_refuses_a_turbo_model(comfy, loras):  # noqa: F811
    """ComfyUI's samplers would call T2V-Turbo's UNet without its guidance-scale input: refused, named."""
    model, _, _ = load_tiny()
    to_comfy = load_pack().NODE_CLASS_MAPPINGS["VC2_ModelToComfy"]()
    assert to_comfy.convert(model)[0] is model.patcher
    with pytest.raises(ValueError, match="has T2V-Turbo's weights.*sample it with VC2 Sampler"):
        to_comfy.convert(turbo(model))


def test_the_file_list_offers_torch_files_only(comfy, loras):  # noqa: F811
    files = load_pack().NODE_CLASS_MAPPINGS["VC2_TurboLoader"].INPUT_TYPES()["required"]["turbo_name"][0]
    assert "unet_lora.pt" in files and "unet_mg.pt" in files and "lora.safetensors" not in files
