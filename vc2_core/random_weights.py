"""Random weights for tests, demos and CI (never a substitute for released or trained weights).

The official init zero-initialises every residual output layer (the UNet head, each
transformer's proj_out, each ResBlock's out_layers.3, each temporal conv's conv4), so a fresh
model predicts exactly 0 and every block is the identity. These helpers give those layers
values so that tests see the whole network at work.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .modules import ResBlock, SpatialTransformer, TemporalConvBlock, TemporalTransformer, UNetModel


def zero_initialized_layers(unet: UNetModel) -> list[nn.Module]:
    """The layers the official init sets to zero."""
    layers: list[nn.Module] = [unet.out[2]]
    for module in unet.modules():
        if isinstance(module, (SpatialTransformer, TemporalTransformer)):
            layers.append(module.proj_out)
        elif isinstance(module, ResBlock):
            layers.append(module.out_layers[3])
        elif isinstance(module, TemporalConvBlock):
            layers.append(module.conv4[3])
    return layers


@torch.no_grad()
def randomize_zero_initialized(unet: UNetModel, generator: torch.Generator, scale: float = 1.0) -> None:
    """Give the zero-initialised layers weights ~ scale * N(0, 1/fan_in) and biases ~ 0.05 * scale * N(0, 1)."""
    for layer in zero_initialized_layers(unet):
        fan_in = layer.weight[0].numel()
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * scale / fan_in**0.5)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.05 * scale)
