"""A T2V-Turbo UNet from VideoCrafter2's UNet weights and one of their files."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import UNetConfig
from ..messages import first_few
from ..modules import UNetModel
from .conditioning import EMBEDDING_DIM
from .files import TurboLoRA, TurboUNet, TurboWeightsError
from .lora import merge_turbo_lora

Tensor = torch.Tensor

MOTION_KEYS = ("motion_cond_proj.weight", "combine_proj.weight")


def turbo_config(config: UNetConfig, *, motion: bool = False) -> UNetConfig:
    """The UNet config with T2V-Turbo's guidance embedding (and T2V-Turbo-v2's motion condition)."""
    return dataclasses.replace(config, time_cond_proj_dim=EMBEDDING_DIM,
                               motion_cond_proj_dim=EMBEDDING_DIM if motion else None)


def check_turbo_base(config: UNetConfig, name: str) -> None:
    """ValueError unless ``config`` (of the model called ``name``) is VideoCrafter2's UNet without T2V-Turbo's
    weights yet: T2V-Turbo is distilled from VideoCrafter2, and its files go on the released UNet."""
    if config.use_relative_position:
        raise ValueError(f"{name} is a VideoCrafter1 model (relative-position temporal attention); T2V-Turbo "
                         "(VC2) and T2V-Turbo-v2 are distilled from VideoCrafter2 and fit only its UNet")
    if config.time_cond_proj_dim is not None:
        raise ValueError(f"{name} already has T2V-Turbo's weights; their files go on the released VideoCrafter2 "
                         "UNet")


def config_for(config: UNetConfig, weights: TurboLoRA | TurboUNet) -> UNetConfig:
    """The UNet config a T2V-Turbo file needs over a released ``config`` (motion condition: v2 files that have it)."""
    motion = isinstance(weights, TurboUNet) and all(key in weights.state for key in MOTION_KEYS)
    return turbo_config(config, motion=motion)


def time_cond_proj_base(config: UNetConfig, seed: int = 0) -> Tensor:
    """The base weight (model_channels, time_cond_proj_dim) their LoRA's time_cond_proj update is added to.

    T2V-Turbo (VC2) ships no value for it: their app builds the layer with PyTorch's default Linear
    init, U(-1/sqrt(in), 1/sqrt(in)), unseeded, at every launch, then merges the LoRA. This draws the
    same distribution from a CPU generator seeded ``seed``, so that a run can be repeated.
    """
    if config.time_cond_proj_dim is None:
        raise ValueError("this UNet config has no guidance embedding (time_cond_proj_dim); see turbo_config")
    bound = 1 / math.sqrt(config.time_cond_proj_dim)
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(config.model_channels, config.time_cond_proj_dim, generator=generator)
    return (2 * uniform - 1) * bound


def build_turbo_unet(base_state: dict[str, Tensor], config: UNetConfig, weights: TurboLoRA | TurboUNet, *,
                     strength: float = 1.0, time_cond_seed: int = 0) -> UNetModel:
    """A float32 CPU T2V-Turbo UNet (eval mode).

    ``base_state``: VideoCrafter2's UNet state dict (keys without ``model.diffusion_model.``) of a
    model of ``config`` (the released config, without T2V-Turbo's fields). A :class:`TurboLoRA` is
    merged into it at ``strength`` over a time_cond_proj from :func:`time_cond_proj_base`; a
    :class:`TurboUNet` replaces it (``strength`` must then be 1). Weights that do not fit raise a
    TurboWeightsError naming what is wrong, before anything is built.
    """
    if isinstance(weights, TurboUNet):
        if strength != 1.0:
            raise TurboWeightsError(f"{weights.path}: a whole T2V-Turbo-v2 UNet has no strength; got {strength}")
        unet = UNetModel(config_for(config, weights))
        _check_keys(unet, weights.state, weights.path)
        unet.load_state_dict(weights.state, strict=True)
        return unet.eval()
    unet = UNetModel(config_for(config, weights))
    state = dict(base_state, **{"time_cond_proj.weight": time_cond_proj_base(unet.config, time_cond_seed)})
    _check_keys(unet, state, "the VideoCrafter2 UNet")
    unet.load_state_dict(state, strict=True)
    merge_turbo_lora(unet, weights, strength=strength)
    return unet.eval()


def _check_keys(unet: UNetModel, state: dict[str, Tensor], source: object) -> None:
    expected = unet.state_dict()
    missing = [key for key in expected if key not in state]
    unknown = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]
    problems = [f"{len(names)} {label}: {first_few(names, 5)}" for label, names in
                (("missing keys", missing), ("unknown keys", unknown), ("wrong shapes", wrong)) if names]
    if problems:
        raise TurboWeightsError(f"{source}: does not fit this T2V-Turbo UNet: {'; '.join(problems)}")
