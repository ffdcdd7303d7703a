"""The speed and memory paths compute what the default path computes (CPU, tiny models, fp32).

Tolerances, all absolute on outputs of order 1 (fp32):
- one UNet forward: 5e-5 against eager for channels_last (the same operations in another memory order:
  oneDNN's NHWC kernels sum in another order; 1.05e-5 seen with the 3-D kernels) and 1e-5 for
  torch.compile with the ``aot_eager`` backend (the
  capture inductor consumes, run with eager kernels; inductor itself runs on the GPU in
  benchmarks/gpu_suite.py, too slow to compile on 2 cores); the goldens' own 1e-4 on the parity goldens;
- whole samples (3 guided steps at cfg 12, which scales the rounding up, then the VAE): 1e-4, as
  test_pipeline's split-guidance test; the low-memory mode (sequential guidance) the same.
Speed and peak memory are measured by benchmarks/gpu_suite.py and benchmarks/low_memory.py, not here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
from conftest import random_unet, tiny_unet_config
from parity.golden_case import GoldenCase, goldens_dir

from vc2_core.cli import main
from vc2_core.config import preset
from vc2_core.pipeline import GenerationSettings, generate, low_memory
from vc2_core.speedups import compiled, is_channels_last, set_channels_last

FRAMES = 4
SMALL = GenerationSettings(height=16, width=24, frames=4, steps=3)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(batch, cfg.in_channels, FRAMES, 8, 8, generator=g)
    context = torch.randn(batch, 7, cfg.context_dim, generator=g)
    return x, torch.tensor([500] * batch), context, torch.tensor([8] * batch)


def _conv_layouts(unet: nn.Module, inputs) -> dict[str, bool]:
    """{conv name: its output is channels_last} over one forward (2-D convolutions with a spatial kernel)."""
    layouts = {}
    hooks = [module.register_forward_hook(
        lambda m, i, o, name=name: layouts.__setitem__(name, o.is_contiguous(memory_format=torch.channels_last)))
        for name, module in unet.named_modules() if isinstance(module, nn.Conv2d)]
    with torch.no_grad():
        unet(*inputs)
    for hook in hooks:
        hook.remove()
    return layouts


@pytest.mark.parametrize("changes", [{}, {"tempspatial_aware": True}], ids=["vc2", "spatial-aware-3d-convs"])
def test_channels_last_equals_eager_and_every_convolution_runs_channels_last(changes):
    unet = random_unet(tiny_unet_config(temporal_length=FRAMES, **changes))
    inputs = _inputs(unet)
    assert not any(_conv_layouts(unet, inputs).values())  # the default: NCHW (the check can fail)
    with torch.no_grad():
        eager = unet(*inputs)
    set_channels_last(unet, True)
    assert is_channels_last(unet)
    layouts = _conv_layouts(unet, inputs)
    assert layouts and all(layouts.values()), [name for name, ok in layouts.items() if not ok]
    with torch.no_grad():
        fast = unet(*inputs)
    assert fast.is_contiguous() and fast.shape == eager.shape  # (b, c, t, h, w) as always
    torch.testing.assert_close(fast, eager, atol=5e-5, rtol=0)


def test_channels_last_switches_back_and_keeps_values():
    unet = random_unet(tiny_unet_config(temporal_length=FRAMES, tempspatial_aware=True))
    before = {name: p.clone() for name, p in unet.named_parameters()}
    assert any(p.ndim == 5 for p in before.values())  # Conv3d weights: nn.Module.to(channels_last) refuses them
    set_channels_last(unet, True)
    set_channels_last(unet, False)
    assert not is_channels_last(unet)
    for name, p in unet.named_parameters():
        assert p.is_contiguous() and torch.equal(p, before[name]), name


@pytest.mark.parametrize("kind", ["unet_tiny_vc2", "unet_tiny_vc1"])
def test_channels_last_on_the_parity_goldens(kind):
    from parity.golden_kinds import unet as unet_kind

    path = goldens_dir() / f"{kind}.safetensors"
    assert path.is_file(), f"{path}: the parity golden is missing (set VC2_GOLDENS_DIR)"
    case = GoldenCase.load(path)
    from vc2_core.config import UNetConfig
    from vc2_core.modules import UNetModel

    unet = UNetModel(UNetConfig(**case.config)).eval()
    unet.load_state_dict(case.with_prefix("sd."), strict=True)
    set_channels_last(unet, True)
    inputs = case.with_prefix("in.")
    with torch.no_grad():
        y = unet(inputs["x"], inputs["timesteps"], inputs["context"], inputs.get("fps"))
    torch.testing.assert_close(y, case.with_prefix("out.")["y"], atol=unet_kind.ATOL, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_compiled_unet_equals_eager(channels_last):
    config = dataclasses.replace(tiny_unet_config(attention_resolutions=(), temporal_length=FRAMES), channel_mult=(1,))
    unet = random_unet(config)  # one level: every layer kind, a short trace
    inputs = _inputs(unet)
    with torch.no_grad():
        eager = unet(*inputs)
        set_channels_last(unet, channels_last)
        fast = compiled(unet, "aot_eager")(*inputs)
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=0)
    assert not any(name.startswith("_orig_mod") for name in unet.state_dict())  # the module itself is unchanged


def test_compile_backend_is_checked():
    with pytest.raises(ValueError, match="compile 'tensorrt': not a torch.compile backend here"):
        GenerationSettings(compile="tensorrt").resolve(preset("tiny"))


# compile: torch.compile's "eager" backend (Dynamo's capture run as it is: the wrapper, guards and cache through
# the pipeline, the shortest trace); the AOT capture inductor consumes: test_compiled_unet_equals_eager
@pytest.mark.parametrize("changes", [{"channels_last": True}, {"compile": "eager", "channels_last": True}],
                         ids=["channels-last", "compile+channels-last"])
def test_pipeline_speed_paths_equal_the_default_sample(tiny_model, changes):
    default = generate(tiny_model, ["a red ball"], [4], SMALL)
    fast = generate(tiny_model, ["a red ball"], [4], dataclasses.replace(SMALL, **changes))
    set_channels_last(tiny_model.unet, False)
    torch.testing.assert_close(fast, default, atol=1e-4, rtol=0)


def test_low_memory_mode_equals_the_default_sample(tiny_model):
    settings = low_memory(dataclasses.replace(SMALL, decode_chunk_frames=None))
    assert (settings.batched_cfg, settings.decode_chunk_frames) == (False, 1)
    default = generate(tiny_model, ["a red ball"], [4], SMALL)
    lean = generate(tiny_model, ["a red ball"], [4], settings, offload=True)
    torch.testing.assert_close(lean, default, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init", "--preset", "tiny", "--out", str(path), "--randomize-zero-init"]) == 0
    return path


def test_vc2_sample_low_memory_compile_channels_last(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "frames"
    code = main(["sample", "--ckpt", str(tiny_checkpoint), "--prompt", "a red ball", "--out", str(out),
                 "--frames", "4", "--height", "16", "--width", "24", "--steps", "3", "--low-memory",
                 "--compile", "eager", "--channels-last"])
    printed = capsys.readouterr().out
    assert code == 0 and len(list(out.glob("*.png"))) == 4
    assert "compile warm-up: about" in printed


def test_vc2_sample_low_memory_refuses_no_offload(tiny_checkpoint, tmp_path, capsys):
    code = main(["sample", "--ckpt", str(tiny_checkpoint), "--prompt", "x", "--out", str(tmp_path / "v.mp4"),
                 "--low-memory", "--no-offload"])
    assert code != 0 and "--low-memory offloads the text encoder and VAE" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
