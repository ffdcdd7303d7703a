"""LoRA adapters: zero-init, group selection, frozen base, merge, files and ``vc2 lora merge``."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
from conftest import random_unet, tiny_unet_config
from objective_helpers import drawn_loss
from safetensors.torch import save_file

from vc2_core.config import ScheduleConfig
from vc2_core.diffusion import DiffusionSchedule
from vc2_core.parameter_groups import Group, classify_unet_parameters
from vc2_core.training.lora import (
    LoRAFile,
    LoRALinear,
    inject_lora,
    load_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    merge_lora_state,
    read_lora,
    save_lora,
)

SCHEDULE = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))
# Temporal attention needs more than one frame to get a gradient; spatial LoRA trains on images as in the paper.
VARIANTS = {"spa": ((Group.SPATIAL,), 1), "temp": ((Group.TEMPORAL,), 4),
            "spa-temp": ((Group.SPATIAL, Group.TEMPORAL), 4)}
RANK, ALPHA = 4, 8.0
# Merging reorders float32 arithmetic (x @ (W + s*up@down)^T instead of x @ W^T + s*(x @ down^T) @ up^T). Through
# the tiny UNet (outputs up to ~2) that moves the output by 5e-6 to 8e-6 whatever the LoRA's size (float32 rounding,
# as in the parity tables of docs/architecture.md), so 1e-5 absolute is the bound.
MERGE_TOLERANCE = 1e-5


def _inputs(frames: int, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, frames, 8, 8, generator=g), torch.tensor([50, 600]), torch.randn(2, 77, 32, generator=g), \
        torch.tensor([8, 24])


def _output(unet, frames: int = 4) -> torch.Tensor:
    with torch.no_grad():
        return unet(*_inputs(frames))


def _original_state(unet) -> dict[str, torch.Tensor]:
    """The UNet's state under the original keys (``X.base.weight`` -> ``X.weight``), adapters left out."""
    wrapped = {path for path, _ in lora_layers(unet)}
    state = {}
    for key, value in unet.state_dict().items():
        parent, _, leaf = key.rpartition(".")
        owner, _, part = parent.rpartition(".")
        if owner in wrapped and part in ("lora_down", "lora_up"):
            continue
        state[f"{owner}.{leaf}" if owner in wrapped and part == "base" else key] = value
    return state


def _train(unet, groups, frames: int, steps: int = 3, targets: str = "attention") -> list:
    trainable = inject_lora(unet, groups, rank=RANK, alpha=ALPHA, targets=targets)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=1e-2, weight_decay=0.01)
    g = torch.Generator().manual_seed(3)
    unet.train()
    for _ in range(steps):
        latents = torch.randn(2, 4, frames, 8, 8, generator=g)
        context = torch.randn(2, 77, 32, generator=g)
        loss = drawn_loss(unet, SCHEDULE, latents, context, torch.tensor([8, 24]), g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    unet.eval()
    return trainable


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple]:
    """Per variant: (plain UNet state before training, the trained LoRA UNet, its LoRA tensors at init)."""
    result = {}
    for name, (groups, frames) in VARIANTS.items():
        unet = random_unet(tiny_unet_config())
        before = {k: v.clone() for k, v in unet.state_dict().items()}
        torch.manual_seed(11)
        trainable = inject_lora(copy.deepcopy(unet), groups, rank=RANK, alpha=ALPHA)
        initial = {k: p.detach().clone() for k, p in trainable}
        torch.manual_seed(11)  # the same adapter init in the trained copy
        _train(unet, groups, frames)
        result[name] = (before, unet, initial)
    return result


