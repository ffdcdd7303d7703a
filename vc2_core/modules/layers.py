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
        wide = at_least_float32(x)
        weight = None if self.weight is None else self.weight.to(wide.dtype)
        bias = None if self.bias is None else self.bias.to(wide.dtype)
        return F.group_norm(wide, self.num_groups, weight, bias, self.eps).to(x.dtype)


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


def frame_group_norm(x: Tensor, num_frames: int, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm of a video stored as ``((b t), c, h, w)`` with statistics pooled over all t frames.

    Equals ``norm`` applied to the 5-D ``(b, c, t, h, w)`` tensor (official TemporalTransformer),
    without materialising that layout. Returns ``((b t), c, h, w)``.
    """
    n, c, h, w = x.shape
    b, g = n // num_frames, norm.num_groups
    groups = at_least_float32(x).view(b, num_frames, g, c // g, h, w)
    var, mean = torch.var_mean(groups, dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
    y = ((groups - mean) * torch.rsqrt(var + norm.eps)).view(n, c, h, w)
    if norm.affine:
        y = y * norm.weight.to(y.dtype).view(1, c, 1, 1) + norm.bias.to(y.dtype).view(1, c, 1, 1)
    return y.to(x.dtype)
