"""Faster ways to run the same UNet in inference: channels_last convolutions and ``torch.compile``.

Neither changes what is computed, only how: outputs match eager within float rounding
(tests/test_speed_paths.py states the tolerances; docs/benchmarks.md has the GPU suite that times them).

- **channels_last**: the 2-D convolution weights (4-D) are stored channels_last and the temporal (3, 1, 1)
  convolution weights (5-D) channels_last_3d, so every convolution of the UNet reads and writes
  ``((b t), c, h, w)`` frames with the channels innermost (NHWC), which is what cuDNN and oneDNN run
  natively; without it cuDNN converts NCHW <-> NHWC around each convolution. The activations follow the
  weights from the first convolution on: the UNet's reshapes are views in both layouts, and its
  residual sums are written in the layout of the frames they add to. Values are unchanged.
- **compile**: ``torch.compile`` of the UNet's forward (inductor fuses GroupNorm + SiLU, GEGLU and the
  residual adds). The UNet compiles as one graph (tests/test_compile.py). The first call pays the
  compilation (the warm-up: minutes on a CPU, about a minute on a GPU); later calls, and later
  :func:`compiled` wrappers of the same module, reuse it (Dynamo caches by code and guards, not by wrapper).
"""

from __future__ import annotations

import torch
import torch.nn as nn

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # inductor: the fast one; the others check the capture


def set_channels_last(module: nn.Module, enabled: bool) -> None:
    """Store ``module``'s convolution weights channels_last (``enabled``) or contiguous (NCHW), in place.

    4-D weights (Conv2d) get ``torch.channels_last``, 5-D weights (Conv3d) ``torch.channels_last_3d``;
    ``nn.Module.to(memory_format=...)`` cannot be used, it refuses 5-D tensors with a 4-D format.
    Values are unchanged, so a module shared with other users computes the same with either layout.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for parameter in module.parameters():
            layout = formats.get(parameter.ndim)
            if layout is None:
                continue
            wanted = layout if enabled else torch.contiguous_format
            if not parameter.is_contiguous(memory_format=wanted):
                parameter.data = parameter.data.contiguous(memory_format=wanted)


def is_channels_last(module: nn.Module) -> bool:
    """Whether every convolution weight of ``module`` with a spatial extent is stored channels_last."""
    weights = [p for p in module.parameters() if p.ndim in (4, 5) and p.shape[2:].numel() > 1]
    return bool(weights) and all(
        p.is_contiguous(memory_format=torch.channels_last if p.ndim == 4 else torch.channels_last_3d)
        for p in weights)


def compiled(unet: nn.Module, backend: str = "inductor", mode: str | None = None) -> nn.Module:
    """``torch.compile(unet)``: a wrapper that shares ``unet``'s parameters (the module itself is unchanged).

    backend: one of :data:`COMPILE_BACKENDS`; mode: torch.compile's (None; ``"reduce-overhead"`` adds
    CUDA graphs, ``"max-autotune"`` searches kernel configurations longer).
    """
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile backend {backend!r}: choose one of {', '.join(COMPILE_BACKENDS)}")
    return torch.compile(unet, backend=backend, mode=mode)


def prepared_unet(unet: nn.Module, *, compile_backend: str | None, channels_last: bool) -> nn.Module:
    """The module to call for sampling: ``unet`` with its weights in the asked-for layout (set in place,
    both ways, see :func:`set_channels_last`), compiled with ``compile_backend`` unless that is None."""
    set_channels_last(unet, channels_last)
    return unet if compile_backend is None else compiled(unet, compile_backend)