def test_zero_init_leaves_the_output_unchanged():
    unet = random_unet(tiny_unet_config())
    expected = _output(unet)
    trainable = inject_lora(unet, [Group.SPATIAL, Group.TEMPORAL], rank=RANK, targets="attention+ff")
    assert torch.equal(_output(unet), expected)
    names = [name for name, _ in trainable]
    assert any(name.endswith("proj_in.lora_up.weight") for name in names)  # applied through layers.pointwise
    assert any(name.endswith("ff.net.0.proj.lora_down.weight") for name in names)
    assert {id(p) for p in unet.parameters() if p.requires_grad} == {id(p) for _, p in trainable}


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_moves_only_the_adapters_of_the_chosen_groups(trained, variant):
    groups = set(VARIANTS[variant][0])
    before, unet, initial = trained[variant]
    after = _original_state(unet)
    assert after.keys() == before.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []  # base bit-identical
    assert all(not p.requires_grad for p in after.values())

    info = classify_unet_parameters(unet)
    owners = {info[f"{path}.base.weight"].group for path, _ in lora_layers(unet)}
    assert owners == groups  # adapters in every chosen group and nowhere else
    state = lora_state_dict(unet)
    assert state.keys() == initial.keys() and len(state) == 2 * len(lora_layers(unet))
    unchanged = [k for k in state if torch.equal(state[k], initial[k])]
    assert unchanged == []  # every adapter tensor trained


@pytest.mark.parametrize("variant", VARIANTS)
def test_merged_equals_unmerged(trained, variant):
    before, unet, _ = trained[variant]
    unet = copy.deepcopy(unet)
    with_lora = _output(unet)
    merge_lora(unet)
    assert not lora_layers(unet)
    assert list(unet.state_dict()) == list(before)  # the official keys, in order
    assert (_output(unet) - with_lora).abs().max() <= MERGE_TOLERANCE
    assert not torch.equal(_output(unet), _output(random_unet(tiny_unet_config())))  # the LoRA did something


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_lora_state_equals_merge_lora(trained, variant, tmp_path):
    before, unet, _ = trained[variant]
    groups = VARIANTS[variant][0]
    path = save_lora(unet, tmp_path / "lora.safetensors", family="tiny", groups=groups, rank=RANK, alpha=ALPHA,
                     targets="attention")
    merged_state = merge_lora_state(before, read_lora(path))
    module = copy.deepcopy(unet)
    merge_lora(module)
    state = module.state_dict()
    assert merged_state.keys() == state.keys()
    assert all(torch.equal(merged_state[k], state[k]) for k in state)
    assert merged_state["out.2.weight"] is before["out.2.weight"]  # untouched tensors are shared


def test_save_read_load_round_trip(trained, tmp_path):
    _, unet, _ = trained["spa-temp"]
    path = save_lora(unet, tmp_path / "lora.safetensors", family="tiny", groups=["temporal", "spatial"], rank=RANK,
                     alpha=ALPHA, targets="attention")
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]  # no temporary file left
    lora = read_lora(path)
    assert (lora.family, lora.groups, lora.rank, lora.alpha, lora.targets) == (
        "tiny", (Group.SPATIAL, Group.TEMPORAL), RANK, ALPHA, "attention")
    fresh = random_unet(tiny_unet_config())
    base_output = _output(fresh)
    load_lora(fresh, lora)
    assert torch.equal(_output(fresh), _output(unet))
    assert all(torch.equal(v, lora.state[k]) for k, v in lora_state_dict(fresh).items())
    assert {id(p) for p in fresh.parameters() if p.requires_grad} == {id(p) for _, p in _lora_params(fresh)}

    off = random_unet(tiny_unet_config())
    load_lora(off, lora, scale=0.0)
    assert torch.equal(_output(off), base_output)
    half = random_unet(tiny_unet_config())
    load_lora(half, lora, scale=0.5)
    merged = random_unet(tiny_unet_config())
    merged.load_state_dict(merge_lora_state(merged.state_dict(), lora, scale=0.5))
    assert (_output(half) - _output(merged)).abs().max() <= MERGE_TOLERANCE


def _lora_params(unet):
    return [(n, p) for n, p in unet.named_parameters() if ".lora_" in n]


