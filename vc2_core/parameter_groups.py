"""The spatial / temporal / conditioning split of the UNet's parameters, in one place.

Rule (the same as ``shared/reference/*_temporal_spatial_split.json``): a parameter belongs to the
innermost enclosing TemporalTransformer, TemporalConvBlock, SpatialTransformer, ResBlock,
Downsample or Upsample; otherwise to its top-level owner (time_embed, fps_embedding, the input
convolution, the output head).

- temporal: TemporalTransformers (including ``init_attn``) and TemporalConvBlocks. The temporal
  convolutions live *inside* ResBlocks (``...N.0.temopral_conv.*``), so a prefix filter on ResBlocks
  is wrong; ownership is decided by module class.
- spatial: everything that came from the image model (SD 2.1): input conv, ``time_embed``, the
  2-D part of ResBlocks, SpatialTransformers, down/up-sampling convolutions, the output head.
- conditioning: ``fps_embedding`` (VideoCrafter2 only), the frame-rate condition that the video
  model added. Spatial-only fine-tuning leaves it frozen, with the temporal modules, so the
  motion the video training learned, frame rate included, is kept.

Stages, LoRA targets, the coupling study and the ComfyUI fine-tune node all select through
:func:`classify_unet_parameters`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import torch.nn as nn

from .modules import Downsample, ResBlock, SpatialTransformer, TemporalConvBlock, TemporalTransformer, Upsample


class Group(str, Enum):
    SPATIAL = "spatial"
    TEMPORAL = "temporal"
    CONDITIONING = "conditioning"


# Module classes that own parameters, innermost wins, and the group of each.
_OWNER_GROUP = {
    TemporalTransformer: Group.TEMPORAL,
    TemporalConvBlock: Group.TEMPORAL,
    SpatialTransformer: Group.SPATIAL,
    ResBlock: Group.SPATIAL,
    Downsample: Group.SPATIAL,
    Upsample: Group.SPATIAL,
}
# Top-level owners outside those classes.
_TOP_LEVEL = {
    "time_embed": ("time_embed", Group.SPATIAL),
    "fps_embedding": ("fps_embedding", Group.CONDITIONING),
    "input_blocks": ("conv_in", Group.SPATIAL),  # only input_blocks.0.0 is not inside a block class
    "out": ("out", Group.SPATIAL),
}


@dataclass(frozen=True)
class ParameterInfo:
    name: str  # UNet state-dict key (no "model.diffusion_model." prefix)
    group: Group
    owner: str  # class of the owning module: "ResBlock", "TemporalConvBlock", "init_attn", "time_embed", ...
    numel: int


def classify_unet_parameters(unet: nn.Module) -> dict[str, ParameterInfo]:
    """Every UNet parameter, in ``named_parameters`` order, with its group and owning module class."""
    owners: dict[str, tuple[str, Group]] = {}
    for name, module in unet.named_modules():
        for cls, group in _OWNER_GROUP.items():
            if type(module) is cls:
                label = "init_attn" if name.startswith("init_attn.") else cls.__name__
                owners[name] = (label, group)
    result = {}
    for name, param in unet.named_parameters():
        owner = _innermost_owner(name, owners)
        if owner is None:
            top = name.split(".")[0]
            if top not in _TOP_LEVEL:
                raise ValueError(f"parameter {name} has no known owner; the split rule needs updating")
            owner = _TOP_LEVEL[top]
        result[name] = ParameterInfo(name, owner[1], owner[0], param.numel())
    return result


def _innermost_owner(name: str, owners: dict[str, tuple[str, Group]]) -> tuple[str, Group] | None:
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner = owners.get(".".join(parts[:cut]))
        if owner is not None:
            return owner
    return None


def select_parameters(unet: nn.Module, groups: Iterable[Group | str]) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs of the given groups, in ``named_parameters`` order."""
    wanted = {Group(g) for g in groups}
    info = classify_unet_parameters(unet)
    return [(name, p) for name, p in unet.named_parameters() if info[name].group in wanted]


def group_totals(unet: nn.Module) -> dict[str, dict]:
    """{group: {"total": params, "names": count, "by_owner": {owner: params}}}."""
    totals: dict[str, dict] = {}
    for info in classify_unet_parameters(unet).values():
        entry = totals.setdefault(info.group.value, {"total": 0, "names": 0, "by_owner": {}})
        entry["total"] += info.numel
        entry["names"] += 1
        entry["by_owner"][info.owner] = entry["by_owner"].get(info.owner, 0) + info.numel
    return totals
