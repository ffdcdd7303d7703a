"""The spatial / temporal / conditioning split equals the reference split files name for name."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_unet_config

from vc2_core.config import preset
from vc2_core.modules import UNetModel
from vc2_core.parameter_groups import Group, classify_unet_parameters, group_totals, select_parameters

# owner labels of the split files -> ours
SPLIT_OWNERS = {"conv_in (input_blocks.0.0 Conv2d)": "conv_in", "TemporalTransformer (init_attn)": "init_attn"}


@pytest.mark.parametrize("family, prefix", [("vc2-512", "vc2"), ("vc1-512", "vc1")])
def test_split_equals_reference(reference_dir, family, prefix):
    split = json.loads((reference_dir / f"{prefix}_unet_temporal_spatial_split.json").read_text())
    with torch.device("meta"):
        unet = UNetModel(preset(family).unet)
    info = classify_unet_parameters(unet)
    for group_name, names in split["param_names"].items():
        group = Group.CONDITIONING if group_name.startswith("fps_embedding") else Group(group_name)
        assert [n for n, i in info.items() if i.group == group] == names
    totals = group_totals(unet)
    for group_name, entry in split["groups"].items():
        ours = totals["conditioning" if group_name.startswith("fps_embedding") else group_name]
        assert ours["total"] == entry["total"]
        assert ours["by_owner"] == {SPLIT_OWNERS.get(k, k): v for k, v in entry["by_class"].items()}
    assert sum(i.numel for i in info.values()) == split["total_unet_params"]


def test_temporal_convs_inside_resblocks_are_temporal():
    unet = UNetModel(tiny_unet_config())
    info = classify_unet_parameters(unet)
    conv = "input_blocks.1.0.temopral_conv.conv4.3.weight"
    assert info[conv].group == Group.TEMPORAL and info[conv].owner == "TemporalConvBlock"
    assert info["input_blocks.1.0.in_layers.2.weight"].group == Group.SPATIAL
    assert info["init_attn.0.proj_in.weight"].owner == "init_attn"
    assert info["fps_embedding.0.weight"].group == Group.CONDITIONING


def test_select_parameters_partitions_the_unet():
    unet = UNetModel(tiny_unet_config())
    groups = [select_parameters(unet, [g]) for g in Group]
    names = [n for chosen in groups for n, _ in chosen]
    assert sorted(names) == sorted(n for n, _ in unet.named_parameters()) and len(set(names)) == len(names)
    spatial = dict(select_parameters(unet, ["spatial"]))
    assert all(".temopral_conv." not in n and not n.startswith("init_attn") for n in spatial)
