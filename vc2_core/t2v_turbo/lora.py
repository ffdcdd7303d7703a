"""T2V-Turbo's LoRA on this UNet: which modules its tensors belong to, what it adds to each weight, merging it.

Their injector (``utils/lora.py`` of Ji4chenLi/t2v-turbo, searched under the whole ``UNetModel``)
wraps every ``nn.Linear``, ``nn.Conv2d`` and ``nn.Conv3d`` in module order, and their file lists
(up, down) per wrapped module in that order, without names. This UNet's module tree is the
official one, in the official order, so the i-th pair belongs to the i-th such module here (the
parity golden checks the list of paths against theirs). Their merge (``collapse_lora``) adds
``strength * up.flatten(1) @ down.flatten(1)``, reshaped to the weight, to each weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..messages import first_few
from ..training.lora.checks import check_finite
from ..training.lora.layers import check_no_lora, with_delta
from .files import TurboLoRA, TurboWeightsError

Tensor = torch.Tensor

TARGET_TYPES = (nn.Linear, nn.Conv2d, nn.Conv3d)  # their search_class; subclasses are skipped, as theirs skips them
SHOWN = 5  # layers named in an error message


def lora_targets(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every layer their LoRA adapts, in their file's order."""
    return [(path, module) for path, module in unet.named_modules() if type(module) in TARGET_TYPES]


def turbo_lora_deltas(unet: nn.Module, lora: TurboLoRA, *, strength: float = 1.0) -> dict[str, Tensor]:
    """{``{path}.weight``: float32 ``strength * up @ down`` shaped like the weight}, after checking the fit.

    A LoRA that does not fit (another number of layers, or a pair whose shapes do not match its
    module's weight) raises a TurboWeightsError naming the layers; nothing is computed then.
    """
    strength = check_finite(strength, "LoRA strength")
    pairs = _fitted_pairs(unet, lora)
    return {path + ".weight": strength * (up.flatten(1).float() @ down.flatten(1).float()).reshape(weight.shape)
            for path, weight, up, down in pairs}


def merge_turbo_lora(unet: nn.Module, lora: TurboLoRA, *, strength: float = 1.0) -> None:
    """Add the LoRA to the UNet's weights in place (their ``collapse_lora``; ``strength`` 1 = as released).

    Every pair is checked against its module first: on a LoRA that does not fit, the UNet is left as
    it was. ``W + strength * up @ down`` is computed in float32 and rounded once to W's dtype.
    """
    strength = check_finite(strength, "LoRA strength")
    check_no_lora(unet)
    pairs = _fitted_pairs(unet, lora)
    with torch.no_grad():
        for _, weight, up, down in pairs:
            merged = with_delta(weight.flatten(1), down.flatten(1), up.flatten(1), strength)  # (out, in * kernel)
            weight.copy_(merged.reshape(weight.shape))


def _fitted_pairs(unet: nn.Module, lora: TurboLoRA) -> list[tuple[str, Tensor, Tensor, Tensor]]:
    """(path, weight, up, down) per adapted layer, or a TurboWeightsError saying what does not fit."""
    targets = lora_targets(unet)
    if lora.num_layers != len(targets):
        hint = ""
        if lora.num_layers == len(targets) + 1 and not hasattr(unet, "time_cond_proj"):
            hint = ("; T2V-Turbo's LoRA also adapts the guidance embedding time_cond_proj, which this UNet lacks "
                    "(build it with vc2_core.t2v_turbo.turbo_config)")
        raise TurboWeightsError(f"{lora.path}: the LoRA adapts {lora.num_layers} layers, this UNet has "
                                f"{len(targets)} Linear/Conv2d/Conv3d layers{hint}; nothing was loaded")
    wrong = []
    for i, (path, module) in enumerate(targets):
        up, down = lora.pair(i)
        problem = _pair_problem(module.weight.shape, up.shape, down.shape)
        if problem:
            wrong.append(f"layer {i} {path} {tuple(module.weight.shape)}: {problem}")
    if wrong:
        raise TurboWeightsError(f"{lora.path}: the LoRA does not fit this UNet ({len(wrong)} layers): "
                                f"{first_few(wrong, SHOWN, '; ')}; nothing was loaded")
    return [(path, module.weight, *lora.pair(i)) for i, (path, module) in enumerate(targets)]


def _pair_problem(weight: torch.Size, up: torch.Size, down: torch.Size) -> str | None:
    """Why (up, down) cannot update a weight (out, in, *kernel); None when it can."""
    if len(up) != len(weight) or len(down) != len(weight):
        return f"up {tuple(up)} and down {tuple(down)} are not {len(weight)}-D like the weight"
    if up[0] != weight[0] or tuple(down[1:]) != tuple(weight[1:]):
        return f"up {tuple(up)} @ down {tuple(down)} is not the weight's shape"
    if up[1] != down[0] or any(size != 1 for size in up[2:]):
        return f"up {tuple(up)} and down {tuple(down)} are not (out, r, 1...) and (r, in, kernel...)"
    return None
