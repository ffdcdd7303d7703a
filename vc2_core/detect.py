"""Recognise a VideoCrafter state dict: its family, its full config, and what is wrong with its keys.

Families are matched by building each released architecture on the meta device and comparing
keys and shapes. Anything else with a VideoCrafter layout is a "custom" size whose config is
inferred from the shapes and then verified the same way, so a wrong guess is reported, never
loaded half-way.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch

from .config import PRESET_NAMES, ModelConfig, ScheduleConfig, UNetConfig, preset
from .diffusion.schedule import DiffusionSchedule
from .keys import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from .messages import first_few
from .model import split_official_state_dict
from .modules import UNetModel
from .text import TextEncoder
from .vae import VideoVAE

Tensor = torch.Tensor
RELEASED = ("vc2-512", "vc1-512", "vc1-1024")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not a VideoCrafter model; the message says why."""


@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file [a, b] vs model [c, d]"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        return "; ".join(f"{len(keys)} {label}: {first_few(keys, limit)}"
                         for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                                             ("with another shape", self.mismatched)) if keys)


def compare_keys(found: dict[str, Tensor], expected: dict[str, Tensor]) -> KeyReport:
    """Keys of ``found`` against ``expected`` (real or meta tensors): missing, unexpected, other shapes."""
    return KeyReport(
        missing=[k for k in expected if k not in found],
        unexpected=[k for k in found if k not in expected],
        mismatched=[f"{k}: file {list(found[k].shape)} vs model {list(expected[k].shape)}"
                    for k in expected if k in found and found[k].shape != expected[k].shape],
    )


@dataclass(frozen=True)
class CheckpointInfo:
    family: str  # a preset name, or "custom"
    config: ModelConfig
    notes: tuple[str, ...] = ()  # what was tolerated or re-derived


@dataclass(frozen=True)
class RecognisedCheckpoint:
    """A state dict split into its networks' weights, and what they were recognised as."""

    parts: dict[str, dict[str, Tensor]]  # "unet", "vae", "text", "top": split_official_state_dict (no prefixes)
    info: CheckpointInfo


def check_videocrafter(parts: dict[str, dict[str, Tensor]]) -> None:
    """Raise CheckpointError naming what is missing when the parts are not a VideoCrafter model."""
    unet, text, vae = parts["unet"], parts["text"], parts["vae"]
    problems = []
    if not unet:
        problems.append(f"no UNet ({UNET_PREFIX}* keys)")
    elif not any(k.startswith("init_attn.") or ".temopral_conv." in k or k.startswith("middle_block.2.norm")
                 for k in unet):
        problems.append(f"its UNet has no temporal layers ({UNET_PREFIX}init_attn.*, temporal transformers or "
                        "temopral_conv): an image model")
    if "model.token_embedding.weight" not in text:
        sd1 = any(k.startswith("transformer.text_model.") for k in text)
        problems.append(f"no OpenCLIP text encoder ({TEXT_PREFIX}model.token_embedding.weight)"
                        + (": it has Stable Diffusion 1.x's CLIP-L text encoder instead" if sd1 else ""))
    if "encoder.conv_in.weight" not in vae:
        problems.append(f"no VAE ({VAE_PREFIX}encoder.conv_in.weight)")
    if problems:
        raise CheckpointError("not a VideoCrafter checkpoint: " + "; ".join(problems))


def meta_unet_state(config: UNetConfig) -> dict[str, Tensor]:
    with torch.device("meta"):
        return UNetModel(config).state_dict()


def recognise(state: dict[str, Tensor], config: ModelConfig | None = None) -> RecognisedCheckpoint:
    """The parts of an official-layout state dict (schedule buffers optional) and their family, config, notes.

    ``config`` (e.g. from the metadata of a file vc2 wrote) is verified instead of guessed. The state
    dict is split once, and each architecture tried is built once on the meta device.
    """
    parts = split_official_state_dict(state)
    check_videocrafter(parts)
    if config is None:
        family, config = _match_family(parts["unet"], parts["top"])
    else:
        family = config.name if config.name in PRESET_NAMES else "custom"
        _verify_unet(parts["unet"], config.unet, family)
    config = _component_configs(config, parts)
    notes = tuple(_schedule_notes(parts["top"], config.schedule))
    return RecognisedCheckpoint(parts, CheckpointInfo(family, config, notes))


