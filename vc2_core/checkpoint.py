"""Read and write VideoCrafter checkpoint files, and load them into a model.

Reading is safe: pickled files (``.ckpt``) are opened with ``torch.load(weights_only=True)``
only, so a pickle that would import or run code is refused before anything in it runs.
Safetensors is the format written, in the official key layout, so a model trained here loads
in any VideoCrafter-compatible tool. The schedule buffers are always re-derived from the config
(see :mod:`vc2_core.detect`), never trusted from the file.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ModelConfig, ScheduleConfig, TextEncoderConfig, UNetConfig, VAEConfig
from .detect import CheckpointError, CheckpointInfo, RecognisedCheckpoint, recognise
from .files import write_atomically
from .keys import under_prefix
from .model import VideoCrafter
from .modules import UNetModel
from .precision import inference_dtypes
from .text import TextEncoder
from .vae import VideoVAE

Tensor = torch.Tensor
FORMAT_TAG = "vc2"  # safetensors metadata "format" of the files this project writes

__all__ = ["CheckpointError", "CheckpointInfo", "RecognisedCheckpoint", "build_model", "inspect_checkpoint",
           "load_checkpoint", "open_checkpoint", "read_checkpoint", "read_provenance", "save_checkpoint",
           "write_checkpoint"]


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state dict, safetensors metadata) of a ``.safetensors`` or pickled ``.ckpt`` file.

    Lightning checkpoints (``{"state_dict": ...}``) and DeepSpeed ones (``{"module": ...}``, keys
    prefixed ``_forward_module.`` or ``module.``) are unwrapped. The format is read from the
    file's first bytes, not from its name.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return _unwrap(_read_pickle(path), path), {}
    if len(head) == 9 and head[8:9] == b"{":
        return _read_safetensors(path)
    raise CheckpointError(f"{path}: neither a safetensors file nor a PyTorch checkpoint (unrecognised header)")


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({error})") from None
    return state, metadata


_REFUSED_GLOBAL = re.compile(r"global[:\s]+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def _read_pickle(path: Path) -> object:
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as error:
        found = _REFUSED_GLOBAL.search(str(error))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused: the pickle references Python objects beyond tensors and plain containers{what}, "
            "which could run code when loaded. Nothing in it was executed. If you trust the file, re-save "
            "only its state_dict, or convert it to safetensors."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({error})") from None


def _unwrap(loaded: object, path: Path) -> dict[str, Tensor]:
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    elif isinstance(loaded, dict) and isinstance(loaded.get("module"), dict):
        loaded = _strip_common_prefix(loaded["module"], ("_forward_module.", "module."))
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{path}: holds no state dict (expected a dict of tensors, a Lightning "
                              "'state_dict' or a DeepSpeed 'module')")
    bad = [str(key) for key, value in loaded.items() if not isinstance(value, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(bad[:5])}")
    return dict(loaded)


def _strip_common_prefix(state: dict, prefixes: tuple[str, ...]) -> dict:
    for prefix in prefixes:
        if all(isinstance(k, str) and k.startswith(prefix) for k in state):
            return under_prefix(state, prefix)
    return state


def inspect_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], CheckpointInfo]:
    """(state dict, what it is) of a file, for reports; :func:`open_checkpoint` to build the model from it."""
    state, metadata = read_checkpoint(path)
    return state, recognise(state, _stored_config(metadata)).info


def open_checkpoint(path: str | Path) -> RecognisedCheckpoint:
    """Read a file and recognise it (config from vc2's own metadata when present): its parts and info."""
    state, metadata = read_checkpoint(path)
    return recognise(state, _stored_config(metadata))


def _stored_config(metadata: dict[str, str]) -> ModelConfig | None:
    return model_config_from_json(metadata["vc2_config"]) if "vc2_config" in metadata else None


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    for_inference: bool = False) -> tuple[VideoCrafter, CheckpointInfo]:
    """Build the model a checkpoint describes and load its weights (see :func:`build_model`)."""
    checkpoint = open_checkpoint(path)
    return build_model(checkpoint, device=device, dtype=dtype, for_inference=for_inference), checkpoint.info


