"""The training config: one file (YAML or TOML) describes a run; every field is documented in docs/training.md.

Sections and their defaults (``None`` means "the model's own" for sizes, frames and fps):

    run:        output_dir, seed, max_steps, mixed_precision, nan, cpu
    model:      checkpoint | preset, spatial_init, gradient_checkpointing, attention
    stage:      name, lora_rank, lora_alpha, lora_targets
    videos:     index, root, frames, height, width, frame_stride, fps, crop, batch_size
    images:     index, root, height, width, crop, fps, batch_size, ratio, mode
    data:       caption_dropout, num_workers, cache
    optim:      lr, betas, weight_decay, eps, warmup_steps, schedule, max_grad_norm,
                gradient_accumulation, ema_decay, snr_weight_cap
    checkpoint: every, keep_last, formats
    validation: every, prompts, seeds, steps, cfg, sampler, eta, frames, height, width, fps
    log:        every, tensorboard

Unknown sections or fields are errors (with the nearest known name), so a typo never silently
falls back to a default. Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
import yaml

from ..attention import backend_names
from .stages import DataKind, get_stage


class ConfigError(ValueError):
    """A training config that cannot run; the message names the field."""


@dataclass(frozen=True)
class RunSection:
    output_dir: str = "runs/vc2"
    seed: int = 0
    max_steps: int = 1000
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    nan: str = "stop"  # what a non-finite loss does: "stop" (the last checkpoint stays intact) | "skip" the step
    cpu: bool = False  # train on the CPU even when an accelerator is present


@dataclass(frozen=True)
class ModelSection:
    checkpoint: str | None = None  # official-layout .safetensors / .ckpt to start from
    preset: str | None = None  # or: random weights of this preset (tests, demos)
    spatial_init: str | None = None  # an image-model checkpoint (SD 2.1 layout) for the spatial weights
    gradient_checkpointing: bool | None = None  # None: the checkpoint's own use_checkpoint
    attention: str | None = None  # None: VC2_ATTENTION from the environment, else auto


@dataclass(frozen=True)
class StageSection:
    name: str = "spa-dir"
    lora_rank: int = 4
    lora_alpha: float | None = None  # None: the rank (scale 1)
    lora_targets: str = "attention"

    def alpha(self) -> float:
        """The LoRA alpha: ``lora_alpha``, or the rank when unset (scale alpha / rank = 1)."""
        return self.lora_alpha if self.lora_alpha is not None else float(self.lora_rank)


@dataclass(frozen=True)
class VideoSection:
    index: str | None = None  # CSV / JSONL index, or a folder of videos with .txt captions
    root: str | None = None  # where relative paths of the index point (default: the index's folder)
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    frame_stride: tuple[int, int] = (1, 4)  # drawn per clip; the fps condition is source fps / stride
    fps: float = 25.0  # the source frame rate when neither the index nor the file says
    crop: str = "center"
    batch_size: int = 1  # clips per process per micro-batch


@dataclass(frozen=True)
class ImageSection:
    index: str | None = None  # folder of images with .txt captions, or a JSONL / CSV index
    root: str | None = None
    height: int | None = None
    width: int | None = None
    crop: str = "center"
    fps: int | None = None  # the fps condition of image batches
    batch_size: int = 4  # images (mode "frame") or pseudo-clips (mode "pack") per process per micro-batch
    ratio: float = 0.25  # with videos too: the fraction of micro-batches that are images
    mode: str = "frame"  # "frame": each image is a one-frame clip; "pack": `frames` images form one pseudo-clip


@dataclass(frozen=True)
class DataSection:
    caption_dropout: float = 0.05  # the lvdm configs' uncond_prob
    num_workers: int = 2
    cache: str | None = None  # a latent cache directory written by `vc2 train --config F --build-cache`


@dataclass(frozen=True)
class OptimSection:
    lr: float = 5e-5  # the paper's learning rate for every training task
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01  # torch.optim.AdamW's default, as the lvdm code uses it
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" | "cosine" (to 0 at max_steps, after the warm-up)
    max_grad_norm: float | None = 0.5  # the lvdm configs' gradient_clip_val; None: no clipping
    gradient_accumulation: int = 1
    ema_decay: float | None = None  # EMA of the trainable parameters; None: off (as the lvdm configs)
    snr_weight_cap: float | None = None  # weight each sample's MSE by clamp(1/SNR(t), 1, cap); None: off (lvdm)


@dataclass(frozen=True)
class CheckpointSection:
    every: int = 1000
    keep_last: int = 3
    formats: tuple[str, ...] = ("safetensors",)  # add "ckpt" for a {"state_dict": ...} file the official code loads


@dataclass(frozen=True)
class ValidationSection:
    every: int = 0  # 0: no validation videos
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()  # one per prompt; default 0, 1, 2, ...
    steps: int = 25
    cfg: float = 12.0
    sampler: str = "ddim"
    eta: float | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: int | None = None


@dataclass(frozen=True)
class LogSection:
    every: int = 10
    tensorboard: bool = True


@dataclass(frozen=True)
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    stage: StageSection = field(default_factory=StageSection)
    videos: VideoSection = field(default_factory=VideoSection)
    images: ImageSection = field(default_factory=ImageSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, section: str, **changes) -> TrainConfig:
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


_PATH_FIELDS = {("model", "checkpoint"), ("model", "spatial_init"), ("videos", "index"), ("videos", "root"),
                ("images", "index"), ("images", "root"), ("data", "cache"), ("run", "output_dir")}


def load_config(path: str | Path, overrides: dict[str, dict] | None = None) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) training config, check it, resolve relative paths."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{path}: a training config is .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error})") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for section, changes in (overrides or {}).items():
        raw.setdefault(section, {}).update(changes)
    config = config_from_dict(raw, where=str(path))
    return _resolve_paths(config, path.parent)


def config_from_dict(raw: dict, where: str = "config") -> TrainConfig:
    """A checked TrainConfig from plain data (what a YAML/TOML file holds)."""
    sections = {}
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"{where}: unknown section {name!r}{_suggest(name, known)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: section {name!r} must be a mapping of fields")
        sections[name] = _build(known[name].default_factory, value, f"{where}: {name}")
    config = TrainConfig(**sections)
    problems = check_config(config)
    if problems:
        raise ConfigError(f"{where}:\n  - " + "\n  - ".join(problems))
    return config


def _build(cls: type, values: dict, where: str) -> object:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{where}: unknown field {name!r}{_suggest(name, fields)}")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: object, hint: object, where: str) -> object:
    """``value`` checked against a field's type (int, float, str, bool, optional, tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {hint}")  # a programming error in this module