def test_failed_save_leaves_no_temporary_file(trained, tmp_path):
    _, unet, _ = trained["spa"]
    (tmp_path / "lora.safetensors").mkdir()  # the final rename cannot replace a directory
    with pytest.raises(OSError):
        save_lora(unet, tmp_path / "lora.safetensors", family="tiny", groups=["spatial"], rank=RANK, alpha=ALPHA,
                  targets="attention")
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def test_save_checks_the_metadata_against_the_adapters(trained, tmp_path):
    _, unet, _ = trained["spa"]
    out = tmp_path / "lora.safetensors"
    good = {"family": "tiny", "groups": ["spatial"], "rank": RANK, "alpha": ALPHA, "targets": "attention"}
    for change, message in [({"rank": 8}, "differ from rank 8"), ({"alpha": 1.0}, "alpha 1"),
                            ({"groups": ["spatial", "temporal"]}, "no adapter on"),
                            ({"targets": "attention+ff"}, "no adapter on"),
                            ({"targets": "mlp"}, "unknown LoRA targets"),
                            ({"groups": ["motion"]}, "unknown parameter group 'motion'")]:
        with pytest.raises(ValueError, match=message):
            save_lora(unet, out, **{**good, **change})
    with pytest.raises(ValueError, match="no LoRA adapters to save"):
        save_lora(random_unet(tiny_unet_config()), out, **good)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_lora(unet, tmp_path / "lora.pt", **good)
    assert list(tmp_path.iterdir()) == []


def test_inject_validates_its_arguments():
    unet = random_unet(tiny_unet_config())
    with pytest.raises(ValueError, match="rank must be a whole number >= 1"):
        inject_lora(unet, ["spatial"], rank=0)
    with pytest.raises(ValueError, match="no parameter groups"):
        inject_lora(unet, [], rank=4)
    with pytest.raises(ValueError, match="unknown LoRA targets 'mlp'"):
        inject_lora(unet, ["spatial"], rank=4, targets="mlp")
    with pytest.raises(ValueError, match="nothing to adapt"):
        inject_lora(unet, [Group.CONDITIONING], rank=4)  # fps_embedding has no attention
    assert not lora_layers(unet) and all(p.requires_grad for p in unet.parameters())  # errors change nothing
    inject_lora(unet, "temporal", rank=4)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        inject_lora(unet, ["spatial"], rank=4)
    with pytest.raises(ValueError, match="no LoRA adapters to merge"):
        merge_lora(random_unet(tiny_unet_config()))


