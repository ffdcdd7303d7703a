"""Residual blocks, the temporal convolution and the resampling layers (official ``openaimodel3d``)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .layers import GroupNorm32, zero_module

Tensor = torch.Tensor


def _check_dims(dims: int) -> None:
    if dims != 2:
        raise ValueError(f"dims={dims}: VideoCrafter's spatial layers are 2-D (dims=2)")


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (key ``op``), or 2x2 average pooling without ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None, padding: int = 1):
        super().__init__()
        _check_dims(dims)
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=padding)
        else:
            if out_channels != channels:
                raise ValueError("Downsample without a convolution cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution (key ``conv``) with ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None, padding: int = 1):
        super().__init__()
        _check_dims(dims)
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class TemporalConvBlock(nn.Module):
    """Four GroupNorm-SiLU-(Dropout)-Conv3d(3,1,1) stages over frames, plus the input (ModelScope's block).

    Keys ``conv1.{0,2}`` and ``conv{2,3,4}.{0,3}``; conv4 starts at zero so the block starts as the identity.
    ``spatial_aware`` makes the first two kernels (3,3,3).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0,
                 spatial_aware: bool = False):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        kernel, padding = ((3, 3, 3), (1, 1, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        self.conv1 = nn.Sequential(nn.GroupNorm(32, in_channels), nn.SiLU(),
                                   nn.Conv3d(in_channels, out_channels, kernel, padding=padding))
        self.conv2 = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv3d(out_channels, in_channels, kernel, padding=padding))
        self.conv3 = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv3d(out_channels, in_channels, (3, 1, 1), padding=(1, 0, 0)))
        self.conv4 = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                   zero_module(nn.Conv3d(out_channels, in_channels, (3, 1, 1), padding=(1, 0, 0))))

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, c, t, h, w) -> (b, c, t, h, w)."""
        b, c, t, h, w = x.shape
        # A (3, 1, 1) kernel mixes frames only: on the (b, c, t, h*w) view it is a 2-D convolution with a
        # (3, 1) kernel, which oneDNN runs ~25 % faster than Conv3d on CPUs (same weights, squeezed).
        y = x.reshape(b, c, t, h * w)
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            y = _temporal_stage(stage, y, t, h, w)
        return x + y.view(b, -1, t, h, w)  # x first: the sum keeps x's frame-major layout, so callers get views


def _temporal_stage(stage: nn.Sequential, y: Tensor, t: int, h: int, w: int) -> Tensor:
    """GroupNorm, SiLU, (Dropout), Conv3d of a TemporalConvBlock stage on a (b, c, t, h*w) view."""
    *pre, conv = stage
    for layer in pre:  # GroupNorm pools over (t, h*w) exactly as over (t, h, w)
        y = layer(y)
    if conv.kernel_size[1:] == (1, 1):
        return F.conv2d(y, conv.weight.squeeze(-1), conv.bias, padding=(conv.padding[0], 0))
    b, c = y.shape[:2]
    return conv(y.view(b, c, t, h, w)).flatten(3)  # the spatial-aware (3, 3, 3) kernel


class ResBlock(nn.Module):
    """The UNet residual block, optionally followed by a TemporalConvBlock (key ``temopral_conv``, sic).

    Same constructor as the official ``ResBlock``. The timestep embedding may serve several
    consecutive frames: emb has n_emb rows for n frames, n divisible by n_emb.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, dims: int = 2, use_checkpoint: bool = False,
                 use_conv: bool = False, up: bool = False, down: bool = False, use_temporal_conv: bool = False,
                 tempspatial_aware: bool = False):
        super().__init__()
        _check_dims(dims)
        self.out_channels = out_channels or channels
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_temporal_conv = use_temporal_conv
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(GroupNorm32(32, self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)))
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)
        if use_temporal_conv:
            # dropout 0.1 is hard-coded by the official ResBlock
            self.temopral_conv = TemporalConvBlock(self.out_channels, self.out_channels, dropout=0.1,
                                                   spatial_aware=tempspatial_aware)

    def forward(self, x: Tensor, emb: Tensor, num_frames: int | None = None) -> Tensor:
        """x: (n, c, h, w) frames; emb: (n_emb, emb_channels).

        ``num_frames`` None runs the 2-D part only: the official block silently skips its
        temporal convolution when no batch size is passed.
        """
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, num_frames, use_reentrant=False)
        return self._forward(x, emb, num_frames)

    def _forward(self, x: Tensor, emb: Tensor, num_frames: int | None) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        n, c, hh, ww = h.shape
        n_emb = emb.shape[0]
        if n % n_emb:
            raise ValueError(f"{n} frames cannot share {n_emb} timestep embeddings (not a divisor)")
        emb_out = self.emb_layers(emb).to(h.dtype)[:, None, :, None, None]  # (n_emb, 1, C, 1, 1)
        h = h.view(n_emb, n // n_emb, c, hh, ww)
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=2)
            h = self.out_layers[0](h.view(n, c, hh, ww)).view_as(h) * (1 + scale) + shift
            h = self.out_layers[1:](h.view(n, c, hh, ww))
        else:
            h = self.out_layers((h + emb_out).view(n, c, hh, ww))
        h = self.skip_connection(x) + h
        if self.use_temporal_conv and num_frames is not None:
            t = num_frames
            video = h.view(n // t, t, c, hh, ww).transpose(1, 2)  # (b, c, t, h, w)
            h = self.temopral_conv(video).transpose(1, 2).reshape(n, c, hh, ww)
        return h
