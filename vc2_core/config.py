"""Typed configuration of a VideoCrafter model and the presets of the released checkpoints.

Field names are the official YAML names (``configs/inference_t2v_512_v2.0.yaml`` of
AILab-CVC/VideoCrafter), and defaults are the official constructor defaults, so an official
config dict builds the same network: ``UNetConfig(**yaml["unet_config"]["params"])``.
Unknown fields raise ``TypeError`` instead of being swallowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class UNetConfig:
    """The spatio-temporal UNet (official ``lvdm.modules.networks.openaimodel3d.UNetModel``)."""

    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    conv_resample: bool = True
    dims: int = 2  # only 2 exists in the official configs; kept so official dicts load
    context_dim: int | None = None
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    num_heads: int = -1
    num_head_channels: int = -1
    transformer_depth: int = 1
    use_linear: bool = False
    use_checkpoint: bool = False  # gradient checkpointing; never changes the output
    temporal_conv: bool = False
    tempspatial_aware: bool = False
    temporal_attention: bool = True
    temporal_selfatt_only: bool = True
    use_relative_position: bool = True
    use_causal_attention: bool = False
    temporal_length: int | None = None
    use_fp16: bool = False  # official flag; compute dtype is chosen by the caller instead
    addition_attention: bool = False
    use_image_attention: bool = False  # image cross-attention of the i2v models; not part of t2v
    temporal_transformer_depth: int = 1
    fps_cond: bool = False
    # T2V-Turbo's additions (Ji4chenLi/t2v-turbo, their UNetModel arguments); None in the released models,
    # which then have none of these layers or keys:
    time_cond_proj_dim: int | None = None  # width of the guidance-scale embedding fed as timestep_cond
    motion_cond_proj_dim: int | None = None  # width of T2V-Turbo-v2's motion-guidance embedding (motion_cond)

    def __post_init__(self) -> None:
        # a set of downsampling rates; kept in the official order (largest first) so equal configs compare equal
        object.__setattr__(self, "attention_resolutions", tuple(sorted(set(self.attention_resolutions), reverse=True)))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        problems = []
        if self.num_heads == -1 and self.num_head_channels == -1:
            problems.append("set either num_heads or num_head_channels")
        if self.dims != 2:
            problems.append(f"dims={self.dims}: only 2-D spatial layers (dims=2) exist in VideoCrafter")
        if self.use_image_attention:
            problems.append("use_image_attention=True is the image-to-video variant, which vc2 does not implement")
        if self.addition_attention and self.num_head_channels == -1:
            problems.append("addition_attention needs num_head_channels (init_attn uses 8 heads of that width)")
        if (self.use_relative_position or self.use_causal_attention) and self.temporal_attention:
            if self.temporal_length is None:
                problems.append("use_relative_position / use_causal_attention need temporal_length")
        for name in ("time_cond_proj_dim", "motion_cond_proj_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problems.append(f"{name}={value!r}: the width of an embedding, a whole number >= 1 (or None)")
        if self.motion_cond_proj_dim is not None and self.time_cond_proj_dim is None:
            problems.append("motion_cond_proj_dim needs time_cond_proj_dim (the motion condition is combined with "
                            "the guidance embedding)")
        if self.model_channels * self.channel_mult[0] != self.model_channels:
            problems.append(
                f"channel_mult[0]={self.channel_mult[0]}: the official output head assumes the first level keeps "
                "model_channels channels (channel_mult[0] == 1)"
            )
        if problems:
            raise ValueError("invalid UNetConfig: " + "; ".join(problems))

    @property
    def downsample_factor(self) -> int:
        """How much the UNet shrinks its input at the deepest level: 2^(levels - 1)."""
        return 2 ** (len(self.channel_mult) - 1)

    def heads_at(self, channels: int) -> tuple[int, int]:
        """(heads, head_dim) of the attention layers at a level with ``channels`` channels."""
        if self.num_head_channels == -1:
            return self.num_heads, channels // self.num_heads
        return channels // self.num_head_channels, self.num_head_channels


@dataclass(frozen=True)
class VAEConfig:
    """The KL autoencoder (official ``AutoencoderKL`` ``ddconfig`` plus ``embed_dim``)."""

    embed_dim: int = 4
    z_channels: int = 4
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    double_z: bool = True
    resolution: int = 512  # informational in the official code

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        problems = []
        if self.attn_resolutions:
            problems.append("attn_resolutions must be empty (the released VAE has attention in its mid block only)")
        if not self.double_z:
            problems.append("double_z=False is not a KL autoencoder")
        if self.embed_dim != self.z_channels:
            problems.append(f"embed_dim ({self.embed_dim}) must equal z_channels ({self.z_channels})")
        if problems:
            raise ValueError("invalid VAEConfig: " + "; ".join(problems))

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_official(cls, params: dict) -> VAEConfig:
        """From the official ``first_stage_config.params`` dict (``embed_dim`` + ``ddconfig``)."""
        return cls(embed_dim=params["embed_dim"], **params["ddconfig"])


@dataclass(frozen=True)
class TextEncoderConfig:
    """The OpenCLIP text tower (``open_clip`` ``text_cfg``) and which layer feeds the UNet."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    vocab_size: int = 49408
    context_length: int = 77
    mlp_ratio: float = 4.0
    embed_dim: int = 1024  # text_projection width; stored in checkpoints, unused for t2v
    layer: str = "penultimate"  # "penultimate" (both released configs) or "last"

    def __post_init__(self) -> None:
        if self.layer not in ("penultimate", "last"):
            raise ValueError(f"invalid TextEncoderConfig: layer={self.layer!r}, expected 'penultimate' or 'last'")
        if self.width % self.heads:
            raise ValueError(f"invalid TextEncoderConfig: width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class ScheduleConfig:
    """The diffusion schedule (official ``LatentDiffusion`` parameters)."""

    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    use_scale: bool = False
    scale_a: float = 1.0
    scale_b: float = 0.3  # official default; VideoCrafter2 sets 0.7
    mid_step: int = 400
    fix_scale_bug: bool = False  # False: scale_arr is timesteps + mid_step long, as released

    @classmethod
    def from_official(cls, params: dict) -> ScheduleConfig:
        """From the official ``LatentDiffusion`` params dict; its non-schedule entries are not read."""
        if params.get("beta_schedule", "linear") != "linear":
            raise ValueError(f"beta_schedule {params['beta_schedule']!r}: VideoCrafter uses 'linear' (scaled-linear)")
        if params.get("parameterization", "eps") != "eps":
            raise ValueError(f"parameterization {params['parameterization']!r}: VideoCrafter predicts eps")
        if params.get("given_betas") is not None:
            raise ValueError("given_betas is not supported; VideoCrafter derives betas from linear_start/linear_end")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in params.items() if key in names})


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a full text-to-video model, plus its released sampling defaults."""

    name: str
    unet: UNetConfig
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    scale_factor: float = 0.18215
    height: int = 320
    width: int = 512
    frames: int = 16
    fps: int = 28

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def pixel_multiple(config: ModelConfig) -> int:
    """Height and width must be multiples of this: the VAE factor times the UNet's 2^(levels - 1)."""
    return config.vae.downsample_factor * config.unet.downsample_factor


