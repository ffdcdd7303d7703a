"""Checkpoint files: official layouts load (ckpt, safetensors, DeepSpeed), saves are bit-exact, bad files are named."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from vc2_core.checkpoint import CheckpointError, load_checkpoint, model_config_to_json, read_checkpoint, save_checkpoint
from vc2_core.config import preset
from vc2_core.detect import recognise
from vc2_core.diffusion import DiffusionSchedule
from vc2_core.model import VideoCrafter
from vc2_core.training.engine_state import UntrustedState, check_engine_state


def _golden(reference_dir, name):
    return load_file(str(reference_dir / "goldens" / f"{name}.safetensors"))


def _official_from_goldens(reference_dir) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A tiny VideoCrafter2 checkpoint in the official layout, assembled from golden state dicts."""
    unet = _golden(reference_dir, "unet_tiny_vc2")
    parts = [("", _golden(reference_dir, "sched_vc2_use_scale")), ("model.diffusion_model.", unet),
             ("first_stage_model.", _golden(reference_dir, "vae_tiny")),
             ("cond_stage_model.", _golden(reference_dir, "clip_tiny_penultimate"))]
    state = {prefix + k[3:]: v for prefix, tensors in parts for k, v in tensors.items() if k.startswith("sd.")}
    return state, unet


@pytest.mark.parametrize("layout", ["lightning_ckpt", "safetensors", "deepspeed_ckpt"])
def test_official_layout_built_from_goldens_loads_and_matches(reference_dir, tmp_path, layout):
    state, unet_case = _official_from_goldens(reference_dir)
    path = tmp_path / ("model.safetensors" if layout == "safetensors" else "model.ckpt")
    if layout == "lightning_ckpt":
        torch.save({"state_dict": state, "epoch": 3, "global_step": 1200}, path)
    elif layout == "deepspeed_ckpt":
        torch.save({"module": {"_forward_module." + k: v for k, v in state.items()}}, path)
    else:
        save_file(state, str(path))
    model, info = load_checkpoint(path)
    assert info.family == "custom"  # tiny sizes: inferred from the shapes, then verified
    assert info.config.unet.temporal_conv and info.config.unet.fps_cond and info.config.schedule.use_scale
    assert info.config.schedule.scale_b == 0.7 and info.config.schedule.mid_step == 400
    with torch.no_grad():
        y = model.unet(unet_case["in.x"], unet_case["in.timesteps"], unet_case["in.context"], unet_case["in.fps"])
    assert (y - unet_case["out.y"]).abs().max() < 1e-4


def test_save_then_load_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny"))
    path = save_checkpoint(model, tmp_path / "tiny.safetensors")
    state, metadata = read_checkpoint(path)
    original = model.official_state_dict()
    assert set(state) == set(original) and all(torch.equal(state[k], original[k]) for k in original)
    assert metadata["format"] == "vc2" and metadata["family"] == "tiny"
    loaded, info = load_checkpoint(path)
    assert info.family == "tiny" and info.config == model.config and not info.notes
    again = loaded.official_state_dict()
    assert list(again) == list(original) and all(torch.equal(again[k], original[k]) for k in original)
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed


def _full_size_state(family: str) -> dict[str, torch.Tensor]:
    """Keys and shapes of a released checkpoint: weights on the meta device, schedule buffers real."""
    with torch.device("meta"):
        state = VideoCrafter(preset(family)).official_state_dict()
    return state | DiffusionSchedule(preset(family).schedule).official_state_dict()


@pytest.mark.parametrize("family", ["vc2-512", "vc1-512", "vc1-1024"])
def test_released_families_are_recognised_from_keys(family):
    state = _full_size_state(family)
    info = recognise(state).info
    assert info.family == family and info.config.unet == preset(family).unet and not info.notes


def test_schedule_buffers_are_rederived_and_reported():
    state = _full_size_state("vc2-512")
    without = {k: v for k, v in state.items() if k not in ("scale_arr", "betas")}
    notes = recognise(without).info.notes
    assert any("re-derived" in n and "scale_arr" in n and "betas" in n for n in notes)
    longer = state | {"scale_arr": torch.cat([state["scale_arr"][:1000], torch.full((600,), 0.7)])}
    assert any("scale_arr stored with 1600 entries" in n for n in recognise(longer).info.notes)
    wrong = state | {"betas": state["betas"] * 2}
    assert any("stored betas differs" in n for n in recognise(wrong).info.notes)