def build_model(checkpoint: RecognisedCheckpoint, *, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, for_inference: bool = False) -> VideoCrafter:
    """The model of a recognised checkpoint, weights loaded strictly, each network built once.

    Every network is cast to ``dtype`` once, from the file's tensors; ``for_inference`` uses the
    per-network :func:`~vc2_core.precision.inference_dtypes` instead (the VAE stays float32
    and keeps the file's float32 values exactly). The UNet (three quarters of the weights) is
    built on the meta device and takes the file's tensors directly: no time spent on a random
    initialisation and no second copy in memory. The schedule is derived from the config, never read.
    """
    config, parts = checkpoint.info.config, checkpoint.parts
    dtypes = inference_dtypes(dtype) if for_inference else dict.fromkeys(("unet", "text_encoder", "vae"), dtype)
    with torch.device("meta"):
        unet = UNetModel(config.unet)
    unet.load_state_dict(parts["unet"], strict=True, assign=True)
    vae = VideoVAE(config.vae, scale_factor=config.scale_factor)
    vae.load_official_state_dict(parts["vae"])
    text_encoder = TextEncoder(config.text)
    text_encoder.load_official_state_dict(parts["text"])
    model = VideoCrafter(config, unet=unet.to(device=device, dtype=dtypes["unet"]),
                         vae=vae.to(device=device, dtype=dtypes["vae"]),
                         text_encoder=text_encoder.to(device=device, dtype=dtypes["text_encoder"]))
    return model.eval()


def save_checkpoint(model: VideoCrafter, path: str | Path, *, unet_state: dict[str, Tensor] | None = None,
                    provenance: dict | None = None) -> Path:
    """Write the official key layout atomically (temporary file, renamed at the end).

    ``.safetensors`` (the format this project writes; its metadata carries the model config, so
    custom sizes reload without guessing) or ``.ckpt`` (``{"state_dict": ...}``, what the official
    code's ``torch.load`` expects). ``unet_state`` replaces the UNet's own state (see
    :meth:`VideoCrafter.official_state_dict`). ``provenance`` (how the weights were made: command,
    seed, commit, ...) is stored as JSON in the safetensors metadata; see :func:`read_provenance`.
    """
    return write_checkpoint(path, model.official_state_dict(unet_state), model.config, provenance=provenance)


PROVENANCE_KEY = "vc2_provenance"


def read_provenance(path: str | Path) -> dict | None:
    """The provenance a ``.safetensors`` file written by :func:`save_checkpoint` carries (None if it has none)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({error})") from None
    return json.loads(metadata[PROVENANCE_KEY]) if PROVENANCE_KEY in metadata else None


def write_checkpoint(path: str | Path, state: dict[str, Tensor], config: ModelConfig, *,
                     provenance: dict | None = None) -> Path:
    """Write an official-layout state dict (see :func:`save_checkpoint`) of a model of ``config``."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"{path}: checkpoints are written as .safetensors (or .ckpt for the official code)")
    if not path.parent.is_dir():
        raise ValueError(f"{path.parent}: the output directory does not exist")
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    metadata = {"format": FORMAT_TAG, "family": config.name, "vc2_config": model_config_to_json(config)}
    if provenance is not None:
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: provenance is stored in safetensors metadata; write a .safetensors file")
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True)
    if path.suffix == ".safetensors":
        return write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))
    return write_atomically(path, lambda temporary: torch.save({"state_dict": state}, temporary))


def model_config_to_json(config: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def model_config_from_json(text: str) -> ModelConfig:
    try:
        data = json.loads(text)
        return ModelConfig(
            name=data["name"],
            unet=UNetConfig(**data["unet"]),
            vae=VAEConfig(**data["vae"]),
            text=TextEncoderConfig(**data["text"]),
            schedule=ScheduleConfig(**data["schedule"]),
            **{k: data[k] for k in ("scale_factor", "height", "width", "frames", "fps")},
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"the vc2_config metadata of this file is unreadable ({error})") from None
