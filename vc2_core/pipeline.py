"""Text to video: prompts -> text encoder -> sampler over the UNet -> VAE -> frames.

Defaults are the released VideoCrafter2 inference script's (``scripts/run_text2video.sh``):
the model's size and frame count (320x512, 16 frames), DDIM with 50 steps and eta 1.0,
guidance scale 12, fps condition 28, and the encoding of "" as the unconditional prompt.

Reproducibility: batch item i draws its starting noise and every later sampler noise from its
own CPU generator seeded ``seeds[i]``, so a seed gives the same video on any device and in any
batch. Sampler state stays float32 whatever the UNet's compute dtype.

T2V-Turbo (``sampler="t2v-turbo"``, on a model from :func:`vc2_core.t2v_turbo.with_turbo`): the
guidance scale ``cfg`` is an input of their distilled UNet (one call per step, no unconditional
prompt); their defaults are 4 steps and a scale of 7.5.

Memory: with ``offload`` the text encoder and the VAE are on the accelerator only while they
work, classifier-free guidance can run cond and uncond as one UNet call (``batched_cfg``, the
default) or as two (less memory), and the VAE decodes ``decode_chunk_frames`` frames at a time.
:func:`low_memory` sets both for the least memory (the low-memory mode of ``vc2 sample --low-memory``).

Speed: ``compile`` and ``channels_last`` run the same UNet faster (:mod:`vc2_core.speedups`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .config import ModelConfig, pixel_multiple, size_problems
from .diffusion import SAMPLERS, ContextWindows, GuidedEps, NoiseFn, SamplerStep, seeded_noise, windowed_eps
from .diffusion.registry import SamplingPlan, plan_sampling
from .diffusion.schedule import DiffusionSchedule
from .diffusion.step_cache import CachedGuidance, StepCache, step_cache_problems
from .model import VideoCrafter
from .precision import DTYPES, cast_for_inference
from .speedups import COMPILE_BACKENDS, prepared_unet
from .t2v_turbo.conditioning import TurboEps

__all__ = ["DTYPES", "GenerationSettings", "ResolvedSettings", "cast_for_inference", "generate", "latent_shape",
           "low_memory", "on_device", "pixel_multiple", "sample_latents"]

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
    # how the UNet runs (same values within float rounding; vc2_core.speedups): torch.compile backend
    # ("inductor"; None: eager) and channels_last convolutions (False: the weights are stored NCHW)
    compile: str | None = None
    channels_last: bool = False
    # T2V-Turbo-v2's motion guidance (their motion_gs; 0.05 in their release) in the top motion_share of the
    # timesteps (their percentage, 0.5); None: off (T2V-Turbo v1, and v2 without it). Needs a motion-condition UNet.
    motion_scale: float | None = None
    motion_share: float = 0.5
    step_cache: StepCache | None = None  # reuse between sampler steps (diffusion.step_cache.PRESETS); None: off

    def resolve(self, config: ModelConfig) -> ResolvedSettings:
        """These settings with the model's defaults filled in and the sampling plan made, or a ValueError
        listing every problem. The plan is made once, on the schedule every model of ``config`` has."""
        settings = dataclasses.replace(
            self,
            height=config.height if self.height is None else self.height,
            width=config.width if self.width is None else self.width,
            frames=config.frames if self.frames is None else self.frames,
            fps=config.fps if self.fps is None else self.fps,
            context_overlap=(self.context_overlap if self.context_overlap is not None
                             else (self.context_frames or 0) // 4),
        )
        plan, problems = settings._check(config)
        if problems:
            raise ValueError("invalid generation settings:\n  - " + "\n  - ".join(problems))
        values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(GenerationSettings)}
        return ResolvedSettings(**(values | {"eta": plan.eta}), config=config, plan=plan)

    def resolve_for_latents(self, config: ModelConfig, shape: Sequence[int]) -> ResolvedSettings:
        """Resolved settings for sampling latents of ``shape`` (b, z, t, h, w): frames and size are theirs."""
        _, _, frames, height, width = shape
        f = config.vae.downsample_factor  # the pixel size the latents decode to (latent_shape's inverse)
        return dataclasses.replace(self, frames=frames, height=height * f, width=width * f).resolve(config)

    def problems(self, config: ModelConfig) -> list[str]:
        """What is wrong with these (resolved) settings for a model of ``config``; empty when they can run."""
        return self._check(config)[1]

    def _check(self, config: ModelConfig) -> tuple[SamplingPlan | None, list[str]]:
        """(the sampling plan, or None when it cannot be made; every problem)."""
        problems = size_problems(config, self.height, self.width)
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
        if self.compile is not None and self.compile not in COMPILE_BACKENDS:
            problems.append(f"compile {self.compile!r}: not a torch.compile backend here; choose one of "
                            f"{', '.join(COMPILE_BACKENDS)} (or None: eager)")
        plan, problem = self._plan(config)
        problems += [problem] if problem else []
        problems += self._motion_problems(config)
        if self.step_cache is not None and plan is not None:
            problems += step_cache_problems(self.step_cache, config.unet, plan.sampler)
        if not problems:
            problems += self._temporal_problems(config)
        return plan, problems

    def _plan(self, config: ModelConfig) -> tuple[SamplingPlan | None, str | None]:
        """The sampling plan, or what stops it (the rules sample() itself applies: eta, spacing, grid)."""
        if self.sampler not in SAMPLERS:
            return None, f"sampler {self.sampler!r}: unknown; choose one of {', '.join(SAMPLERS)}"
        if not isinstance(self.steps, int) or self.steps < 1:
            return None, None  # already named
        try:
            plan = plan_sampling(self.sampler, DiffusionSchedule(config.schedule), self.steps, self.eta, self.spacing)
        except ValueError as error:
            return None, f"{self.sampler} with {self.steps} steps: {error}"
        if plan.sampler.guidance_in_unet and config.unet.time_cond_proj_dim is None:
            return None, (f"sampler {self.sampler}: samples T2V-Turbo's distilled UNet, which takes the guidance "
                          "scale as an input; this model has none (give their weights: vc2 sample --lora unet_lora.pt)")
        return plan, None

    def _motion_problems(self, config: ModelConfig) -> list[str]:
        """T2V-Turbo-v2's motion guidance: only with the t2v-turbo sampler, on a UNet with the motion condition."""
        if not 0.0 <= self.motion_share <= 1.0:
            return [f"motion share {self.motion_share}: a share of the timesteps, 0 to 1"]
        if self.motion_scale is None:
            return []
        if self.sampler != "t2v-turbo":
            return [f"motion scale: T2V-Turbo-v2's motion guidance needs --sampler t2v-turbo, not {self.sampler}"]
        if config.unet.motion_cond_proj_dim is None:
            return ["motion scale: this UNet has no motion condition (motion_cond_proj); it comes with "
                    "T2V-Turbo-v2 weights that have one (T2V-Turbo v1's unet_lora.pt does not)"]
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


