"""LoRA: low-rank adapters on the UNet's linear layers, chosen by parameter group.

VideoCrafter2 (arXiv 2401.09047, sec. 4) compares LoRA perturbations of the spatial modules,
the temporal modules or both (F-Spa-LORA, F-Temp-LORA, F-Spa&Temp-LORA, P-...). A target
``nn.Linear`` (weight W, (out, in)) is replaced by a :class:`LoRALinear` computing

    y = W x + b + (alpha / rank) * up(down(x)),   down: (rank, in), up: (out, rank), up = 0 at init

so the model is unchanged before the first step and only ``down`` / ``up`` train. Which layers
get adapters is decided in two steps:

- the group of the layer's weight, by :func:`vc2_core.parameter_groups.classify_unet_parameters`
  (owning module class, never a name pattern): spatial, temporal, conditioning;
- the target set (:data:`TARGETS`), by attribute name inside those modules. The paper does not
  state its targets or rank; ``"attention"`` (q, k, v and output projections of every attention)
  is the usual Stable Diffusion LoRA placement and the default, ``"attention+ff"`` adds the
  feed-forward layers and the transformers' proj_in / proj_out when those are Linear
  (``use_linear``; 1x1 convolutions are never wrapped).

A LoRA file (:func:`save_lora`) is safetensors with the adapters only, keyed by the UNet
state-dict path of the original Linear (``input_blocks.1.1.transformer_blocks.0.attn1.to_q``
+ ``.lora_down.weight`` / ``.lora_up.weight``) and metadata ``format = "vc2-lora"``, family,
groups, rank, alpha and targets, which is everything :func:`load_lora` needs to re-inject it.
:func:`merge_lora` folds the adapters into the weights (the UNet gets its official keys back)
and :func:`merge_lora_state` does the same on a plain state dict, for checkpoint files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..files import write_atomically
from ..parameter_groups import Group, classify_unet_parameters

Tensor = torch.Tensor

FORMAT_TAG = "vc2-lora"  # safetensors metadata "format" of LoRA files
DOWN = ".lora_down.weight"
UP = ".lora_up.weight"
_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")  # CrossAttention's projections (attn1 and attn2)
# FeedForward: GEGLU's net.0.proj (the released models) or net.0.0 (glu=False), then net.2.
_FEED_FORWARD = ("ff.net.0.proj", "ff.net.0.0", "ff.net.2")
TARGETS: dict[str, tuple[str, ...]] = {
    "attention": _ATTENTION,
    "attention+ff": _ATTENTION + _FEED_FORWARD + ("proj_in", "proj_out"),
}
_METADATA = ("family", "groups", "rank", "alpha", "targets")
_SHOWN = 5  # names listed in an error message


class LoRAError(ValueError):
    """A file that is not a usable vc2 LoRA, or a LoRA that does not fit a UNet."""


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
        _check_rank(rank)
        self.rank = rank
        self.alpha = _check_alpha(alpha, rank)
        self.strength = _check_finite(strength, "LoRA strength")
        self.base = base
        device = base.weight.device
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=device, dtype=torch.float32)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, device=device, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)  # the wrapped model equals the base model at step 0

    @property
    def scale(self) -> float:
        return _scale(self.alpha, self.rank, self.strength)

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
        return _merged(self.base.weight, self.lora_down.weight, self.lora_up.weight, self.scale)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, strength={self.strength:g}"


@dataclass(frozen=True)
class LoRAFile:
    """The contents of a LoRA file (:func:`read_lora`). ``state`` keys: ``{linear path}.lora_down.weight`` /
    ``.lora_up.weight``, down (rank, in), up (out, rank)."""

    state: dict[str, Tensor]
    family: str
    groups: tuple[Group, ...]
    rank: int
    alpha: float
    targets: str

    def layers(self) -> dict[str, tuple[Tensor, Tensor]]:
        """{linear path: (down, up)}, in file order."""
        return {key[: -len(DOWN)]: (value, self.state[key[: -len(DOWN)] + UP])
                for key, value in self.state.items() if key.endswith(DOWN)}


# ---- injecting ----------------------------------------------------------------------------------------------


def inject_lora(unet: nn.Module, groups: Iterable[Group | str], *, rank: int, alpha: float | None = None,
                targets: str = "attention") -> list[tuple[str, nn.Parameter]]:
    """Wrap every target Linear of ``groups`` in a :class:`LoRALinear`; freeze every original parameter.

    Returns the adapters' (name, parameter) pairs (``{path}.lora_down.weight``, ``{path}.lora_up.weight``),
    the only parameters left trainable: give exactly these to the optimizer. ``alpha`` None = ``rank``
    (scale 1).
    """
    wanted = _check_groups(groups)
    _check_rank(rank)
    alpha = _check_alpha(alpha, rank)
    _check_no_lora(unet)
    paths = _target_paths(unet, wanted, targets)
    if not paths:
        names = ", ".join(g.value for g in _ordered(wanted))
        raise LoRAError(f"no {targets!r} Linear layer of this UNet belongs to the groups {names} "
                        f"(targets {', '.join(TARGETS[targets])}), so there is nothing to adapt")
    _freeze(unet)
    _wrap(unet, paths, rank, alpha, strength=1.0)
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


# ---- files --------------------------------------------------------------------------------------------------


def save_lora(unet: nn.Module, path: str | Path, *, family: str, groups: Iterable[Group | str], rank: int,
              alpha: float, targets: str) -> Path:
    """Write the UNet's adapters to a ``.safetensors`` file atomically (temporary file, renamed at the end).

    The metadata (format ``vc2-lora``, family, groups, rank, alpha, targets) must describe the adapters
    the UNet holds: they are checked against it, so that :func:`load_lora` can rebuild the same layers.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoRAError(f"{path}: LoRA files are written as .safetensors")
    if not path.parent.is_dir():
        raise LoRAError(f"{path.parent}: the output directory does not exist")
    if not family:
        raise LoRAError("save_lora needs the model family (the checkpoint's config name, e.g. 'vc2-512')")
    wanted = _check_groups(groups)
    _check_rank(rank)
    alpha = _check_alpha(alpha, rank)
    _check_held_adapters(unet, wanted, rank, alpha, targets)
    state = {key: value.to("cpu").contiguous() for key, value in lora_state_dict(unet).items()}
    metadata = {"format": FORMAT_TAG, "family": family, "groups": ",".join(g.value for g in _ordered(wanted)),
                "rank": str(rank), "alpha": repr(alpha), "targets": targets}
    write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))
    return path