def _suggest(name: str, known: dict) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"


def _resolve_paths(config: TrainConfig, base: Path) -> TrainConfig:
    for section, name in _PATH_FIELDS:
        value = getattr(getattr(config, section), name)
        if value is not None and not Path(value).is_absolute():
            config = config.replace(section, **{name: str(base / value)})
    return config


def check_config(config: TrainConfig) -> list[str]:
    """Every problem of a config that can be seen without reading data or weights."""
    problems = []
    run, model, optim, images, videos = config.run, config.model, config.optim, config.images, config.videos

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(run.max_steps >= 1, "run.max_steps must be at least 1")
    need(run.mixed_precision in ("no", "fp16", "bf16"), "run.mixed_precision must be no, fp16 or bf16")
    need(run.nan in ("stop", "skip"), "run.nan must be stop or skip")
    need((model.checkpoint is None) != (model.preset is None),
         "model: give exactly one of checkpoint (weights to start from) or preset (random weights)")
    need(model.attention is None or model.attention in backend_names(),
         f"model.attention must be one of {', '.join(backend_names())}")
    try:
        stage = get_stage(config.stage.name)
    except ValueError as error:
        problems.append(f"stage.name: {error}")
        stage = None
    need(config.stage.lora_rank >= 1, "stage.lora_rank must be at least 1")
    need(videos.batch_size >= 1 and images.batch_size >= 1, "batch sizes must be at least 1")
    need(videos.frame_stride[0] >= 1 and videos.frame_stride[0] <= videos.frame_stride[1],
         "videos.frame_stride must be [min, max] with 1 <= min <= max")
    need(0.0 <= images.ratio <= 1.0, "images.ratio must be in [0, 1]")
    need(images.mode in ("frame", "pack"), "images.mode must be frame or pack")
    need(videos.crop in ("center", "random") and images.crop in ("center", "random"), "crop must be center or random")
    need(0.0 <= config.data.caption_dropout <= 1.0, "data.caption_dropout must be in [0, 1]")
    need(config.data.num_workers >= 0, "data.num_workers must be >= 0")
    need(optim.lr > 0, "optim.lr must be positive")
    need(optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
    need(optim.schedule in ("constant", "cosine"), "optim.schedule must be constant or cosine")
    need(optim.max_grad_norm is None or optim.max_grad_norm > 0, "optim.max_grad_norm must be positive (or null)")
    need(optim.gradient_accumulation >= 1, "optim.gradient_accumulation must be at least 1")
    need(optim.ema_decay is None or 0.0 < optim.ema_decay < 1.0, "optim.ema_decay must be in (0, 1) (or null)")
    need(optim.snr_weight_cap is None or optim.snr_weight_cap >= 1.0, "optim.snr_weight_cap must be >= 1 (or null)")
    need(config.checkpoint.every >= 1 and config.checkpoint.keep_last >= 1,
         "checkpoint.every and checkpoint.keep_last must be at least 1")
    need(set(config.checkpoint.formats) <= {"safetensors", "ckpt"} and bool(config.checkpoint.formats),
         "checkpoint.formats: choose from safetensors, ckpt")
    val = config.validation
    need(val.every >= 0, "validation.every must be >= 0")
    need(val.every == 0 or bool(val.prompts), "validation.every > 0 needs validation.prompts")
    need(not val.seeds or len(val.seeds) == len(val.prompts), "validation.seeds: one seed per prompt")
    need(config.log.every >= 1, "log.every must be at least 1")
    if stage is not None and config.data.cache is None:  # a cache holds its own data (checked when opened)
        need(DataKind.VIDEOS not in stage.data or videos.index is not None, f"stage {stage.name} trains on "
             "videos: set videos.index" + (" (images.index adds joint image training)"
                                           if DataKind.IMAGES in stage.data else ""))
        need(stage.data != {DataKind.IMAGES} or images.index is not None, f"stage {stage.name} trains on images: "
             "set images.index")
    return problems
