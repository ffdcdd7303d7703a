"""Training stages: which UNet parameter groups train, on which data.

The paper's recipe is two stages of one loop (VideoCrafter2, arXiv 2401.09047, sec. 3-4):

- ``full`` (stage 1): every UNet parameter, on low-quality videos jointly with images.
- ``spa-dir`` (stage 2, "F-Spa-DIR" on a fully trained base): only the spatial modules, directly,
  on high-quality images. Temporal modules and the fps condition stay bit-identical.

and the variants the paper compares against:

- ``partial`` ("P-base", AnimateDiff-style): temporal modules (and the fps condition the video
  model adds) on videos, the spatial modules frozen at the image model's weights.
- ``temp-dir`` ("F-Temp-DIR") and ``spa-temp-dir`` ("F-Spa&Temp-DIR"): direct fine-tuning of the
  temporal modules, or of both, on images.
- ``spa-lora``, ``temp-lora``, ``spa-temp-lora`` ("-LORA"): low-rank adapters on the attention
  layers of those groups (:mod:`vc2_core.training.lora`), the base weights frozen.

"F-" / "P-" in the paper's names say which base (fully or partially trained) a fine-tune starts
from; that is the checkpoint given to the run, not part of the stage, so ``get_stage`` accepts
both spellings ("F-Spa-DIR", "spa-dir"). The groups are those of
:mod:`vc2_core.parameter_groups`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.nn as nn

from ..parameter_groups import Group, select_parameters
from .lora import inject_lora

if TYPE_CHECKING:
    from .config import StageSection


class DataKind(enum.StrEnum):
    """A kind of training data; the value is the config section and the latent cache's folder."""

    VIDEOS = "videos"
    IMAGES = "images"


@dataclass(frozen=True)
class Stage:
    name: str
    train: frozenset[Group]  # the parameter groups that receive updates
    data: frozenset[DataKind]  # the kinds of data it trains on
    summary: str
    lora: bool = False  # train low-rank adapters on the groups' attention layers instead of the weights

    def kinds(self) -> tuple[DataKind, ...]:
        """The stage's data kinds in a fixed order (videos, then images)."""
        return tuple(kind for kind in DataKind if kind in self.data)


def _stage(name: str, groups: tuple[Group, ...], data: tuple[DataKind, ...], summary: str,
           lora: bool = False) -> Stage:
    return Stage(name, frozenset(groups), frozenset(data), summary, lora)


_ALL = (Group.SPATIAL, Group.TEMPORAL, Group.CONDITIONING)
_VIDEOS, _IMAGES = (DataKind.VIDEOS,), (DataKind.IMAGES,)
STAGES = {s.name: s for s in (
    _stage("full", _ALL, _VIDEOS + _IMAGES, "stage 1: all UNet parameters on videos jointly with images"),
    _stage("partial", (Group.TEMPORAL, Group.CONDITIONING), _VIDEOS,
           "P-base: temporal modules and the fps condition on videos; spatial frozen"),
    _stage("spa-dir", (Group.SPATIAL,), _IMAGES,
           "stage 2 (F-Spa-DIR): spatial modules only, on high-quality images; temporal and fps condition frozen"),
    _stage("temp-dir", (Group.TEMPORAL,), _IMAGES, "F-Temp-DIR: temporal modules only, on images"),
    _stage("spa-temp-dir", (Group.SPATIAL, Group.TEMPORAL), _IMAGES,
           "F-Spa&Temp-DIR: spatial and temporal modules, on images; fps condition frozen"),
    _stage("spa-lora", (Group.SPATIAL,), _IMAGES, "F-Spa-LORA / P-Spa-LORA: LoRA on the spatial modules, on images",
           lora=True),
    _stage("temp-lora", (Group.TEMPORAL,), _IMAGES,
           "F-Temp-LORA / P-Temp-LORA: LoRA on the temporal modules, on images", lora=True),
    _stage("spa-temp-lora", (Group.SPATIAL, Group.TEMPORAL), _IMAGES,
           "F-Spa&Temp-LORA: LoRA on the spatial and temporal modules, on images", lora=True),
)}


def get_stage(name: str) -> Stage:
    """A stage by its name or the paper's ("F-Spa-DIR", "F-Spa&Temp-DIR", "P-base", ...)."""
    key = name.strip().lower().replace("&", "-").replace("_", "-")
    key = {"p-base": "partial", "f-base": "full"}.get(key, key)
    if key.startswith(("f-", "p-")) and key[2:] in STAGES:
        key = key[2:]
    if key not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)} "
                         "(or the paper's names: F-Spa-DIR, F-Temp-DIR, F-Spa&Temp-DIR, F-Spa-LORA, P-base, ...)")
    return STAGES[key]


def apply_stage(unet: nn.Module, stage: Stage) -> list[tuple[str, nn.Parameter]]:
    """Set ``requires_grad`` on every UNet parameter by its group; return the trainable (name, param)s.

    Give only the returned parameters to the optimizer: a frozen parameter then has no gradient,
    no optimizer state and no weight decay, so it stays bit-identical. LoRA stages are set up by
    :func:`vc2_core.training.lora.inject_lora` instead.
    """
    if stage.lora:
        raise ValueError(f"stage {stage.name!r} trains LoRA adapters: use vc2_core.training.lora.inject_lora")
    trainable = select_parameters(unet, stage.train)
    chosen = {id(param) for _, param in trainable}
    for param in unet.parameters():
        param.requires_grad_(id(param) in chosen)
    if not trainable:
        groups_named = ", ".join(sorted(g.value for g in stage.train))
        raise ValueError(f"stage {stage.name!r} trains nothing in this UNet (groups: {groups_named})")
    return trainable


def set_up_stage(unet: nn.Module, stage: Stage, section: StageSection) -> list[tuple[str, nn.Parameter]]:
    """Freeze by stage, or inject the section's LoRA adapters; the (name, parameter)s the optimizer gets."""
    if stage.lora:
        return inject_lora(unet, stage.train, rank=section.lora_rank, alpha=section.alpha(),
                           targets=section.lora_targets)
    return apply_stage(unet, stage)
