"""A vc2 LoRA file in the layout ComfyUI's own LoRA loaders map onto a MODEL (LoraLoaderModelOnly).

ComfyUI finds a LoRA's layers by the MODEL's state-dict keys, where a UNet weight is
``diffusion_model.<official key>``: a layer ``P`` loads from ``P.lora_down.weight`` / ``P.lora_up.weight``
and scales ``up @ down`` by ``P.alpha / rank`` (1 without an alpha). vc2's files key layers by the UNet's
own path and keep alpha in the metadata, so ComfyUI would match none of them. This layout adds the
prefix and writes alpha per layer: ComfyUI then adds ``strength * alpha / rank * up @ down`` to each
weight, which is :func:`vc2_core.training.lora.lora_weight_deltas` times the strength.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ...files import write_atomically
from .files import LoRAFile

Tensor = torch.Tensor
PREFIX = "diffusion_model."  # ComfyUI's name of the UNet inside a MODEL


def comfyui_lora_state(lora: LoRAFile) -> dict[str, Tensor]:
    """{``diffusion_model.P.lora_down.weight``, ``.lora_up.weight``, ``.alpha``} for every layer P of the LoRA."""
    state = {}
    for path, (down, up) in lora.layers().items():
        state[f"{PREFIX}{path}.lora_down.weight"] = down.contiguous()  # (rank, in)
        state[f"{PREFIX}{path}.lora_up.weight"] = up.contiguous()  # (out, rank)
        state[f"{PREFIX}{path}.alpha"] = torch.tensor(float(lora.alpha))
    return state


def write_comfyui_lora(lora: LoRAFile, path: str | Path) -> Path:
    """Write :func:`comfyui_lora_state` to ``path`` (.safetensors) atomically, with the family in the metadata."""
    path = Path(path)
    metadata = {"format": "vc2-lora-comfyui", "family": lora.family, "rank": str(lora.rank),
                "alpha": repr(lora.alpha), "targets": lora.targets}
    write_atomically(path, lambda temporary: save_file(comfyui_lora_state(lora), temporary, metadata=metadata))
    return path