def size_problems(config: ModelConfig, height: object, width: object) -> list[str]:
    """What is wrong with a video size for a model of ``config``, one line per dimension; empty when it fits."""
    multiple = pixel_multiple(config)
    problems = []
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < multiple or value % multiple:
            nearest = max(multiple, round(value / multiple) * multiple) if isinstance(value, int) else multiple
            problems.append(
                f"{name} {value}: must be a positive multiple of {multiple} for this model (the VAE downsamples "
                f"by {config.vae.downsample_factor} and the UNet by {config.unet.downsample_factor}); "
                f"nearest is {nearest}")
    return problems


def _full_unet(**flags) -> UNetConfig:
    return UNetConfig(
        in_channels=4,
        out_channels=4,
        model_channels=320,
        attention_resolutions=(4, 2, 1),
        num_res_blocks=2,
        channel_mult=(1, 2, 4, 4),
        num_head_channels=64,
        transformer_depth=1,
        context_dim=1024,
        use_linear=True,
        use_checkpoint=True,
        temporal_attention=True,
        temporal_selfatt_only=True,
        use_causal_attention=False,
        temporal_length=16,
        addition_attention=True,
        **flags,
    )


def _vc2_512() -> ModelConfig:
    return ModelConfig(
        name="vc2-512",
        unet=_full_unet(temporal_conv=True, use_relative_position=False, fps_cond=True),
        schedule=ScheduleConfig(use_scale=True, scale_b=0.7),
    )


def _vc1_512() -> ModelConfig:
    return ModelConfig(
        name="vc1-512",
        unet=_full_unet(temporal_conv=False, use_relative_position=True, fps_cond=False),
        schedule=ScheduleConfig(use_scale=False),
    )


def _vc1_1024() -> ModelConfig:
    return ModelConfig(
        name="vc1-1024",
        unet=_full_unet(temporal_conv=False, use_relative_position=True, fps_cond=True),
        schedule=ScheduleConfig(use_scale=True, fix_scale_bug=True),  # scale_b 0.3 (official default)
        height=576,
        width=1024,
    )


def _tiny() -> ModelConfig:
    """The VideoCrafter2 architecture at toy size, for tests, the demo and CI."""
    return ModelConfig(
        name="tiny",
        unet=UNetConfig(
            in_channels=4,
            out_channels=4,
            model_channels=32,
            attention_resolutions=(2, 1),
            num_res_blocks=1,
            channel_mult=(1, 2),
            num_head_channels=8,
            transformer_depth=1,
            context_dim=32,
            use_linear=True,
            use_checkpoint=False,
            temporal_conv=True,
            temporal_attention=True,
            temporal_selfatt_only=True,
            use_relative_position=False,
            use_causal_attention=False,
            temporal_length=8,
            addition_attention=True,
            fps_cond=True,
        ),
        vae=VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1),
        text=TextEncoderConfig(width=32, layers=3, heads=4, embed_dim=32),
        schedule=ScheduleConfig(use_scale=True, scale_b=0.7),
        height=64,
        width=64,
        frames=8,
        fps=8,
    )


def _tiny_512() -> ModelConfig:
    """VideoCrafter2-512's levels at toy width: four UNet levels, an 8x VAE, so the released defaults
    (320x512, 16 frames) and every size rule of the real model apply; the end-to-end ComfyUI runs use it.
    No attention at the full latent resolution (VC2 has it there), to keep a CPU step near a second."""
    tiny = _tiny()
    return dataclasses.replace(
        tiny,
        name="tiny-512",
        unet=dataclasses.replace(tiny.unet, channel_mult=(1, 1, 2, 2), attention_resolutions=(4, 2),
                                 num_head_channels=16, temporal_length=16),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1),
        height=320,
        width=512,
        frames=16,
        fps=28,
    )


_PRESETS = {"vc2-512": _vc2_512, "vc1-512": _vc1_512, "vc1-1024": _vc1_1024, "tiny": _tiny, "tiny-512": _tiny_512}
PRESET_NAMES = tuple(_PRESETS)


def preset(name: str) -> ModelConfig:
    """The config of a released checkpoint (``vc2-512``, ``vc1-512``, ``vc1-1024``) or ``tiny``."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}") from None