def read_lora(path: str | Path) -> LoRAFile:
    """Read and check a LoRA file written by :func:`save_lora` (metadata and tensor shapes)."""
    path = Path(path)
    if not path.is_file():
        raise LoRAError(f"{path}: no such LoRA file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            _check_format(metadata, path)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise LoRAError(f"{path}: not a safetensors file, or a truncated one ({error})") from None
    missing = [key for key in _METADATA if key not in metadata]
    if missing:
        raise LoRAError(f"{path}: the LoRA metadata lacks {', '.join(missing)}")
    rank = _parse(metadata["rank"], int, "rank", path)
    alpha = _parse(metadata["alpha"], float, "alpha", path)
    try:
        _check_rank(rank)
        alpha = _check_alpha(alpha, rank)
        groups = _ordered(_check_groups(g for g in metadata["groups"].split(",") if g))
        _check_targets(metadata["targets"])
    except LoRAError as error:
        raise LoRAError(f"{path}: {error}") from None
    _check_tensors(state, rank, path)
    return LoRAFile(state, metadata["family"], groups, rank, alpha, metadata["targets"])


def load_lora(unet: nn.Module, lora: LoRAFile, *, scale: float = 1.0) -> None:
    """Inject the adapters a LoRA file describes and load its tensors (strictly).

    The layers are chosen as :func:`inject_lora` chooses them from the file's groups and targets;
    keys the UNet has no layer for, or layers the file has no tensors for, are a LoRAError naming
    them, raised before the UNet is changed. ``scale`` multiplies the LoRA's strength (0 = off,
    1 = as trained). Every original parameter is frozen, the adapters are trainable.
    """
    scale = _check_finite(scale, "LoRA scale")
    _check_no_lora(unet)
    paths = _target_paths(unet, frozenset(lora.groups), lora.targets)
    expected = {path + suffix for path in paths for suffix in (DOWN, UP)}
    unknown = [key for key in lora.state if key not in expected]
    missing = [key for key in sorted(expected) if key not in lora.state]
    if unknown or missing:
        raise LoRAError(f"the LoRA ({lora.family}; {lora.targets} of {', '.join(g.value for g in lora.groups)}) "
                        f"does not fit this UNet: {_key_report(unknown, missing)}")
    modules = dict(unet.named_modules())
    layers = lora.layers()
    wrong = [f"{path} is {modules[path].out_features}x{modules[path].in_features}, the LoRA is "
             f"{layers[path][1].shape[0]}x{layers[path][0].shape[1]}" for path in paths
             if (layers[path][1].shape[0], layers[path][0].shape[1])
             != (modules[path].out_features, modules[path].in_features)]
    if wrong:
        raise LoRAError(f"the LoRA's shapes do not fit this UNet: {'; '.join(wrong[:_SHOWN])}")
    _freeze(unet)
    _wrap(unet, paths, lora.rank, lora.alpha, strength=scale)
    with torch.no_grad():
        for path, module in lora_layers(unet):
            down, up = layers[path]
            module.lora_down.weight.copy_(down)
            module.lora_up.weight.copy_(up)


def merge_lora_state(unet_state: dict[str, Tensor], lora: LoRAFile, *, scale: float = 1.0) -> dict[str, Tensor]:
    """A copy of a UNet state dict (keys without ``model.diffusion_model.``) with the LoRA folded in.

    ``W + (alpha / rank * scale) * up @ down`` in float32, cast back to W's dtype: the same values as
    :func:`merge_lora` on the module. Unchanged tensors are shared with ``unet_state``. Every adapted
    weight must be in the state dict with the LoRA's shape.
    """
    scale = _check_finite(scale, "LoRA scale")
    layers = lora.layers()
    problems = []
    for path, (down, up) in layers.items():
        weight = unet_state.get(path + ".weight")
        if weight is None:
            problems.append(f"{path}.weight is not in the state dict")
        elif tuple(weight.shape) != (up.shape[0], down.shape[1]):
            problems.append(f"{path}.weight is {tuple(weight.shape)}, the LoRA is {(up.shape[0], down.shape[1])}")
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise LoRAError(f"the LoRA ({lora.family}) does not fit this state dict: {'; '.join(problems[:_SHOWN])}{more}")
    merged = dict(unet_state)
    strength = _scale(lora.alpha, lora.rank, scale)
    for path, (down, up) in layers.items():
        merged[path + ".weight"] = _merged(unet_state[path + ".weight"], down, up, strength)
    return merged


def lora_weight_deltas(lora: LoRAFile, *, scale: float = 1.0) -> dict[str, Tensor]:
    """{``{linear path}.weight``: float32 ``(alpha / rank * scale) * up @ down``}: what the LoRA adds to each
    weight, for patch systems that add deltas at load time (ComfyUI's ModelPatcher). ``W + delta`` is
    :func:`merge_lora_state`'s value, rounded once to W's dtype."""
    scale = _check_finite(scale, "LoRA scale")
    strength = _scale(lora.alpha, lora.rank, scale)
    return {path + ".weight": strength * (up.float() @ down.float()) for path, (down, up) in lora.layers().items()}


# ---- helpers ------------------------------------------------------------------------------------------------


def _scale(alpha: float, rank: int, strength: float) -> float:
    return alpha / rank * strength


def _merged(weight: Tensor, down: Tensor, up: Tensor, scale: float) -> Tensor:
    """weight (out, in) + scale * up (out, r) @ down (r, in), in at least float32, cast to weight's dtype."""
    wide = torch.promote_types(weight.dtype, torch.float32)
    delta = up.to(weight.device, wide) @ down.to(weight.device, wide)
    return (weight.to(wide) + scale * delta).to(weight.dtype)


def _target_paths(unet: nn.Module, groups: frozenset[Group], targets: str) -> list[str]:
    """Paths of the Linears (or LoRALinears) named by ``targets`` whose weight belongs to ``groups``."""
    suffixes = _check_targets(targets)
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


def _wrap(unet: nn.Module, paths: list[str], rank: int, alpha: float, strength: float) -> None:
    for path in paths:
        _set_submodule(unet, path, LoRALinear(unet.get_submodule(path), rank, alpha, strength))


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _freeze(unet: nn.Module) -> None:
    for param in unet.parameters():
        param.requires_grad_(False)


def _check_held_adapters(unet: nn.Module, groups: frozenset[Group], rank: int, alpha: float, targets: str) -> None:
    layers = lora_layers(unet)
    if not layers:
        raise LoRAError("this UNet has no LoRA adapters to save (inject_lora first)")
    other = [f"{path} (rank {m.rank}, alpha {m.alpha:g})" for path, m in layers if (m.rank, m.alpha) != (rank, alpha)]
    if other:
        raise LoRAError(f"adapters differ from rank {rank}, alpha {alpha:g}: {', '.join(other[:_SHOWN])}")
    held = {path for path, _ in layers}
    expected = set(_target_paths(unet, groups, targets))
    if held != expected:
        names = ", ".join(g.value for g in _ordered(groups))
        report = _key_report(sorted(held - expected), sorted(expected - held), "adapters on", "no adapter on")
        raise LoRAError(f"the UNet's adapters are not the {targets!r} layers of {names}: {report}")


def _check_no_lora(unet: nn.Module) -> None:
    layers = lora_layers(unet)
    if layers:
        raise LoRAError(f"this UNet already has LoRA adapters ({len(layers)} layers, e.g. {layers[0][0]}); "
                        "merge_lora them first or start from a plain UNet")


def _check_groups(groups: Iterable[Group | str]) -> frozenset[Group]:
    if isinstance(groups, (str, Group)):
        groups = [groups]
    chosen = set()
    for group in groups:
        try:
            chosen.add(Group(group))
        except ValueError:
            raise LoRAError(f"unknown parameter group {group!r}; choose from {', '.join(g.value for g in Group)}") \
                from None
    if not chosen:
        raise LoRAError(f"no parameter groups given; choose from {', '.join(g.value for g in Group)}")
    return frozenset(chosen)


def _ordered(groups: frozenset[Group]) -> tuple[Group, ...]:
    return tuple(g for g in Group if g in groups)


def _check_targets(targets: str) -> tuple[str, ...]:
    if targets not in TARGETS:
        raise LoRAError(f"unknown LoRA targets {targets!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[targets]


def _check_rank(rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LoRAError(f"LoRA rank must be a whole number >= 1; got {rank!r}")


def _check_alpha(alpha: float | None, rank: int) -> float:
    if alpha is None:
        return float(rank)
    value = _check_finite(alpha, "LoRA alpha")
    if value <= 0:
        raise LoRAError(f"LoRA alpha must be > 0; got {alpha!r}")
    return value


def _check_finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LoRAError(f"{what} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise LoRAError(f"{what} must be finite; got {value!r}")
    return number


def _check_format(metadata: dict[str, str], path: Path) -> None:
    found = metadata.get("format")
    if found == FORMAT_TAG:
        return
    if found == "vc2":
        raise LoRAError(f"{path}: is a vc2 model checkpoint, not a LoRA file (metadata format 'vc2')")
    what = "no metadata 'format'" if found is None else f"metadata format {found!r}"
    raise LoRAError(f"{path}: not a vc2 LoRA file ({what}; expected {FORMAT_TAG!r}, as written by save_lora)")


def _parse(text: str, kind: type, what: str, path: Path) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise LoRAError(f"{path}: the LoRA metadata {what} {text!r} is not a {kind.__name__}") from None


def _check_tensors(state: dict[str, Tensor], rank: int, path: Path) -> None:
    """Every key a down or up weight, in complete pairs, 2-D floating tensors of rank ``rank``."""
    if not state:
        raise LoRAError(f"{path}: the LoRA file holds no tensors")
    strange = [key for key in state if not key.endswith((DOWN, UP))]
    if strange:
        raise LoRAError(f"{path}: keys that are not LoRA weights (*{DOWN} / *{UP}): {', '.join(strange[:_SHOWN])}")
    downs = {key[: -len(DOWN)] for key in state if key.endswith(DOWN)}
    ups = {key[: -len(UP)] for key in state if key.endswith(UP)}
    unpaired = sorted(downs ^ ups)
    if unpaired:
        raise LoRAError(f"{path}: layers with only one of lora_down / lora_up: {', '.join(unpaired[:_SHOWN])}")
    problems = []
    for layer in sorted(downs):
        down, up = state[layer + DOWN], state[layer + UP]
        if not (down.is_floating_point() and up.is_floating_point()):
            problems.append(f"{layer}: not floating point ({down.dtype}, {up.dtype})")
        elif down.ndim != 2 or up.ndim != 2 or down.shape[0] != rank or up.shape[1] != rank:
            problems.append(f"{layer}: down {tuple(down.shape)} and up {tuple(up.shape)} are not "
                            f"(rank, in) and (out, rank) with rank {rank}")
    if problems:
        raise LoRAError(f"{path}: inconsistent LoRA tensors: {'; '.join(problems[:_SHOWN])}")


def _key_report(unknown: list[str], missing: list[str], unknown_label: str = "unknown keys",
                missing_label: str = "missing keys") -> str:
    parts = []
    for label, names in ((unknown_label, unknown), (missing_label, missing)):
        if names:
            more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label}: {', '.join(names[:_SHOWN])}{more}")
    return "; ".join(parts)


