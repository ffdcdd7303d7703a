"""Reading T2V-Turbo's weight files safely: tensors only (``torch.load(weights_only=True)``), nothing else runs."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..messages import first_few

Tensor = torch.Tensor


class TurboWeightsError(ValueError):
    """A file that is not a usable T2V-Turbo weight file, or weights that do not fit a UNet."""


@dataclass(frozen=True)
class TurboLoRA:
    """T2V-Turbo (VC2)'s ``unet_lora.pt``: ``[up_0, down_0, up_1, down_1, ...]``, one pair per adapted layer.

    The layers are every Linear, Conv2d and Conv3d of their UNet in module order (no names are
    stored; :func:`vc2_core.t2v_turbo.lora_targets`). up: (out, r[, 1, ...]), down: (r, in[, kernel]).
    """

    tensors: list[Tensor]
    path: Path

    @property
    def num_layers(self) -> int:
        return len(self.tensors) // 2

    def pair(self, i: int) -> tuple[Tensor, Tensor]:
        """(up, down) of layer i."""
        return self.tensors[2 * i], self.tensors[2 * i + 1]


@dataclass(frozen=True)
class TurboUNet:
    """T2V-Turbo-v2's ``unet_mg.pt`` / ``unet_no_mg.pt``: a whole UNet state dict (official keys, no prefix)."""

    state: dict[str, Tensor]
    path: Path


def read_turbo_weights(path: str | Path) -> TurboLoRA | TurboUNet:
    """Read a T2V-Turbo file: their LoRA (a list of tensors) or a T2V-Turbo-v2 UNet (a dict of tensors).

    Only tensors are unpickled (``weights_only=True``): a file holding other Python objects is refused
    with a TurboWeightsError, and so is anything that is not one of the two layouts.
    """
    path = Path(path)
    if not path.is_file():
        raise TurboWeightsError(f"{path}: no such T2V-Turbo weight file")
    if path.suffix == ".safetensors":
        raise TurboWeightsError(f"{path}: a safetensors file; T2V-Turbo's files are torch .pt files (a vc2 LoRA "
                                "is merged into a checkpoint with vc2 lora merge)")
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise TurboWeightsError(f"{path}: refused: not a plain file of tensors (torch.load with weights_only=True "
                                f"rejects it: {reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, SafetensorError) as error:
        raise TurboWeightsError(f"{path}: not a torch file, or a truncated one ({type(error).__name__}: "
                                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})") from None
    if isinstance(contents, (list, tuple)):
        return TurboLoRA(_checked_list(contents, path), path)
    if isinstance(contents, dict):
        return TurboUNet(_checked_state(contents, path), path)
    raise TurboWeightsError(f"{path}: holds a {type(contents).__name__}; a T2V-Turbo file is a list of tensors "
                            "(their unet_lora.pt) or a UNet state dict (T2V-Turbo-v2's unet_mg.pt)")


def _checked_list(contents: list | tuple, path: Path) -> list[Tensor]:
    if not contents:
        raise TurboWeightsError(f"{path}: the LoRA list is empty")
    strange = [f"item {i} ({type(item).__name__})" for i, item in enumerate(contents)
               if not (isinstance(item, Tensor) and item.is_floating_point())]
    if strange:
        raise TurboWeightsError(f"{path}: a T2V-Turbo LoRA is a list of floating-point tensors; not: "
                                f"{first_few(strange, 5)}")
    if len(contents) % 2:
        raise TurboWeightsError(f"{path}: a T2V-Turbo LoRA holds (up, down) pairs; it has an odd number of "
                                f"tensors ({len(contents)})")
    return [item.detach() for item in contents]


def _checked_state(contents: dict, path: Path) -> dict[str, Tensor]:
    strange = [repr(key) for key, value in contents.items() if not (isinstance(key, str) and isinstance(value, Tensor))]
    if strange or not contents:
        what = f"entries that are not name -> tensor: {first_few(strange, 5)}" if strange else "no entries"
        raise TurboWeightsError(f"{path}: not a UNet state dict ({what})")
    return {key: value.detach() for key, value in contents.items()}
