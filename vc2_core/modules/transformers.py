"""Spatial and temporal transformers of the UNet (official ``lvdm.modules.attention``).

Videos enter as ``((b t), c, h, w)`` frames. Spatial transformers attend over the h*w pixels
of each frame; temporal transformers attend over the t frames of each pixel, as tokens
``((b h w), t, c)``. The frame count is always passed explicitly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention_layers import CrossAttention
from .layers import float32_group_norm, pointwise, zero_module

Tensor = torch.Tensor


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        # the two halves of proj as two products: each output is contiguous, so GELU and the product
        # run on dense tensors instead of strided halves of one (30 % faster on CPUs at the top level)
        inner = self.proj.out_features // 2
        weight, bias = self.proj.weight, self.proj.bias
        value = F.linear(x, weight[:inner], bias[:inner])
        gate = F.linear(x, weight[inner:], bias[inner:])
        return value * F.gelu(gate)  # exact (erf) GELU


class FeedForward(nn.Module):
    """Keys ``net.0.proj`` (GEGLU) and ``net.2``; ``glu=False`` is Linear + GELU."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4, glu: bool = False, dropout: float = 0.0):
        super().__init__()
        inner_dim = int(dim * mult)
        project_in = GEGLU(dim, inner_dim) if glu else nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU())
        out_dim = dim if dim_out is None else dim_out
        self.net = nn.Sequential(project_in, nn.Dropout(dropout), nn.Linear(inner_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """x += attn1(LN x); x += attn2(LN x, context); x += FF(LN x)."""

    def __init__(self, dim: int, n_heads: int, d_head: int, dropout: float = 0.0, context_dim: int | None = None,
                 gated_ff: bool = True, checkpoint: bool = True, disable_self_attn: bool = False,
                 relative_position: bool = False, temporal_length: int | None = None):
        super().__init__()
        self.disable_self_attn = disable_self_attn
        rel = {"relative_position": relative_position, "temporal_length": temporal_length}
        self.attn1 = CrossAttention(dim, context_dim if disable_self_attn else None, n_heads, d_head, dropout, **rel)
        self.ff = FeedForward(dim, dropout=dropout, glu=gated_ff)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, dropout, **rel)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.checkpoint = checkpoint

    def forward(self, x: Tensor, context: Tensor | None = None, causal: bool = False) -> Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, causal, use_reentrant=False)
        return self._forward(x, context, causal)

    def _forward(self, x: Tensor, context: Tensor | None, causal: bool) -> Tensor:
        x = self.attn1(self.norm1(x), context if self.disable_self_attn else None, causal) + x
        x = self.attn2(self.norm2(x), context, causal) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of each frame; keys ``norm``, ``proj_in``, ``transformer_blocks``, ``proj_out``."""

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int = 1, dropout: float = 0.0,
                 context_dim: int | None = None, use_checkpoint: bool = True, disable_self_attn: bool = False,
                 use_linear: bool = False, img_cross_attention: bool = False):
        super().__init__()
        if img_cross_attention:
            raise ValueError("img_cross_attention belongs to the image-to-video models, which vc2 does not implement")
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim) if use_linear else nn.Conv2d(in_channels, inner_dim, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout, context_dim=context_dim,
                                  disable_self_attn=disable_self_attn, checkpoint=use_checkpoint)
            for _ in range(depth)
        )
        proj_out = nn.Linear(inner_dim, in_channels) if use_linear else nn.Conv2d(inner_dim, in_channels, 1)
        self.proj_out = zero_module(proj_out)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x: (n, c, h, w) frames; context: (n_ctx, L, d) shared by n / n_ctx consecutive frames."""
        n, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)  # (n, hw, c)
        tokens = pointwise(self.proj_in, tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = pointwise(self.proj_out, tokens)  # (n, hw, c)
        # x first: the sum is written in x's layout (NCHW frames stay NCHW, channels_last ones channels_last)
        return x + tokens.transpose(1, 2).reshape(n, c, h, w)


class TemporalTransformer(nn.Module):
    """Transformer over the frames of each pixel; same keys as SpatialTransformer.

    With ``only_self_att`` (both released configs) attn1 and attn2 are both self-attentions
    over frames, optionally causal. Otherwise attn2 cross-attends to the text with the
    official pairing: pixel p of a sample attends to the context of frame p // (h*w/t).
    """

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int = 1, dropout: float = 0.0,
                 context_dim: int | None = None, use_checkpoint: bool = True, use_linear: bool = False,
                 only_self_att: bool = True, causal_attention: bool = False, relative_position: bool = False,
                 temporal_length: int | None = None):
        super().__init__()
        if (causal_attention or relative_position) and temporal_length is None:
            raise ValueError("causal_attention / relative_position need temporal_length")
        self.only_self_att = only_self_att
        self.causal_attention = causal_attention
        self.temporal_length = temporal_length
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim) if use_linear else nn.Conv1d(in_channels, inner_dim, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout,
                                  context_dim=None if only_self_att else context_dim, checkpoint=use_checkpoint,
                                  relative_position=relative_position, temporal_length=temporal_length)
            for _ in range(depth)
        )
        proj_out = nn.Linear(inner_dim, in_channels) if use_linear else nn.Conv1d(inner_dim, in_channels, 1)
        self.proj_out = zero_module(proj_out)

    def forward(self, x: Tensor, num_frames: int, context: Tensor | None = None) -> Tensor:
        """x: ((b t), c, h, w) frames, t = num_frames; context: (b or b*t, L, d), cross mode only."""
        n, c, h, w = x.shape
        t = num_frames
        if n % t:
            raise ValueError(f"{n} frames are not a whole number of {t}-frame videos")
        b = n // t
        # the official mask is never used for cross-attention; a one-frame clip (an image) attends to itself
        # with or without it
        causal = self.causal_attention and self.only_self_att and t > 1
        if causal and t != self.temporal_length:
            raise ValueError(f"causal temporal attention is built for exactly temporal_length={self.temporal_length} "
                             f"frames (the official mask has a fixed size) or one frame (an image); got {t} frames")
        if not self.only_self_att:
            if context is None:
                raise ValueError("this temporal transformer cross-attends to text (temporal_selfatt_only=False): "
                                 "pass a context")
            if (h * w) % t:
                raise ValueError(f"temporal cross-attention pairs pixels with frames and needs h*w ({h}x{w}) "
                                 f"divisible by the frame count {t}, as in the official code")
        video = x.view(b, t, c, h, w).transpose(1, 2)  # (b, c, t, h, w): statistics pooled over all frames
        tokens = float32_group_norm(video, self.norm).to(x.dtype)
        tokens = tokens.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # ((b h w), t, c)
        tokens = pointwise(self.proj_in, tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, None if self.only_self_att else context, causal)
        tokens = pointwise(self.proj_out, tokens)  # ((b h w), t, c)
        tokens = tokens.view(b, h, w, t, c).permute(0, 3, 4, 1, 2)  # (b, t, c, h, w), a view
        # x first: the sum is written in x's layout (channels_last frames stay channels_last), no copy before it
        return (x.view(b, t, c, h, w) + tokens).reshape(n, c, h, w)

    def causal_mask(self) -> Tensor:
        """The official lower-triangular mask, (1, L, L) float (1 = visible)."""
        return torch.ones(1, self.temporal_length, self.temporal_length).tril()
