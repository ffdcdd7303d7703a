"""LoRA files: safetensors with the adapters only and the metadata that rebuilds them (save, read, load, merge)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ...files import write_atomically
from ...messages import first_few
from ...parameter_groups import Group
from .checks import SHOWN, LoRAError, check_alpha, check_finite, check_groups, check_rank, key_report, ordered
from .layers import (
    DOWN,
    UP,
    check_no_lora,
    check_targets,
    freeze,
    lora_layers,
    lora_scale,
    lora_state_dict,
    target_paths,
    with_delta,
    wrap,
)

Tensor = torch.Tensor

FORMAT_TAG = "vc2-lora"  # safetensors metadata "format" of LoRA files
_METADATA = ("family", "groups", "rank", "alpha", "targets")


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
    wanted = check_groups(groups)
    check_rank(rank)
    alpha = check_alpha(alpha, rank)
    _check_held_adapters(unet, wanted, rank, alpha, targets)
    state = {key: value.to("cpu").contiguous() for key, value in lora_state_dict(unet).items()}
    metadata = {"format": FORMAT_TAG, "family": family, "groups": ",".join(g.value for g in ordered(wanted)),
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
        check_rank(rank)
        alpha = check_alpha(alpha, rank)
        groups = ordered(check_groups(g for g in metadata["groups"].split(",") if g))
        check_targets(metadata["targets"])
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
    scale = check_finite(scale, "LoRA scale")
    check_no_lora(unet)
    paths = target_paths(unet, frozenset(lora.groups), lora.targets)
    expected = {path + suffix for path in paths for suffix in (DOWN, UP)}
    unknown = [key for key in lora.state if key not in expected]
    missing = [key for key in sorted(expected) if key not in lora.state]
    if unknown or missing:
        raise LoRAError(f"the LoRA ({lora.family}; {lora.targets} of {', '.join(g.value for g in lora.groups)}) "
                        f"does not fit this UNet: {key_report(unknown, missing)}")
    modules = dict(unet.named_modules())
    layers = lora.layers()
    wrong = [f"{path} is {modules[path].out_features}x{modules[path].in_features}, the LoRA is "
             f"{layers[path][1].shape[0]}x{layers[path][0].shape[1]}" for path in paths
             if (layers[path][1].shape[0], layers[path][0].shape[1])
             != (modules[path].out_features, modules[path].in_features)]
    if wrong:
        raise LoRAError(f"the LoRA's shapes do not fit this UNet: {first_few(wrong, SHOWN, '; ')}")
    freeze(unet)
    wrap(unet, paths, lora.rank, lora.alpha, strength=scale)
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
    scale = check_finite(scale, "LoRA scale")
    layers = lora.layers()
    problems = []
    for path, (down, up) in layers.items():
        weight = unet_state.get(path + ".weight")
        if weight is None:
            problems.append(f"{path}.weight is not in the state dict")
        elif tuple(weight.shape) != (up.shape[0], down.shape[1]):
            problems.append(f"{path}.weight is {tuple(weight.shape)}, the LoRA is {(up.shape[0], down.shape[1])}")
    if problems:
        raise LoRAError(f"the LoRA ({lora.family}) does not fit this state dict: {first_few(problems, SHOWN, '; ')}")
    merged = dict(unet_state)
    strength = lora_scale(lora.alpha, lora.rank, scale)
    for path, (down, up) in layers.items():
        merged[path + ".weight"] = with_delta(unet_state[path + ".weight"], down, up, strength)
    return merged


def lora_weight_deltas(lora: LoRAFile, *, scale: float = 1.0) -> dict[str, Tensor]:
    """{``{linear path}.weight``: float32 ``(alpha / rank * scale) * up @ down``}: what the LoRA adds to each
    weight, for patch systems that add deltas at load time (ComfyUI's ModelPatcher). ``W + delta`` is
    :func:`merge_lora_state`'s value, rounded once to W's dtype."""
    scale = check_finite(scale, "LoRA scale")
    strength = lora_scale(lora.alpha, lora.rank, scale)
    return {path + ".weight": strength * (up.float() @ down.float()) for path, (down, up) in lora.layers().items()}


def _check_held_adapters(unet: nn.Module, groups: frozenset[Group], rank: int, alpha: float, targets: str) -> None:
    layers = lora_layers(unet)
    if not layers:
        raise LoRAError("this UNet has no LoRA adapters to save (inject_lora first)")
    other = [f"{path} (rank {m.rank}, alpha {m.alpha:g})" for path, m in layers if (m.rank, m.alpha) != (rank, alpha)]
    if other:
        raise LoRAError(f"adapters differ from rank {rank}, alpha {alpha:g}: {first_few(other, SHOWN)}")
    held = {path for path, _ in layers}
    expected = set(target_paths(unet, groups, targets))
    if held != expected:
        names = ", ".join(g.value for g in ordered(groups))
        report = key_report(sorted(held - expected), sorted(expected - held), "adapters on", "no adapter on")
        raise LoRAError(f"the UNet's adapters are not the {targets!r} layers of {names}: {report}")


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
        raise LoRAError(f"{path}: keys that are not LoRA weights (*{DOWN} / *{UP}): {first_few(strange, SHOWN)}")
    downs = {key[: -len(DOWN)] for key in state if key.endswith(DOWN)}
    ups = {key[: -len(UP)] for key in state if key.endswith(UP)}
    unpaired = sorted(downs ^ ups)
    if unpaired:
        raise LoRAError(f"{path}: layers with only one of lora_down / lora_up: {first_few(unpaired, SHOWN)}")
    problems = []
    for layer in sorted(downs):
        down, up = state[layer + DOWN], state[layer + UP]
        if not (down.is_floating_point() and up.is_floating_point()):
            problems.append(f"{layer}: not floating point ({down.dtype}, {up.dtype})")
        elif down.ndim != 2 or up.ndim != 2 or down.shape[0] != rank or up.shape[1] != rank:
            problems.append(f"{layer}: down {tuple(down.shape)} and up {tuple(up.shape)} are not "
                            f"(rank, in) and (out, rank) with rank {rank}")
    if problems:
        raise LoRAError(f"{path}: inconsistent LoRA tensors: {first_few(problems, SHOWN, '; ')}")