@dataclass(frozen=True)
class ResolvedSettings(GenerationSettings):
    """Settings checked against a model config, defaults filled, with the sampling plan they run."""

    config: ModelConfig = field(kw_only=True, repr=False, compare=False)  # what they were resolved for
    plan: SamplingPlan = field(kw_only=True, repr=False, compare=False)  # the sampler, its eta and steps

    def resolve(self, config: ModelConfig) -> ResolvedSettings:
        """Themselves when already resolved for ``config`` (nothing is checked or planned twice)."""
        return self if config == self.config else super().resolve(config)


def low_memory(settings: GenerationSettings) -> GenerationSettings:
    """``settings`` in the low-memory mode: the conditional and unconditional UNet passes as two calls
    (half the activations) and the VAE decoding one frame at a time. Run them with ``generate(...,
    offload=True)`` (its default: the text encoder and the VAE are on the accelerator only while they work).

    Attention needs no slicing for it: every backend ``auto`` picks (SDPA's flash / memory-efficient
    kernels, the Triton temporal kernel) keeps memory linear in the sequence; only ``math``, the fp32
    reference, holds the (batch, heads, L, L) logits (docs/benchmarks.md).
    """
    return dataclasses.replace(settings, batched_cfg=False, decode_chunk_frames=1)


def latent_shape(config: ModelConfig, frames: int, height: int, width: int, batch: int) -> tuple[int, ...]:
    """(b, z, t, h, w) of the latents of ``batch`` videos of ``frames`` frames at height x width pixels."""
    f = config.vae.downsample_factor
    return batch, config.unet.in_channels, frames, height // f, width // f


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


