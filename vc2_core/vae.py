"""The first stage: diffusers' ``AutoencoderKL`` with VideoCrafter's key layout and video encode/decode.

The network is the maintained diffusers implementation; this module only adds

* the official checkpoint layout (``first_stage_model.*`` with the prefix stripped), read with
  diffusers' own ``convert_ldm_vae_checkpoint`` and written back bit-exactly, in the released order;
* the video path of ``lvdm.models.ddpm3d.LatentDiffusion``: frames are flattened to an image batch
  ``(b t)`` (row ``b*T + f`` is sample ``b`` frame ``f``), encoded to a *sampled* posterior scaled by
  ``scale_factor``, and decoded after multiplying by ``1/scale_factor``, all at once
  (``decode_first_stage``) or in chunks of frames (``chunk_frames=1`` is ``decode_first_stage_2DAE``).

Shapes: images ``(n, c, H, W)``, videos ``(b, c, t, H, W)``, latents ``(.., z, .., H/f, W/f)`` with
``f = 2 ** (len(ch_mult) - 1)``. Methods keep autograd; wrap calls in ``torch.no_grad()`` for inference.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import torch
import torch.nn as nn
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from .config import VAEConfig
from .keys import VAE_PREFIX, under_prefix
from .messages import first_few

Tensor = torch.Tensor

LOGVAR_RANGE = (-30.0, 20.0)  # lvdm.distributions.DiagonalGaussianDistribution


def _official_keys(config: VAEConfig) -> list[str]:
    """The official ``AutoencoderKL`` state-dict keys in registration order (encoder, decoder, quant convs).

    Mirrors ``lvdm.modules.networks.ae_modules.Encoder/Decoder``: ResnetBlock = norm1, conv1, norm2, conv2
    (+ nin_shortcut when the width changes); mid = block_1, attn_1 (norm, q, k, v, proj_out), block_2;
    ``decoder.up.{i}`` is indexed by level (so listed shallowest first) with num_res_blocks + 1 blocks.
    """
    def pair(name: str) -> list[str]:
        return [f"{name}.weight", f"{name}.bias"]

    def resnet(name: str, c_in: int, c_out: int) -> list[str]:
        keys = [k for layer in ("norm1", "conv1", "norm2", "conv2") for k in pair(f"{name}.{layer}")]
        return keys + (pair(f"{name}.nin_shortcut") if c_in != c_out else [])

    def mid(name: str, width: int) -> list[str]:
        attn = [k for layer in ("norm", "q", "k", "v", "proj_out") for k in pair(f"{name}.attn_1.{layer}")]
        return resnet(f"{name}.block_1", width, width) + attn + resnet(f"{name}.block_2", width, width)

    widths = [config.ch * m for m in config.ch_mult]
    levels = len(widths)
    keys, c_in = pair("encoder.conv_in"), config.ch
    for i, width in enumerate(widths):
        for j in range(config.num_res_blocks):
            keys += resnet(f"encoder.down.{i}.block.{j}", c_in, width)
            c_in = width
        keys += pair(f"encoder.down.{i}.downsample.conv") if i != levels - 1 else []
    keys += mid("encoder.mid", widths[-1]) + pair("encoder.norm_out") + pair("encoder.conv_out")
    keys += pair("decoder.conv_in") + mid("decoder.mid", widths[-1])
    for i, width in enumerate(widths):
        for j in range(config.num_res_blocks + 1):
            keys += resnet(f"decoder.up.{i}.block.{j}", widths[min(i + 1, levels - 1)] if j == 0 else width, width)
        keys += pair(f"decoder.up.{i}.upsample.conv") if i != 0 else []
    return keys + pair("decoder.norm_out") + pair("decoder.conv_out") + pair("quant_conv") + pair("post_quant_conv")


@functools.lru_cache(maxsize=None)
def _key_table(config: VAEConfig, block_types: tuple[tuple[str, ...], tuple[str, ...]]
               ) -> tuple[tuple[str, str, int], ...]:
    """``(official key, diffusers key, trailing unit dims the converter dropped)`` in official order.

    The inverse of ``convert_ldm_vae_checkpoint`` is read off the library itself: each official key gets
    a probe tensor filled with its index (4-D for conv weights, 1-D otherwise), the probes go through
    the converter, and each converted tensor's value names its source key while its lost dimensions
    (the 1x1-conv -> linear reshape of the mid-block attention) say how to reshape back.
    """
    official = _official_keys(config)
    probes = {key: torch.full((1,) * (4 if key.endswith(".weight") and "norm" not in key else 1), float(index),
                              dtype=torch.float64, device="cpu")
              for index, key in enumerate(official)}
    converted = convert_ldm_vae_checkpoint(probes, {"down_block_types": block_types[0],
                                                    "up_block_types": block_types[1]})
    sources = {}  # official index -> (diffusers key, dimensions dropped)
    for name, tensor in converted.items():
        index = int(tensor.flatten()[0].item())
        sources[index] = (name, probes[official[index]].ndim - tensor.ndim)
    if len(sources) != len(official) or len(converted) != len(official):
        raise RuntimeError(f"diffusers' convert_ldm_vae_checkpoint mapped {len(official)} official VAE keys to "
                           f"{len(converted)} keys ({len(sources)} distinct sources): this diffusers version is "
                           "not supported")
    return tuple((key, *sources[index]) for index, key in enumerate(official))


def _strip_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state dict without a ``first_stage_model.`` prefix that every key carries."""
    if state_dict and all(k.startswith(VAE_PREFIX) for k in state_dict):
        return under_prefix(state_dict, VAE_PREFIX)
    return dict(state_dict)