def test_not_a_videocrafter_checkpoint_names_what_is_missing(tmp_path):
    sd15 = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.input_blocks.1.1.proj_in.weight": torch.zeros(320, 320, 1, 1),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(8, 768),
            "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)}
    path = tmp_path / "sd15.safetensors"
    save_file(sd15, str(path))
    with pytest.raises(CheckpointError, match="not a VideoCrafter checkpoint: its UNet has no temporal layers.*"
                                              "Stable Diffusion 1.x's CLIP-L"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_truncated_file_says_so(tmp_path, suffix):
    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny"))
    full = tmp_path / f"full{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": model.official_state_dict()}, full)
    else:
        save_checkpoint(model, full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch vc2_pickle_was_executed",))


def test_pickle_that_would_run_code_is_refused_unexecuted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused.*Nothing in it was executed"):
        load_checkpoint(path)
    assert not (tmp_path / "vc2_pickle_was_executed").exists()
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(_RunsCode(), protocol=2))  # a legacy (non-zip) pickle
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(raw)
    assert not (tmp_path / "vc2_pickle_was_executed").exists()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # dcp.save in one process, as asked
def test_engine_state_check_reads_a_distributed_checkpoint_index_without_running_code(tmp_path, monkeypatch):
    # FSDP's sharded engine state is a torch.distributed.checkpoint folder, whose .metadata index torch reads
    # with the plain unpickler; check_engine_state reads it with one that knows only the index's classes
    import torch.distributed.checkpoint as dcp

    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
             checkpoint_id=state / "pytorch_model_fsdp_0", no_dist=True)
    check_engine_state(state)  # a real index (tensors, chunks, bytes entries, dtypes, sizes, its path) passes
    index = state / "pytorch_model_fsdp_0" / ".metadata"
    index.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    with pytest.raises(UntrustedState, match=r"\.metadata: refused to resume: its pickle calls (posix|os)\.system"):
        check_engine_state(state)
    assert not (tmp_path / "vc2_pickle_was_executed").exists()


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny"))
    state = {k: v.contiguous() for k, v in model.official_state_dict().items()}
    del state["model.diffusion_model.out.2.bias"]
    state["model.diffusion_model.extra.weight"] = torch.zeros(2)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path), metadata={"vc2_config": model_config_to_json(model.config)})
    with pytest.raises(CheckpointError, match=r"1 missing: out\.2\.bias; 1 unexpected: extra\.weight"):
        load_checkpoint(path)


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="unrecognised header"):
        load_checkpoint(text)


@pytest.mark.parametrize("changes", [
    dict(model_channels=64, channel_mult=(1, 2, 3), num_res_blocks=2, attention_resolutions=(4, 2)),
    dict(use_relative_position=True, temporal_conv=False, fps_cond=False, temporal_length=12),
    dict(use_linear=False, transformer_depth=2, temporal_transformer_depth=2, tempspatial_aware=True),
    dict(use_scale_shift_norm=True, resblock_updown=True, temporal_selfatt_only=False),
])
def test_custom_sizes_are_inferred_from_shapes(changes):
    import dataclasses

    config = dataclasses.replace(preset("tiny"), name="custom", unet=dataclasses.replace(
        preset("tiny").unet, **{"use_checkpoint": True, "temporal_length": 16, **changes}))
    with torch.device("meta"):
        state = VideoCrafter(config).official_state_dict()
    info = recognise(state | DiffusionSchedule(config.schedule).official_state_dict()).info
    assert info.family == "custom" and info.config.unet == config.unet
    assert info.config.vae == config.vae


def test_written_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through a temporary file, which mkstemp and safetensors create as 0600; the finished
    checkpoint, LoRA and video must be readable as any file the user writes (umask)."""
    import os

    import numpy as np

    from vc2_core.checkpoint import save_checkpoint as save
    from vc2_core.config import preset as preset_of
    from vc2_core.model import VideoCrafter as Model
    from vc2_core.video_io import write_video

    mask = os.umask(0)
    os.umask(mask)
    paths = [save(Model(preset_of("tiny")), tmp_path / "m.safetensors"),
             write_video(tmp_path / "v.gif", np.zeros((2, 8, 8, 3), np.uint8), 4)]
    assert all(path.stat().st_mode & 0o777 == 0o666 & ~mask for path in paths)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inference_casts_each_network_once_from_the_file(tmp_path, dtype):
    """Under fp16 and bf16 the VAE keeps the file's float32 values bit for bit (it is never cast to half
    precision and back); the UNet and the text encoder are the file's values cast once to the compute dtype."""
    from vc2_core.checkpoint import build_model, open_checkpoint
    from vc2_core.keys import TEXT_PREFIX, VAE_PREFIX, under_prefix

    path = save_checkpoint(VideoCrafter(preset("tiny")), tmp_path / "tiny.safetensors")
    state = read_checkpoint(path)[0]
    model = build_model(open_checkpoint(path), dtype=dtype, for_inference=True)
    for name, value in model.vae.official_state_dict().items():
        stored = state[VAE_PREFIX + name]
        assert stored.dtype == torch.float32 and value.dtype == torch.float32, name
        assert torch.equal(value, stored), name
    for name, value in model.unet.state_dict().items():
        assert value.dtype == dtype and torch.equal(value, state["model.diffusion_model." + name].to(dtype)), name
    text = under_prefix(state, TEXT_PREFIX)
    for name, value in model.text_encoder.official_state_dict().items():
        assert value.dtype == dtype and torch.equal(value, text[name].to(dtype)), name
