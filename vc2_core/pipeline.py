"""Text to video: prompts -> text encoder -> sampler over the UNet -> VAE -> frames.

Defaults are the released VideoCrafter2 inference script's (``scripts/run_text2video.sh``):
the model's size and frame count (320x512, 16 frames), DDIM with 50 steps and eta 1.0,
guidance scale 12, fps condition 28, and the encoding of "" as the unconditional prompt.

Reproducibility: batch item i draws its starting noise and every later sampler noise from its
own CPU generator seeded ``seeds[i]``, so a seed gives the same video on any device and in any
batch. Sampler state stays float32 whatever the UNet's compute dtype.

Memory: with ``offload`` the text encoder and the VAE are on the accelerator only while they
work, classifier-free guidance can run cond and uncond as one UNet call (``batched_cfg``, the
default) or as two (less memory), and the VAE decodes ``decode_chunk_frames`` frames at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import ModelConfig
from .diffusion import SAMPLERS, ContextWindows, GuidedEps, NoiseFn, SamplerStep, sample, seeded_noise, windowed_eps
from .diffusion.samplers import plan_sampling, resolve_eta
from .diffusion.schedule import DiffusionSchedule
from .model import VideoCrafter
from .precision import DTYPES, cast_for_inference

__all__ = ["DTYPES", "GenerationSettings", "cast_for_inference", "generate", "latent_shape", "on_device",
           "pixel_multiple", "sample_latents"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample. ``None`` sizes, frames and fps are the model's own (see :meth:`resolve`)."""

    height: int | None = None
    width: int | None = None
    frames: int | None = None
    fps: int | None = None  # the fps condition of the UNet (fps_cond models) and the output file's rate
    steps: int = 50
    cfg: float = 12.0
    eta: float | None = None  # None: the sampler's default (1.0 for ddim and euler_ancestral)
    sampler: str = "ddim"
    spacing: str | None = None  # None: the sampler's default timestep spacing
    negative_prompt: str = ""  # the unconditional prompt; "" as official
    guidance_rescale: float = 0.0
    batched_cfg: bool = True  # cond and uncond in one UNet call; False: two calls, less memory
    context_frames: int | None = None  # frames per UNet call for long videos; None: all frames at once
    context_overlap: int | None = None  # frames shared by neighbouring windows; None: a quarter of a window
    context_loop: bool = False
    decode_chunk_frames: int | None = 1  # VAE frames per decode call (1 as the official inference)

    def resolve(self, config: ModelConfig) -> GenerationSettings:
        """These settings with the model's defaults filled in, or a ValueError listing every problem."""
        settings = dataclasses.replace(
            self,
            height=config.height if self.height is None else self.height,
            width=config.width if self.width is None else self.width,
            frames=config.frames if self.frames is None else self.frames,
            fps=config.fps if self.fps is None else self.fps,
            context_overlap=(self.context_overlap if self.context_overlap is not None
                             else (self.context_frames or 0) // 4),
        )
        problems = settings.problems(config)
        if problems:
            raise ValueError("invalid generation settings:\n  - " + "\n  - ".join(problems))
        return dataclasses.replace(settings, eta=resolve_eta(settings.sampler, settings.eta))

    def problems(self, config: ModelConfig) -> list[str]:
        """What is wrong with these (resolved) settings for a model of ``config``; empty when they can run."""
        problems: list[str] = []
        multiple = pixel_multiple(config)
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < multiple or value % multiple:
                nearest = max(multiple, round(value / multiple) * multiple) if isinstance(value, int) else multiple
                problems.append(
                    f"{name} {value}: must be a positive multiple of {multiple} for this model (the VAE downsamples "
                    f"by {config.vae.downsample_factor} and the UNet by {multiple // config.vae.downsample_factor}); "
                    f"nearest is {nearest}")
        if not isinstance(self.frames, int) or self.frames < 1:
            problems.append(f"frames {self.frames}: must be at least 1")
        if not isinstance(self.fps, int) or self.fps < 1:
            problems.append(f"fps {self.fps}: must be a positive whole number")
        if not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps {self.steps}: must be at least 1")
        if self.cfg < 0:
            problems.append(f"cfg {self.cfg}: the guidance scale must be >= 0 (1 = no guidance)")
        if not 0 <= self.guidance_rescale <= 1:
            problems.append(f"guidance rescale {self.guidance_rescale}: must be in [0, 1]")
        if self.decode_chunk_frames is not None and self.decode_chunk_frames < 1:
            problems.append(f"decode chunk {self.decode_chunk_frames}: must be at least 1 frame (or None: all)")
        problems += self._sampler_problems(config)
        if not problems:
            problems += self._temporal_problems(config)
        return problems

    def _sampler_problems(self, config: ModelConfig) -> list[str]:
        if self.sampler not in SAMPLERS:
            return [f"sampler {self.sampler!r}: unknown; choose one of {', '.join(SAMPLERS)}"]
        if not isinstance(self.steps, int) or self.steps < 1:
            return []  # already named
        try:  # the rules sample() itself applies: eta, spacing, steps against the grid
            plan_sampling(self.sampler, DiffusionSchedule(config.schedule), self.steps, self.eta, self.spacing)
        except ValueError as error:
            return [f"{self.sampler} with {self.steps} steps: {error}"]
        return []

    def _temporal_problems(self, config: ModelConfig) -> list[str]:
        unet = config.unet
        window = self.frames
        if self.context_frames is not None:
            try:
                ContextWindows(self.context_frames, self.context_overlap, self.context_loop)
            except ValueError as error:
                return [str(error)]
            window = min(self.context_frames, self.frames)
        if unet.use_causal_attention and window != unet.temporal_length:
            return [f"this model's temporal attention is causal and built for exactly {unet.temporal_length} frames; "
                    f"got {window} per UNet call (use --frames {unet.temporal_length} or --context-frames "
                    f"{unet.temporal_length})"]
        if unet.temporal_attention and not unet.temporal_selfatt_only:
            f = config.vae.downsample_factor
            for ds in unet.attention_resolutions:
                pixels = (self.height // f // ds) * (self.width // f // ds)
                if pixels % window:
                    return [f"this model's temporal cross-attention needs the latent pixels of every attention level "
                            f"({pixels} at 1/{ds}) to be divisible by the frames per UNet call ({window})"]
        return []


def pixel_multiple(config: ModelConfig) -> int:
    """Height and width must be multiples of this: the VAE factor times the UNet's 2^(levels - 1)."""
    return config.vae.downsample_factor * 2 ** (len(config.unet.channel_mult) - 1)


def latent_shape(config: ModelConfig, settings: GenerationSettings, batch: int) -> tuple[int, int, int, int, int]:
    """(b, z, t, h, w) of the latents for resolved settings."""
    f = config.vae.downsample_factor
    return batch, config.unet.in_channels, settings.frames, settings.height // f, settings.width // f


@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device, offload: bool) -> Iterator[nn.Module]:
    """``module`` on ``device`` inside the block; with ``offload`` back where it was afterwards."""
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield module
    finally:
        if offload and home != device:
            module.to(home)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def sample_latents(unet: nn.Module, schedule: DiffusionSchedule, context: Tensor, uncond: Tensor | None, x_T: Tensor,
                   settings: GenerationSettings, noise: NoiseFn, *,
                   callback: Callable[[SamplerStep], None] | None = None) -> Tensor:
    """Scaled latents (b, z, t, h, w) float32 from x_T (b, z, t, h, w) on the UNet's device.

    ``settings`` are resolved ones; context (b, L, d) and uncond (b, L, d) (None: no guidance) are the
    text embeddings; ``noise`` draws the samplers' later noise (see :func:`seeded_noise`).
    """
    eps_fn = GuidedEps(unet, context, uncond, settings.cfg, fps=settings.fps, batched=settings.batched_cfg,
                       rescale=settings.guidance_rescale, dtype=_dtype_of(unet))
    if settings.context_frames is not None:
        eps_fn = windowed_eps(eps_fn, ContextWindows(settings.context_frames, settings.context_overlap,
                                                     settings.context_loop))
    return sample(settings.sampler, eps_fn, x_T, schedule, settings.steps, eta=settings.eta,
                  spacing=settings.spacing, noise=noise, callback=callback)


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@torch.no_grad()
def generate(model: VideoCrafter, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings, *,
             device: torch.device | str = "cpu", offload: bool = True,
             callback: Callable[[SamplerStep], None] | None = None) -> Tensor:
    """Videos (b, 3, t, H, W) float32 on the CPU in [-1, 1], one per prompt, item i from seed ``seeds[i]``.

    The networks compute in the dtypes they are in (see :func:`cast_for_inference`); ``device`` is
    where they run. ``callback`` receives every sampler step (progress bars, previews, interrupts).
    """
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts need {len(prompts)} seeds; got {len(seeds)}")
    config = model.config
    settings = settings.resolve(config)
    device = torch.device(device)
    batch = len(prompts)
    guided = settings.cfg != 1.0

    with on_device(model.text_encoder, device, offload) as text_encoder:
        texts = list(prompts) + ([settings.negative_prompt] * batch if guided else [])
        embeddings = text_encoder.encode(texts)  # (b or 2b, 77, width)
    context, uncond = embeddings[:batch], (embeddings[batch:] if guided else None)

    noise = seeded_noise(seeds)
    x_T = noise(torch.Size(latent_shape(config, settings, batch))).to(device)  # float32
    model.unet.to(device)
    latents = sample_latents(model.unet, model.schedule, context, uncond, x_T, settings, noise, callback=callback)

    with on_device(model.vae, device, offload) as vae:
        videos = vae.decode_video(latents.to(_dtype_of(vae)), chunk_frames=settings.decode_chunk_frames)
    return videos.float().cpu()
