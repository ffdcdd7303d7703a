"""The spatio-temporal UNet of VideoCrafter1/2 (official ``openaimodel3d.UNetModel``).

The module tree is the checkpoint: ``unet.state_dict()`` has exactly the released
``model.diffusion_model.*`` keys (prefix stripped), typos included, so released weights load
with ``load_state_dict(strict=True)``.

Layout: the public input and output are ``(b, c, t, h, w)``. Inside, spatial layers see the
``(b t)`` frames as an image batch and temporal layers regroup them with the explicit frame
count. The text context and the timestep embedding are kept per sample (b rows) and shared by
the sample's frames instead of being repeated t times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import UNetConfig
from .embeddings import timestep_embedding
from .layers import GroupNorm32, zero_module
from .resblocks import Downsample, ResBlock, Upsample
from .transformers import BasicTransformerBlock, SpatialTransformer, TemporalTransformer

Tensor = torch.Tensor

DEFAULT_FPS = 16  # the official forward()'s default when no fps is passed


@dataclass
class DeepFeatureCache:
    """The up path's feature at a skip depth, handed from one UNet call to a later one (DeepCache, Ma et al. 2024;
    the policy of when to reuse it is :mod:`vc2_core.diffusion.step_cache`).

    A call given a cache whose ``feature`` is None runs the whole UNet and stores in it the feature that enters the
    output block mirroring input block ``depth - 1``: ((b t), c, h, w). A call given a stored feature runs only the
    first ``depth`` input blocks (their skips) and the last ``depth`` output blocks, on the stored feature in place
    of everything deeper. With the feature of the same inputs, that is the full output exactly.
    """

    depth: int  # 1 .. len(input_blocks): input blocks run on a cached call
    feature: Tensor | None = None


class UNetBlock(nn.ModuleList):
    """A stage of the UNet (official ``TimestepEmbedSequential``): each layer gets what it needs."""

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None, num_frames: int) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, TemporalTransformer):
                h = layer(h, num_frames, context)
            else:
                h = layer(h)
        return h


class _Layers:
    """Builds the UNet's layers from its config (the official constructor's nested helpers)."""

    def __init__(self, config: UNetConfig):
        self.cfg = config
        self.emb_dim = config.model_channels * 4

    def resblock(self, ch_in: int, ch_out: int) -> ResBlock:
        cfg = self.cfg
        return ResBlock(ch_in, self.emb_dim, cfg.dropout, out_channels=ch_out, use_checkpoint=cfg.use_checkpoint,
                        use_scale_shift_norm=cfg.use_scale_shift_norm, tempspatial_aware=cfg.tempspatial_aware,
                        use_temporal_conv=cfg.temporal_conv)

    def transformers(self, ch: int) -> list[nn.Module]:
        """The spatial transformer of a level with attention, and its temporal transformer."""
        cfg = self.cfg
        heads, dim_head = cfg.heads_at(ch)
        layers: list[nn.Module] = [
            SpatialTransformer(ch, heads, dim_head, depth=cfg.transformer_depth, dropout=0.0,
                               context_dim=cfg.context_dim, use_checkpoint=cfg.use_checkpoint,
                               use_linear=cfg.use_linear)
        ]
        if cfg.temporal_attention:
            layers.append(self.temporal_transformer(ch, heads, dim_head, cfg.temporal_transformer_depth,
                                                    cfg.use_linear))
        return layers

    def temporal_transformer(self, ch: int, heads: int, dim_head: int, depth: int,
                             use_linear: bool) -> TemporalTransformer:
        cfg = self.cfg
        return TemporalTransformer(ch, heads, dim_head, depth=depth, context_dim=cfg.context_dim,
                                   use_checkpoint=cfg.use_checkpoint, use_linear=use_linear,
                                   only_self_att=cfg.temporal_selfatt_only,
                                   causal_attention=cfg.use_causal_attention,
                                   relative_position=cfg.use_relative_position,
                                   temporal_length=cfg.temporal_length)

    def init_attention(self) -> TemporalTransformer:
        """``init_attn``: 8 heads of num_head_channels, 1x1 Conv1d projections and transformer_depth, as official."""
        cfg = self.cfg
        return self.temporal_transformer(cfg.model_channels, 8, cfg.num_head_channels, cfg.transformer_depth,
                                         use_linear=False)

    def resample(self, ch: int, up: bool) -> nn.Module:
        cfg = self.cfg
        if cfg.resblock_updown:
            return ResBlock(ch, self.emb_dim, cfg.dropout, out_channels=ch, use_checkpoint=cfg.use_checkpoint,
                            use_scale_shift_norm=cfg.use_scale_shift_norm, up=up, down=not up)
        return (Upsample if up else Downsample)(ch, cfg.conv_resample, out_channels=ch)

    def embedding(self) -> nn.Sequential:
        """``time_embed`` / ``fps_embedding``: sinusoid (model_channels) -> 4 * model_channels."""
        mc, emb_dim = self.cfg.model_channels, self.emb_dim
        return nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def down_path(self) -> tuple[list[UNetBlock], list[int]]:
        """The input blocks after the first conv, and the channels of every input block's output (the skips)."""
        cfg, mc = self.cfg, self.cfg.model_channels
        blocks, skip_channels = [], [mc]
        ch, ds = mc, 1  # channels, downsampling factor
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [self.resblock(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += self.transformers(ch)
                blocks.append(UNetBlock(layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                blocks.append(UNetBlock([self.resample(ch, up=False)]))
                skip_channels.append(ch)
                ds *= 2
        return blocks, skip_channels

    def up_path(self, skip_channels: list[int]) -> tuple[list[UNetBlock], int]:
        """The output blocks, each taking the skip of the input block it mirrors (``skip_channels`` is consumed),
        and the channels of the last one."""
        cfg, mc = self.cfg, self.cfg.model_channels
        ch, ds = skip_channels[-1], 2 ** (len(cfg.channel_mult) - 1)
        blocks = []
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [self.resblock(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += self.transformers(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(self.resample(ch, up=True))
                    ds //= 2
                blocks.append(UNetBlock(layers))
        return blocks, ch


class UNetModel(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        mc = cfg.model_channels
        build = _Layers(cfg)
        # attributes in the official order: the state dict lists its keys in this order
        self.time_embed = build.embedding()
        if cfg.fps_cond:
            self.fps_embedding = build.embedding()
        if cfg.time_cond_proj_dim is not None:  # T2V-Turbo: the guidance-scale embedding (timestep_cond)
            self.time_cond_proj = nn.Linear(cfg.time_cond_proj_dim, mc, bias=False)
        if cfg.motion_cond_proj_dim is not None:  # T2V-Turbo-v2: the motion condition, combined with it
            self.motion_cond_proj = nn.Linear(cfg.motion_cond_proj_dim, mc, bias=False)
            self.combine_proj = nn.Linear(2 * mc, mc, bias=False)
        self.input_blocks = nn.ModuleList([UNetBlock([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        if cfg.addition_attention:
            self.init_attn = UNetBlock([build.init_attention()])
        down, skip_channels = build.down_path()
        self.input_blocks.extend(down)
        ch = skip_channels[-1]
        self.middle_block = UNetBlock([build.resblock(ch, ch), *build.transformers(ch), build.resblock(ch, ch)])
        up, ch = build.up_path(skip_channels)
        self.output_blocks = nn.ModuleList(up)
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(mc, cfg.out_channels, 3, padding=1)))

    # ---- conditioning -------------------------------------------------------------------------

    def embed(self, timesteps: Tensor, fps: Tensor | None = None, timestep_cond: Tensor | None = None,
              motion_cond: Tensor | None = None) -> Tensor:
        """Per-sample embedding (b, 4*mc): time_embed(sin(t) [+ c]) [+ fps_embedding(sin(fps))].

        c is T2V-Turbo's conditioning term (:meth:`condition_embedding`), added to the sinusoid
        before ``time_embed`` as their UNet adds it; without conditions it is absent (their 0).
        """
        mc = self.config.model_channels
        t_emb = timestep_embedding(timesteps, mc).to(self.time_embed[0].weight.dtype)  # (b, mc)
        condition = self.condition_embedding(timestep_cond, motion_cond, timesteps.shape[0])
        if condition is not None:
            t_emb = t_emb + condition.to(t_emb.dtype)
        emb = self.time_embed(t_emb)
        if self.config.fps_cond:
            if fps is None:
                fps = torch.full_like(timesteps, DEFAULT_FPS)
            fps_emb = timestep_embedding(fps, mc).to(self.fps_embedding[0].weight.dtype)
            emb = emb + self.fps_embedding(fps_emb)
        return emb

    def condition_embedding(self, timestep_cond: Tensor | None, motion_cond: Tensor | None,
                            batch: int) -> Tensor | None:
        """T2V-Turbo's term (b, mc): time_cond_proj(timestep_cond), or with T2V-Turbo-v2's motion condition
        combine_proj(cat[time_cond_proj(timestep_cond), motion_cond_proj(motion_cond)]); None without both.

        timestep_cond: (b, time_cond_proj_dim), the guidance-scale embedding; motion_cond:
        (b, motion_cond_proj_dim), the motion-guidance embedding (both :func:`vc2_core.t2v_turbo.scale_embedding`).
        """
        if timestep_cond is None and motion_cond is None:
            return None
        cfg = self.config
        if timestep_cond is None:
            raise ValueError("motion_cond needs timestep_cond (T2V-Turbo-v2 combines the two embeddings)")
        if cfg.time_cond_proj_dim is None:
            raise ValueError("timestep_cond was given, but this UNet has no guidance embedding (time_cond_proj); "
                             "T2V-Turbo's UNets have one (UNetConfig.time_cond_proj_dim)")
        _check_condition(timestep_cond, "timestep_cond", batch, cfg.time_cond_proj_dim)
        condition = self.time_cond_proj(timestep_cond.to(self.time_cond_proj.weight.dtype))
        if motion_cond is None:
            return condition
        if cfg.motion_cond_proj_dim is None:
            raise ValueError("motion_cond was given, but this UNet has no motion condition (motion_cond_proj); "
                             "T2V-Turbo-v2's UNets have one (UNetConfig.motion_cond_proj_dim)")
        _check_condition(motion_cond, "motion_cond", batch, cfg.motion_cond_proj_dim)
        motion = self.motion_cond_proj(motion_cond.to(self.motion_cond_proj.weight.dtype))
        return self.combine_proj(torch.cat([condition, motion], dim=1))

    # ---- forward ------------------------------------------------------------------------------

    def forward(self, x: Tensor, timesteps: Tensor | int, context: Tensor | None,
                fps: Tensor | int | None = None, *, timestep_cond: Tensor | None = None,
                motion_cond: Tensor | None = None, deep_cache: DeepFeatureCache | None = None) -> Tensor:
        """Predict the noise of a latent video.

        x: (b, in_channels, t, h, w), any t >= 1 (exactly temporal_length, or 1, with causal attention);
        timesteps: (b,) or a scalar; context: (b, L, context_dim) text embeddings, or (b*t, L, context_dim)
        for one text per frame (frame f of sample i uses row i*t + f; training packs images this way);
        fps: (b,) or a scalar frame rate, used when the model has fps_cond (default 16 as
        official) and ignored otherwise. timestep_cond / motion_cond: T2V-Turbo's (b, dim) embeddings
        (:meth:`condition_embedding`), for UNets built with them. ``deep_cache``: store the deep feature, or
        reuse a stored one and skip the deep blocks (:class:`DeepFeatureCache`). Returns (b, out_channels, t, h, w).
        """
        self._check_input(x, context)
        self._check_deep_cache(deep_cache, x)
        b, c, t, h, w = x.shape
        timesteps = _per_sample(timesteps, b, x.device)
        fps = None if fps is None else _per_sample(fps, b, x.device)
        emb = self.embed(timesteps, fps, timestep_cond, motion_cond).to(x.dtype)  # (b, 4mc), shared by the frames
        context = None if context is None else context.to(x.dtype)

        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (b t) c h w
        reuse = deep_cache is not None and deep_cache.feature is not None
        depth = deep_cache.depth if reuse else len(self.input_blocks)
        skips = []
        for index, block in enumerate(self.input_blocks[:depth]):
            frames = block(frames, emb, context, t)
            if index == 0 and self.config.addition_attention:
                frames = self.init_attn(frames, emb, context, t)
            skips.append(frames)
        frames = deep_cache.feature if reuse else self.middle_block(frames, emb, context, t)
        for block in self.output_blocks[len(self.output_blocks) - depth:]:
            if deep_cache is not None and not reuse and len(skips) == deep_cache.depth:
                deep_cache.feature = frames  # (b t) c h w, entering the output block of skip depth - 1
            frames = block(torch.cat([frames, skips.pop()], dim=1), emb, context, t)
        y = self.out(frames)  # (b t) c' h w
        return y.view(b, t, -1, h, w).transpose(1, 2).contiguous()  # b c' t h w

    def _check_input(self, x: Tensor, context: Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"the UNet takes a latent video (b, c, t, h, w); got shape {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"the UNet takes {cfg.in_channels} latent channels; got {c}")
        if t < 1:
            raise ValueError("the latent video has no frames")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if h % factor or w % factor:
            raise ValueError(f"latent height and width must be divisible by {factor} for this UNet; got {h}x{w}")
        if context is not None and (context.ndim != 3 or context.shape[0] not in (b, b * t)):
            raise ValueError(f"context must be (b={b}, tokens, dim) or (b*t={b * t}, tokens, dim); got shape "
                             f"{tuple(context.shape)}")
        if context is not None and cfg.context_dim is not None and context.shape[-1] != cfg.context_dim:
            raise ValueError(f"context dim must be {cfg.context_dim}; got {context.shape[-1]}")

    def _check_deep_cache(self, deep_cache: DeepFeatureCache | None, x: Tensor) -> None:
        if deep_cache is None:
            return
        blocks = len(self.input_blocks)
        if not 1 <= deep_cache.depth <= blocks:
            raise ValueError(f"deep cache depth must be in [1, {blocks}] for this UNet ({blocks} input blocks); "
                             f"got {deep_cache.depth}")
        b, _, t = x.shape[:3]
        if deep_cache.feature is not None and deep_cache.feature.shape[0] != b * t:
            raise ValueError(f"the cached deep feature has {deep_cache.feature.shape[0]} frames; this call has "
                             f"b*t = {b * t} (it was stored by a call of another batch or length)")

    # ---- options -----------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute every ResBlock and transformer block in the backward pass (less memory, same values)."""
        for module in self.modules():
            if isinstance(module, ResBlock):
                module.use_checkpoint = enabled
            elif isinstance(module, BasicTransformerBlock):
                module.checkpoint = enabled


def _check_condition(value: Tensor, name: str, batch: int, dim: int) -> None:
    if value.shape != (batch, dim):
        raise ValueError(f"{name} must be ({batch}, {dim}): one embedding per sample; got shape {tuple(value.shape)}")


def _per_sample(value: Tensor | int | float, batch: int, device: torch.device) -> Tensor:
    """A scalar or (b,) tensor of timesteps / fps as a (b,) tensor."""
    value = torch.as_tensor(value, device=device)
    if value.ndim == 0:
        return value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(f"expected a scalar or {batch} values; got shape {tuple(value.shape)}")
    return value