class VideoVAE(nn.Module):
    """KL autoencoder (diffusers ``AutoencoderKL`` in ``self.autoencoder``) with the official video API.

    The diffusers model has no dropout (``config.dropout`` only matters when training the VAE itself, which
    VideoCrafter never does) and uses its default attention processor (``F.scaled_dot_product_attention``).
    """

    def __init__(self, config: VAEConfig, scale_factor: float = 0.18215):
        super().__init__()
        if config.ch_mult[0] != 1:
            raise ValueError(f"VAEConfig.ch_mult[0] = {config.ch_mult[0]}: diffusers' AutoencoderKL needs the first "
                             "level to keep `ch` channels (ch_mult[0] == 1, as in every released VAE)")
        self.config = config
        self.scale_factor = scale_factor
        self.autoencoder = AutoencoderKL(
            in_channels=config.in_channels,
            out_channels=config.out_ch,
            down_block_types=("DownEncoderBlock2D",) * len(config.ch_mult),
            up_block_types=("UpDecoderBlock2D",) * len(config.ch_mult),
            block_out_channels=tuple(config.ch * m for m in config.ch_mult),
            layers_per_block=config.num_res_blocks,
            latent_channels=config.z_channels,
            norm_num_groups=32,
            sample_size=config.resolution,
        )
        table = _key_table(config, (tuple(self.autoencoder.config.down_block_types),
                                    tuple(self.autoencoder.config.up_block_types)))
        if {d for _, d, _ in table} != set(self.autoencoder.state_dict()):
            raise RuntimeError("diffusers' convert_ldm_vae_checkpoint does not produce this diffusers version's "
                               "AutoencoderKL keys; this diffusers version is not supported")
        self._table = table

    # ---- checkpoint layout ------------------------------------------------------------------------------
    def official_state_dict(self) -> dict[str, Tensor]:
        """The official keys (``first_stage_model.`` stripped), shapes and order; tensors share storage."""
        params = self.autoencoder.state_dict()
        return {key: params[name].reshape(params[name].shape + (1,) * dropped) for key, name, dropped in self._table}

    def load_official_state_dict(self, state_dict: dict[str, Tensor], *, assign: bool = False) -> None:
        """Load official weights strictly (via ``convert_ldm_vae_checkpoint``); ValueError lists any mismatch.

        A uniform ``first_stage_model.`` prefix is stripped. ``assign=True`` adopts the tensors (meta models).
        """
        state = _strip_prefix(state_dict)
        expected = self.official_state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [f"{k}: got {list(state[k].shape)}, expected {list(expected[k].shape)}"
                      for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        problems = [f"{what} [{first_few([repr(item) for item in items])}]" for what, items in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if items]
        if problems:
            raise ValueError(f"the VAE state dict does not fit {self.config}: " + "; ".join(problems)
                             + " (VideoVAE.config_from_official_state_dict infers the config of a checkpoint)")
        converted = convert_ldm_vae_checkpoint(state, self.autoencoder.config)
        try:
            self.autoencoder.load_state_dict(converted, strict=True, assign=assign)
        except RuntimeError as error:
            raise ValueError(f"the converted VAE state dict does not load: {error}") from None

    @staticmethod
    def config_from_official_state_dict(state_dict: dict[str, Tensor]) -> VAEConfig:
        """Infer ch, ch_mult, num_res_blocks, z_channels, embed_dim and in/out channels from the shapes."""
        state = _strip_prefix(state_dict)
        required = ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight",
                    "decoder.conv_out.weight", "quant_conv.weight")
        absent = [k for k in required if k not in state]
        if absent:
            raise ValueError(f"not an official VAE state dict: missing {', '.join(absent)}")
        levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
        if not levels or levels != list(range(len(levels))) or not blocks:
            raise ValueError("not an official VAE state dict: no consecutive encoder.down.{i}.block.{j} levels")
        ch, in_channels = state["encoder.conv_in.weight"].shape[:2]
        widths = []
        for i in levels:
            key = f"encoder.down.{i}.block.0.conv1.weight"
            if key not in state or state[key].shape[0] % ch:
                raise ValueError(f"cannot infer ch_mult: {key} is missing or not a multiple of ch={ch} wide")
            widths.append(state[key].shape[0] // ch)
        z_channels = state["decoder.conv_in.weight"].shape[1]
        if state["encoder.conv_out.weight"].shape[0] != 2 * z_channels:
            raise ValueError("encoder.conv_out does not output 2 * z_channels: not a KL autoencoder (double_z)")
        return VAEConfig(embed_dim=state["quant_conv.weight"].shape[0] // 2, z_channels=z_channels,
                         in_channels=in_channels, out_ch=state["decoder.conv_out.weight"].shape[0], ch=ch,
                         ch_mult=tuple(widths), num_res_blocks=len(blocks))

    # ---- image level ------------------------------------------------------------------------------------
    @staticmethod
    def _check(x: Tensor, layout: str, channels: int, what: str) -> None:
        """ValueError unless ``x`` is a non-empty tensor of rank ``len(layout)`` with ``channels`` at dim 1."""
        if not isinstance(x, Tensor) or x.ndim != len(layout) or x.shape[1] != channels or 0 in x.shape:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            dims = ", ".join([layout[0], str(channels), *layout[2:]])
            raise ValueError(f"expected {what} ({dims}) (non-empty), got {got}")

    def encode_moments(self, images: Tensor) -> Tensor:
        """(n, in_ch, H, W) -> quant_conv(Encoder(images)) (n, 2 * z, H/f, W/f)."""
        self._check(images, "nchw", self.config.in_channels, "images")
        return self.autoencoder.quant_conv(self.autoencoder.encoder(images))

    @staticmethod
    def split_moments(moments: Tensor) -> tuple[Tensor, Tensor]:
        """(n, 2z, h, w) -> (mean, logvar clamped to [-30, 20]), each (n, z, h, w)."""
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return mean, torch.clamp(logvar, *LOGVAR_RANGE)

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(n, in_ch, H, W) -> posterior (mean, logvar), each (n, z, H/f, W/f); std = exp(0.5 * logvar)."""
        return self.split_moments(self.encode_moments(images))

    def decode(self, latents: Tensor) -> Tensor:
        """Unscaled latents (n, z, h, w) -> Decoder(post_quant_conv(latents)) (n, out_ch, h*f, w*f)."""
        self._check(latents, "nchw", self.config.z_channels, "latents")
        return self.autoencoder.decoder(self.autoencoder.post_quant_conv(latents))

    # ---- video level ------------------------------------------------------------------------------------
    @staticmethod
    def _chunks(frames: int, chunk_frames: int | None) -> range:
        if chunk_frames is None:
            return range(0, frames, max(frames, 1))
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1 (an int; None = all frames at once), "
                             f"got {chunk_frames!r}")
        return range(0, frames, chunk_frames)

    def encode_video(self, video: Tensor, *, sample: bool = True, generator: torch.Generator | None = None,
                     noise: Tensor | None = None, chunk_frames: int | None = None) -> Tensor:
        """(b, in_ch, t, H, W) -> scaled latents (b, z, t, H/f, W/f), as ``encode_first_stage``.

        sample=True: ``scale_factor * (mean + std * noise)`` with ``noise`` ((b t), z, H/f, W/f), row b*T+f,
        drawn on the CPU from ``generator`` (the global RNG if None) when not given. sample=False:
        ``scale_factor * mean``. ``chunk_frames`` encodes that many frames (of every sample) at a time.
        """
        self._check(video, "bcthw", self.config.in_channels, "video")
        b, channels, t, height, width = video.shape
        f = self.config.downsample_factor  # each Downsample pads right/bottom by 1: sizes floor(H / f)
        latent_shape = (b * t, self.config.z_channels, height // f, width // f)
        starts = self._chunks(t, chunk_frames)  # validated before any noise is drawn
        if sample and noise is None:
            noise = torch.randn(latent_shape, generator=generator, device="cpu", dtype=torch.float32)
        if sample and tuple(noise.shape) != latent_shape:
            raise ValueError(f"noise: expected shape ((b t), z, h, w) = {list(latent_shape)}, got {list(noise.shape)}")
        parts = []
        for start in starts:
            clip = video[:, :, start:start + (chunk_frames or t)]
            n = clip.shape[2]
            mean, logvar = self.posterior(clip.permute(0, 2, 1, 3, 4).reshape(b * n, channels, height, width))
            if sample:
                eps = noise.reshape(b, t, *latent_shape[1:])[:, start:start + n].reshape(b * n, *latent_shape[1:])
                mean = mean + torch.exp(0.5 * logvar) * eps.to(device=mean.device, dtype=mean.dtype)
            z = self.scale_factor * mean
            parts.append(z.reshape(b, n, *z.shape[1:]).permute(0, 2, 1, 3, 4))
        return torch.cat(parts, dim=2)

    def decode_video(self, z: Tensor, *, chunk_frames: int | None = None,
                     before_chunk: Callable[[], None] | None = None) -> Tensor:
        """Scaled latents (b, z, t, h, w) -> (b, out_ch, t, h*f, w*f): ``decode((1/scale_factor) * z)``.

        chunk_frames=None decodes all (b t) frames in one batch (``decode_first_stage``); 1 decodes frame by
        frame (``decode_first_stage_2DAE``, the official inference path); k decodes k frames at a time.
        ``before_chunk`` is called before each chunk (interrupt checks).
        """
        self._check(z, "bcthw", self.config.z_channels, "latents")
        return self.decode_unscaled_video((1.0 / self.scale_factor) * z, chunk_frames=chunk_frames,
                                          before_chunk=before_chunk)  # the official multiplication by 1/scale

    def decode_unscaled_video(self, z: Tensor, *, chunk_frames: int | None = None,
                              before_chunk: Callable[[], None] | None = None) -> Tensor:
        """Unscaled latents (b, z, t, h, w) (ComfyUI's LATENT) -> (b, out_ch, t, h*f, w*f), as :meth:`decode_video`."""
        self._check(z, "bcthw", self.config.z_channels, "latents")
        b, channels, t, height, width = z.shape
        parts = []
        for start in self._chunks(t, chunk_frames):
            if before_chunk is not None:
                before_chunk()
            clip = z[:, :, start:start + (chunk_frames or t)]
            n = clip.shape[2]
            x = self.decode(clip.permute(0, 2, 1, 3, 4).reshape(b * n, channels, height, width))  # ((b n), c, H, W)
            parts.append(x.reshape(b, n, *x.shape[1:]).permute(0, 2, 1, 3, 4))
        return torch.cat(parts, dim=2)
