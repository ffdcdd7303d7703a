"""Small layers shared by the UNet modules."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


def at_least_float32(x: Tensor) -> Tensor:
    """x in float32, unless it is float64 already (normalisation statistics are never computed in half)."""
    return x if x.dtype == torch.float64 else x.float()


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (official ``GroupNormSpecific``, 32 groups, eps 1e-5)."""

    def forward(self, x: Tensor) -> Tensor:
        return float32_group_norm(x, self).to(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (the official init of residual output layers)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def pointwise(layer: nn.Linear | nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a Linear or a 1x1 convolution as a linear map over the last axis of token-major ``x``.

    The official code keeps 1x1 convolutions (``use_linear=False``) in its checkpoints; applied to
    tokens they are the same linear map, so the video never needs a channels-first copy for them.
    """
    weight = layer.weight
    if weight.ndim > 2:
        weight = weight.reshape(weight.shape[0], weight.shape[1])  # (out, in, 1[, 1]) -> (out, in)
    return F.linear(x, weight, layer.bias)


def float32_group_norm(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` computed in float32 (or float64) whatever x's dtype, returned in that wide dtype.

    GroupNorm pools each group over every axis after the channels, so on a ``(b, c, t, h, w)``
    video (or its ``(b, c, t, h*w)`` view) the statistics cover all frames, as the official
    temporal layers compute them.
    """
    wide = at_least_float32(x)
    weight = None if norm.weight is None else norm.weight.to(wide.dtype)
    bias = None if norm.bias is None else norm.bias.to(wide.dtype)
    return F.group_norm(wide, norm.num_groups, weight, bias, norm.eps)