def test_half_precision_base_keeps_float32_adapters():
    layer = LoRALinear(torch.nn.Linear(8, 6).to(torch.bfloat16), rank=2, alpha=2.0)
    torch.nn.init.normal_(layer.lora_up.weight)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    y = layer(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and layer.lora_up.weight.grad.dtype == torch.float32
    assert layer.merged_weight().dtype == torch.bfloat16


def _write(path, tensors, metadata):
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_bad_lora_files_give_clear_errors(tmp_path):
    meta = {"format": "vc2-lora", "family": "tiny", "groups": "spatial", "rank": "2", "alpha": "2.0",
            "targets": "attention"}
    pair = {"a.to_q.lora_down.weight": torch.zeros(2, 8), "a.to_q.lora_up.weight": torch.zeros(6, 2)}
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    cases = [
        (tmp_path / "missing.safetensors", "no such LoRA file"),
        (garbage, "not a safetensors file"),
        (_write(tmp_path / "model.safetensors", pair, {"format": "vc2"}), "vc2 model checkpoint, not a LoRA"),
        (_write(tmp_path / "other.safetensors", pair, {}), "not a vc2 LoRA file \\(no metadata 'format'"),
        (_write(tmp_path / "partial.safetensors", pair, {"format": "vc2-lora", "family": "tiny"}),
         "lacks groups, rank, alpha, targets"),
        (_write(tmp_path / "rank.safetensors", pair, {**meta, "rank": "two"}), "rank 'two' is not a int"),
        (_write(tmp_path / "group.safetensors", pair, {**meta, "groups": "spatial,motion"}), "group 'motion'"),
        (_write(tmp_path / "shape.safetensors", pair, {**meta, "rank": "3"}), "inconsistent LoRA tensors"),
        (_write(tmp_path / "unpaired.safetensors", {"a.to_q.lora_down.weight": torch.zeros(2, 8)}, meta),
         "only one of lora_down / lora_up: a.to_q"),
        (_write(tmp_path / "strange.safetensors", {**pair, "a.to_q.weight": torch.zeros(6, 8)}, meta),
         "not LoRA weights.*a.to_q.weight"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            read_lora(path)


def test_load_and_merge_refuse_a_lora_that_does_not_fit(trained, tmp_path):
    _, unet, _ = trained["spa"]
    lora = read_lora(save_lora(unet, tmp_path / "lora.safetensors", family="tiny", groups=["spatial"], rank=RANK,
                               alpha=ALPHA, targets="attention"))
    extra = dict(lora.state)
    extra["middle_block.1.transformer_blocks.0.attn9.to_q.lora_down.weight"] = torch.zeros(RANK, 64)
    extra["middle_block.1.transformer_blocks.0.attn9.to_q.lora_up.weight"] = torch.zeros(64, RANK)
    key = next(iter(lora.state))
    del extra[key]
    target = random_unet(tiny_unet_config())
    with pytest.raises(ValueError, match=f"2 unknown keys: .*attn9.*1 missing keys: {key}"):
        load_lora(target, LoRAFile(extra, "tiny", lora.groups, lora.rank, lora.alpha, lora.targets))
    assert not lora_layers(target)  # refused before anything changed
    with pytest.raises(ValueError, match="attn9.to_q.weight is not in the state dict"):
        merge_lora_state(target.state_dict(), LoRAFile(extra, "tiny", lora.groups, RANK, ALPHA, "attention"))

    wider = random_unet(tiny_unet_config(model_channels=64))
    with pytest.raises(ValueError, match="shapes do not fit"):
        load_lora(wider, lora)
    with pytest.raises(ValueError, match=r"is \(64, 64\), the LoRA is \(32, 32\)"):
        merge_lora_state(wider.state_dict(), lora)


# ---- vc2 lora merge -----------------------------------------------------------------------------------------


def _merge_command(*argv: str) -> int:
    from vc2_core.commands.lora import add_parser

    parser = argparse.ArgumentParser(prog="vc2")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lora", "merge", *argv])
    return args.run(args)


def test_cli_merge_writes_a_checkpoint_equal_to_the_lora_model(tmp_path, capsys):
    from vc2_core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
    from vc2_core.config import preset
    from vc2_core.model import VideoCrafter
    from vc2_core.random_weights import randomize_zero_initialized

    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny")).eval()
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    base = save_checkpoint(model, tmp_path / "base.safetensors")
    inject_lora(model.unet, ["spatial", "temporal"], rank=RANK, alpha=ALPHA)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in _lora_params(model.unet):
            param.copy_(torch.randn(param.shape, generator=g) * 0.1)
    lora = save_lora(model.unet, tmp_path / "lora.safetensors", family=model.config.name,
                     groups=["spatial", "temporal"], rank=RANK, alpha=ALPHA, targets="attention")

    out = tmp_path / "merged.safetensors"
    assert _merge_command("--ckpt", str(base), "--lora", str(lora), "--out", str(out)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    merged, info = load_checkpoint(out)
    assert info.family == "tiny"
    assert (_output(merged.unet) - _output(model.unet)).abs().max() <= MERGE_TOLERANCE
    base_state, _ = read_checkpoint(base)
    merged_state, metadata = read_checkpoint(out)
    assert list(merged_state) == list(base_state) and metadata["format"] == "vc2"
    changed = {k for k in base_state if not torch.equal(base_state[k], merged_state[k])}
    assert changed == {f"model.diffusion_model.{path}.weight" for path, _ in lora_layers(model.unet)}

    wrong = save_lora(model.unet, tmp_path / "wrong.safetensors", family="vc2-512", groups=["spatial", "temporal"],
                      rank=RANK, alpha=ALPHA, targets="attention")
    with pytest.raises(ValueError, match="trained on a vc2-512 model, but .* is tiny"):
        _merge_command("--ckpt", str(base), "--lora", str(wrong), "--out", str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="is the --ckpt file"):
        _merge_command("--ckpt", str(base), "--lora", str(lora), "--out", str(base))
    with pytest.raises(ValueError, match="must end in .safetensors"):
        _merge_command("--ckpt", str(base), "--lora", str(lora), "--out", str(tmp_path / "x.bin"))
    assert not (tmp_path / "x.safetensors").exists()