def _verify_unet(unet: dict[str, Tensor], config: UNetConfig, family: str) -> None:
    report = compare_keys(unet, meta_unet_state(config))
    if report:
        raise CheckpointError(f"its UNet does not match the {family} architecture: {report.describe()}")


def _match_family(unet: dict[str, Tensor], top: dict[str, Tensor]) -> tuple[str, ModelConfig]:
    """The released family whose UNet has exactly these keys and shapes, else the inferred custom size."""
    try:
        inferred = infer_unet_config(unet)
    except (KeyError, IndexError, ValueError) as error:
        inferred, failure = None, error
    likely = _schedule_family(inferred) if inferred is not None else None
    closest = []
    for name in sorted(RELEASED, key=lambda name: name != likely):  # the likely family first
        if inferred is not None and _differs_in_read_shapes(inferred, preset(name).unet):
            continue
        report = compare_keys(unet, meta_unet_state(preset(name).unet))
        if not report:
            return name, preset(name)
        closest.append((len(report.missing) + len(report.unexpected) + len(report.mismatched), name, report))
    if inferred is None:
        _, name, report = min(closest)
        raise CheckpointError(f"a VideoCrafter layout of unknown size ({failure}); against the closest released "
                              f"model, {name}: {report.describe()}")
    _verify_unet(unet, inferred, "custom")
    like = preset(likely)  # the released model with the same temporal design
    return "custom", like.replace(name="custom", unet=inferred, schedule=schedule_from_buffers(top, like.schedule))


def _differs_in_read_shapes(inferred: UNetConfig, released: UNetConfig) -> bool:
    """True when a released UNet cannot have the file's keys and shapes, without building it: these fields
    are read off tensors every UNet has (input_blocks.0.0, out.2, the middle block's cross-attention)."""
    fields = ("in_channels", "model_channels", "out_channels", "context_dim")
    return any(getattr(inferred, name) != getattr(released, name) for name in fields)


def _schedule_family(unet: UNetConfig) -> str:
    if unet.use_relative_position:
        return "vc1-1024" if unet.fps_cond else "vc1-512"
    return "vc2-512"


def schedule_from_buffers(top: dict[str, Tensor], fallback: ScheduleConfig) -> ScheduleConfig:
    """The latent-scale settings a stored ``scale_arr`` implies (betas stay the family's)."""
    scale = top.get("scale_arr")
    if scale is None:
        # a file with schedule buffers but no scale_arr was saved by a model without the latent scale
        return dataclasses.replace(fallback, use_scale=fallback.use_scale and "betas" not in top)
    if scale.ndim != 1 or scale.shape[0] < fallback.timesteps:
        raise CheckpointError(f"scale_arr has shape {list(scale.shape)}; expected at least {fallback.timesteps} values")
    values = scale.double()
    scale_b = values[fallback.timesteps - 1].item()
    plateau = int((values - scale_b).abs().lt(1e-6).nonzero()[0])  # first index on the constant tail
    return ScheduleConfig(timesteps=fallback.timesteps, linear_start=fallback.linear_start,
                          linear_end=fallback.linear_end, use_scale=True, scale_a=values[0].item(),
                          scale_b=round(scale_b, 6), mid_step=plateau + 1,
                          fix_scale_bug=scale.shape[0] == fallback.timesteps)


def _component_configs(config: ModelConfig, parts: dict[str, dict[str, Tensor]]) -> ModelConfig:
    """Text encoder and VAE configs: the given ones when the shapes agree, else inferred from the shapes."""
    text = _component_config(parts["text"], config.text, TextEncoder, "text encoder (cond_stage_model.*)")
    vae = _component_config(parts["vae"], config.vae, VideoVAE, "VAE (first_stage_model.*)")
    return config.replace(text=text, vae=vae)


def _component_config(state: dict[str, Tensor], given, network: type[TextEncoder] | type[VideoVAE], what: str):
    """``given`` when a meta ``network`` of it has the keys and shapes of ``state``, else the inferred config."""
    with torch.device("meta"):
        if not compare_keys(state, network(given).official_state_dict()):
            return given
        inferred = network.config_from_official_state_dict(state)
        report = compare_keys(state, network(inferred).official_state_dict())
    if report:
        raise CheckpointError(f"its {what} has an unknown layout: {report.describe()}")
    return inferred