def sample_latents(unet: nn.Module, context: Tensor, uncond: Tensor | None, x_T: Tensor, settings: ResolvedSettings,
                   noise: NoiseFn, *, callback: Callable[[SamplerStep], None] | None = None) -> Tensor:
    """Scaled latents (b, z, t, h, w) float32 from x_T (b, z, t, h, w) on the UNet's device.

    ``settings`` are resolved ones (they carry the sampling plan); context (b, L, d) and uncond (b, L, d)
    (None: no guidance) are the text embeddings; ``noise`` draws the samplers' later noise (see :func:`seeded_noise`).
    The settings' ``channels_last`` sets the layout of ``unet``'s convolution weights in place (values unchanged).
    """
    unet = prepared_unet(unet, compile_backend=settings.compile, channels_last=settings.channels_last)
    cached = None
    if settings.plan.sampler.guidance_in_unet:  # T2V-Turbo: the scale is an embedding, uncond is not used
        eps_fn = TurboEps(unet, context, settings.cfg, fps=settings.fps, motion_scale=settings.motion_scale,
                          motion_share=settings.motion_share, dtype=_dtype_of(unet))
    else:
        eps_fn = GuidedEps(unet, context, uncond, settings.cfg, fps=settings.fps, batched=settings.batched_cfg,
                           rescale=settings.guidance_rescale, dtype=_dtype_of(unet))
        if settings.step_cache is not None:  # per UNet call (context window); a step is one sampler call
            cached = CachedGuidance(eps_fn, settings.step_cache, len(settings.plan.steps))
            eps_fn = cached.eps
    if settings.context_frames is not None:
        eps_fn = windowed_eps(eps_fn, ContextWindows(settings.context_frames, settings.context_overlap,
                                                     settings.context_loop))
    if cached is not None:
        eps_fn = cached.stepping(eps_fn)
    return settings.plan.run(eps_fn, x_T, noise=noise, callback=callback)


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@torch.no_grad()
def generate(model: VideoCrafter, prompts: Sequence[str], seeds: Sequence[int], settings: GenerationSettings, *,
             device: torch.device | str = "cpu", offload: bool = True,
             callback: Callable[[SamplerStep], None] | None = None) -> Tensor:
    """Videos (b, 3, t, H, W) float32 on the CPU, one per prompt, item i from seed ``seeds[i]``: the VAE's
    decoded pixels, nominally in [-1, 1] but not clamped (as the official decode; writers clamp).

    The networks compute in the dtypes they are in (see :func:`cast_for_inference`); ``device`` is
    where they run. Settings already resolved for the model's config are used as they are (nothing is
    checked or planned twice). ``callback`` receives every sampler step (progress bars, previews, interrupts).
    """
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts need {len(prompts)} seeds; got {len(seeds)}")
    config = model.config
    settings = settings.resolve(config)
    device = torch.device(device)
    batch = len(prompts)
    guided = settings.cfg != 1.0 and not settings.plan.sampler.guidance_in_unet  # an unconditional branch

    with on_device(model.text_encoder, device, offload) as text_encoder:
        texts = list(prompts) + ([settings.negative_prompt] * batch if guided else [])
        embeddings = text_encoder.encode(texts)  # (b or 2b, 77, width)
    context, uncond = embeddings[:batch], (embeddings[batch:] if guided else None)

    noise = seeded_noise(seeds)
    x_T = noise(torch.Size(latent_shape(config, settings.frames, settings.height, settings.width, batch)))
    x_T = x_T.to(device)  # float32
    model.unet.to(device)
    latents = sample_latents(model.unet, context, uncond, x_T, settings, noise, callback=callback)

    with on_device(model.vae, device, offload) as vae:
        videos = vae.decode_video(latents.to(_dtype_of(vae)), chunk_frames=settings.decode_chunk_frames)
    return videos.float().cpu()
