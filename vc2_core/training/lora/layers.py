"""LoRA layers: :class:`LoRALinear`, injecting adapters into a UNet's Linears by group and target, merging them."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

from ...parameter_groups import Group, classify_unet_parameters
from .checks import LoRAError, check_alpha, check_finite, check_groups, check_rank, ordered

Tensor = torch.Tensor

DOWN = ".lora_down.weight"
UP = ".lora_up.weight"
_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")  # CrossAttention's projections (attn1 and attn2)
# FeedForward: GEGLU's net.0.proj (the released models) or net.0.0 (glu=False), then net.2.
_FEED_FORWARD = ("ff.net.0.proj", "ff.net.0.0", "ff.net.2")
TARGETS: dict[str, tuple[str, ...]] = {
    "attention": _ATTENTION,
    "attention+ff": _ATTENTION + _FEED_FORWARD + ("proj_in", "proj_out"),
}


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``base``) plus a trainable low-rank update.

    forward(x): ``base(x) + lora_up(lora_down(x)) * scale``, x: (..., in) -> (..., out).
    ``scale = alpha / rank * strength`` (strength 1 in training; :func:`load_lora`'s ``scale``).
    The adapters are float32 parameters created on the base's device: the input is cast to their
    dtype and the update back to x's dtype, so a half-precision base still trains its LoRA in float32.

    ``weight`` and ``bias`` are the effective linear map (:meth:`merged_weight`, the base bias) for
    code that applies a layer through its weight rather than by calling it:
    :func:`vc2_core.modules.layers.pointwise` does so for the transformers' proj_in / proj_out.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, strength: float = 1.0):
        super().__init__()
        if type(base) is not nn.Linear:
            raise TypeError(f"LoRALinear wraps an nn.Linear; got {type(base).__name__}")
        check_rank(rank)
        self.rank = rank
        self.alpha = check_alpha(alpha, rank)
        self.strength = check_finite(strength, "LoRA strength")
        self.base = base
        device = base.weight.device
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=device, dtype=torch.float32)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, device=device, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)  # the wrapped model equals the base model at step 0

    @property
    def scale(self) -> float:
        return lora_scale(self.alpha, self.rank, self.strength)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """The effective weight (out, in), differentiable in the adapters (see :meth:`merged_weight`)."""
        return self.merged_weight()

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in) -> (..., out)."""
        update = self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype))) * self.scale
        return self.base(x) + update.to(x.dtype)

    def merged_weight(self) -> Tensor:
        """``base.weight + scale * up @ down``: (out, in), computed in float32, in the base weight's dtype."""
        return with_delta(self.base.weight, self.lora_down.weight, self.lora_up.weight, self.scale)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, strength={self.strength:g}"


def inject_lora(unet: nn.Module, groups: Iterable[Group | str], *, rank: int, alpha: float | None = None,
                targets: str = "attention") -> list[tuple[str, nn.Parameter]]:
    """Wrap every target Linear of ``groups`` in a :class:`LoRALinear`; freeze every original parameter.

    Returns the adapters' (name, parameter) pairs (``{path}.lora_down.weight``, ``{path}.lora_up.weight``),
    the only parameters left trainable: give exactly these to the optimizer. ``alpha`` None = ``rank``
    (scale 1).
    """
    wanted = check_groups(groups)
    check_rank(rank)
    alpha = check_alpha(alpha, rank)
    check_no_lora(unet)
    paths = target_paths(unet, wanted, targets)
    if not paths:
        names = ", ".join(g.value for g in ordered(wanted))
        raise LoRAError(f"no {targets!r} Linear layer of this UNet belongs to the groups {names} "
                        f"(targets {', '.join(TARGETS[targets])}), so there is nothing to adapt")
    freeze(unet)
    wrap(unet, paths, rank, alpha, strength=1.0)
    return lora_parameters(unet)


def lora_layers(unet: nn.Module) -> list[tuple[str, LoRALinear]]:
    """The (path, layer) of every LoRALinear in the UNet, in module order."""
    return [(path, module) for path, module in unet.named_modules() if isinstance(module, LoRALinear)]


def lora_parameters(unet: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The adapters' (name, parameter) pairs, names as in :func:`lora_state_dict`."""
    pairs = []
    for path, module in lora_layers(unet):
        pairs += [(path + DOWN, module.lora_down.weight), (path + UP, module.lora_up.weight)]
    return pairs


def lora_state_dict(unet: nn.Module) -> dict[str, Tensor]:
    """{``{linear path}.lora_down.weight``: (rank, in), ``{linear path}.lora_up.weight``: (out, rank)}, detached.

    The linear path is the UNet state-dict path of the original Linear, so the keys do not depend
    on the wrapping. Empty when the UNet has no adapters.
    """
    return {name: param.detach() for name, param in lora_parameters(unet)}


def merge_lora(unet: nn.Module) -> None:
    """Fold every adapter into its base weight in place and put the plain Linear back.

    Afterwards ``unet.state_dict()`` has exactly the original keys again. The base parameters keep
    their ``requires_grad`` (False after :func:`inject_lora`).
    """
    layers = lora_layers(unet)
    if not layers:
        raise LoRAError("this UNet has no LoRA adapters to merge")
    with torch.no_grad():
        for path, module in layers:
            module.base.weight.copy_(module.merged_weight())
            _set_submodule(unet, path, module.base)


def lora_scale(alpha: float, rank: int, strength: float) -> float:
    """The factor of ``up @ down``: alpha / rank, times a strength."""
    return alpha / rank * strength


def with_delta(weight: Tensor, down: Tensor, up: Tensor, scale: float) -> Tensor:
    """weight (out, in) + scale * up (out, r) @ down (r, in), in at least float32, cast to weight's dtype."""
    wide = torch.promote_types(weight.dtype, torch.float32)
    delta = up.to(weight.device, wide) @ down.to(weight.device, wide)
    return (weight.to(wide) + scale * delta).to(weight.dtype)


def check_targets(targets: str) -> tuple[str, ...]:
    if targets not in TARGETS:
        raise LoRAError(f"unknown LoRA targets {targets!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[targets]


def target_paths(unet: nn.Module, groups: frozenset[Group], targets: str) -> list[str]:
    """Paths of the Linears (or LoRALinears) named by ``targets`` whose weight belongs to ``groups``."""
    suffixes = check_targets(targets)
    info = classify_unet_parameters(unet)
    paths = []
    for path, module in unet.named_modules():
        if type(module) is nn.Linear:
            weight = f"{path}.weight"
        elif isinstance(module, LoRALinear):
            weight = f"{path}.base.weight"
        else:
            continue
        if any(path == s or path.endswith("." + s) for s in suffixes) and info[weight].group in groups:
            paths.append(path)
    return paths


def wrap(unet: nn.Module, paths: list[str], rank: int, alpha: float, strength: float) -> None:
    for path in paths:
        _set_submodule(unet, path, LoRALinear(unet.get_submodule(path), rank, alpha, strength))


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def freeze(unet: nn.Module) -> None:
    for param in unet.parameters():
        param.requires_grad_(False)


def check_no_lora(unet: nn.Module) -> None:
    layers = lora_layers(unet)
    if layers:
        raise LoRAError(f"this UNet already has LoRA adapters ({len(layers)} layers, e.g. {layers[0][0]}); "
                        "merge_lora them first or start from a plain UNet")