def _schedule_notes(top: dict[str, Tensor], schedule: ScheduleConfig):
    """How the stored schedule buffers compare with the derived ones (which are used either way)."""
    derived = DiffusionSchedule(schedule).official_state_dict()
    missing = [k for k in derived if k not in top]
    if missing:
        yield f"schedule buffers re-derived (not in the file): {', '.join(missing)}"
    for key, value in top.items():
        if key not in derived:
            yield (f"{key} stored but this model has no latent scale; ignored" if key == "scale_arr"
                   else f"unexpected top-level entry {key} ignored")
            continue
        ours = derived[key]
        n = min(ours.shape[0], value.shape[0] if value.ndim == 1 else 0, schedule.timesteps)
        if value.ndim != 1 or n == 0 or not torch.allclose(value[:n].float(), ours[:n], rtol=1e-4, atol=1e-6):
            yield f"stored {key} differs from the derived schedule; the derived one is used"
        elif key == "scale_arr" and value.shape != ours.shape:
            yield f"scale_arr stored with {value.shape[0]} entries (derived {ours.shape[0]}); equal where read"


_UPSAMPLER = re.compile(r"output_blocks\.(\d+)\.[1-9]\d*\.(conv|in_layers)\.")


def infer_unet_config(unet: dict[str, Tensor]) -> UNetConfig:
    """A UNetConfig read off the shapes of a UNet state dict (sizes other than the released ones).

    Not stored in weights, so taken from the released models: the head width when there is no
    init_attn or relative-position table (64), temporal_length when nothing depends on it (16),
    causal attention (off). The caller verifies the result against the keys.
    """
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in unet)

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in unet if k.startswith(prefix)})

    mc, in_channels = unet["input_blocks.0.0.weight"].shape[:2]
    outputs = count("output_blocks.")
    upsamplers = sorted({int(m[1]) for k in unet if (m := _UPSAMPLER.match(k))})
    num_res_blocks = upsamplers[0] if upsamplers else outputs - 1
    levels = outputs // (num_res_blocks + 1)
    firsts = [1 + level * (num_res_blocks + 1) for level in range(levels)]
    spatial, temporal = "middle_block.1", "middle_block.2"
    temporal_attention = has(f"{temporal}.norm.")
    relpos = next((k for k in unet if k.endswith("relative_position_k.embeddings_table")), None)
    head_dim, temporal_length = 64, 16
    if has("init_attn."):
        head_dim = unet["init_attn.0.proj_in.weight"].shape[0] // 8
    if relpos is not None:
        rows, head_dim = unet[relpos].shape
        temporal_length = (rows - 1) // 2
    tconv = next((k for k in unet if k.endswith("temopral_conv.conv1.2.weight")), None)
    attn2 = f"{temporal}.transformer_blocks.0.attn2"
    return UNetConfig(
        in_channels=in_channels,
        model_channels=mc,
        out_channels=unet["out.2.weight"].shape[0],
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(2**level for level, first in enumerate(firsts) if has(f"input_blocks.{first}.1.")),
        channel_mult=tuple(unet[f"input_blocks.{first}.0.in_layers.2.weight"].shape[0] // mc for first in firsts),
        resblock_updown=levels > 1 and has(f"input_blocks.{firsts[0] + num_res_blocks}.0.in_layers."),
        num_head_channels=head_dim,
        transformer_depth=count(f"{spatial}.transformer_blocks."),
        temporal_transformer_depth=count(f"{temporal}.transformer_blocks.") if temporal_attention else 1,
        context_dim=unet[f"{spatial}.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        use_linear=unet[f"{spatial}.proj_in.weight"].ndim == 2,
        use_scale_shift_norm=unet["input_blocks.1.0.emb_layers.1.weight"].shape[0]
        == 2 * unet["input_blocks.1.0.in_layers.2.weight"].shape[0],
        temporal_conv=tconv is not None,
        tempspatial_aware=tconv is not None and unet[tconv].shape[-1] == 3,
        temporal_attention=temporal_attention,
        temporal_selfatt_only=not temporal_attention
        or unet[f"{attn2}.to_k.weight"].shape[1] == unet[f"{attn2}.to_q.weight"].shape[1],
        use_relative_position=relpos is not None,
        temporal_length=temporal_length,
        addition_attention=has("init_attn."),
        fps_cond=has("fps_embedding."),
        use_checkpoint=True,
    )
