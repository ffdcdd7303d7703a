"""Sample a video latent: the project's samplers over the VideoCrafter UNet, driven by ComfyUI."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..vc2_core.attention import attention_backend
from ..vc2_core.diffusion import SAMPLERS, SamplerStep, seeded_noise
from ..vc2_core.diffusion.step_cache import PRESETS, step_cache_preset
from ..vc2_core.pipeline import GenerationSettings, sample_latents
from . import comfy
from .types import MODEL_TYPE, VideoModel

Tensor = torch.Tensor
PREVIEW_FRAMES = 4  # frames shown side by side in the progress preview
MAX_SEED = 0xFFFFFFFFFFFFFFFF
# the "performance" input: GenerationSettings changes (low memory: cond and uncond as two UNet calls; compile:
# torch.compile with inductor, the first run pays the compilation; channels_last: NHWC convolutions)
PERFORMANCE = {
    "default": {},
    "low memory": {"batched_cfg": False},
    "channels_last": {"channels_last": True},
    "compile": {"compile": "inductor"},
    "compile + channels_last": {"compile": "inductor", "channels_last": True},
}


def conditioning_tensor(conditioning: list, name: str, model: VideoModel) -> Tensor:
    """The (b, L, d) embedding of a CONDITIONING, checked against the UNet's context width."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{name}: expected a CONDITIONING (from VC2 Text Encode or CLIP Text Encode)")
    if len(conditioning) > 1:
        raise ValueError(f"{name}: combined or concatenated CONDITIONING ({len(conditioning)} entries) is not "
                         "supported by VC2 Sampler; give one encoded prompt")
    embedding = conditioning[0][0]
    width = model.config.unet.context_dim
    if embedding.ndim != 3 or embedding.shape[-1] != width:
        raise ValueError(
            f"{name}: this CONDITIONING is {tuple(embedding.shape)}, but {model.name}'s UNet takes text embeddings "
            f"of width {width}. Encode with VC2 Text Encode, or with CLIP Text Encode using the CLIP that ComfyUI's "
            "Load Checkpoint gives for this same file (its OpenCLIP-H); other models' encoders do not fit.")
    return embedding


def _per_video(embedding: Tensor, batch: int, name: str) -> Tensor:
    if embedding.shape[0] == batch:
        return embedding
    if embedding.shape[0] == 1:
        return embedding.expand(batch, -1, -1)
    raise ValueError(f"{name}: {embedding.shape[0]} embeddings for a latent batch of {batch}")


def preview_tile(pred_x0: Tensor) -> Tensor:
    """The first video's first frames side by side: (b, z, t, h, w) -> (1, z, h, k * w)."""
    frames = pred_x0[0, :, :PREVIEW_FRAMES]  # (z, k, h, w)
    return frames.permute(0, 2, 1, 3).reshape(1, frames.shape[0], frames.shape[2], -1)


class VC2Sampler:
    CATEGORY = "VideoCrafter2/sampling"
    DESCRIPTION = ("Samples video latents with VideoCrafter's schedule (its latent scale quirk included). "
                   "Defaults are the released inference script's: DDIM, 50 steps, eta 1.0, cfg 12, fps 28. "
                   "Video i of the batch uses seed + i. Context windows sample videos longer than the model's "
                   "16 frames in overlapping windows. T2V-Turbo (a model from VC2 T2V-Turbo Loader): sampler_name "
                   "t2v-turbo with steps 4 and cfg 7.5, their defaults; one UNet call per step, negative unused.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The sampled video latents, for VC2 VAE Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The VideoCrafter UNet."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt's embedding."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt's embedding (official: the "
                                                         "encoding of the empty prompt)."}),
                "latent": ("LATENT", {"tooltip": "VC2 Empty Video Latent: sets batch, frames and size."}),
                "seed": ("INT", {"default": 123, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed of the first video; video i uses seed + i."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                                  "tooltip": "Sampler steps (released 50; t2v-turbo: 4, T2V-Turbo's)."}),
                "cfg": ("FLOAT", {"default": 12.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (released 12; 1 = no guidance). "
                                             "t2v-turbo: 7.5, T2V-Turbo's, fed to their UNet's guidance embedding "
                                             "(no unconditional pass)."}),
                "eta": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "DDIM noise (released 1.0; 0 = deterministic). Used by ddim and "
                                             "euler_ancestral."}),
                "fps": ("INT", {"default": 28, "min": 1, "max": 120,
                                "tooltip": "The fps condition of VideoCrafter2 (released 28; lower = more "
                                           "motion). Ignored by VideoCrafter1."}),
                "sampler_name": (list(SAMPLERS), {"default": "ddim",
                                                  "tooltip": "ddim is the official sampler; dpmpp_2m needs fewer "
                                                             "steps (20-25); t2v-turbo samples a model from VC2 "
                                                             "T2V-Turbo Loader in 4 steps (set steps 4, cfg 7.5, "
                                                             "eta 1)."}),
                "context_frames": ("INT", {"default": 0, "min": 0, "max": 1024,
                                           "tooltip": "Frames per UNet call for long videos (16 for VideoCrafter2); "
                                                      "0 = all frames at once."}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 1024,
                                            "tooltip": "Frames shared by neighbouring context windows."}),
                "context_loop": ("BOOLEAN", {"default": False,
                                             "tooltip": "Windows wrap around the end: a looping video."}),
            },
            "optional": {
                "performance": (list(PERFORMANCE), {
                    "default": "default",
                    "tooltip": "low memory: the conditional and unconditional passes run one after the other "
                               "(less memory, slower). compile: torch.compile of the UNet, the first run "
                               "compiles (about a minute on a GPU). channels_last: NHWC convolutions (faster "
                               "on GPUs). The same video within float rounding."}),
                "cache": (list(PRESETS), {"default": "off",
                                          "tooltip": "Step caching between sampler steps. off = exact; safe reuses "
                                                     "the unconditional branch every 2nd step, fast also deep UNet "
                                                     "features: a small error for speed (docs/benchmarks.md)."}),
            },
        }

    def sample(self, model: VideoModel, positive: list, negative: list, latent: dict, seed: int, steps: int,
               cfg: float, eta: float, fps: int, sampler_name: str, context_frames: int, context_overlap: int,
               context_loop: bool, performance: str = "default",
               cache: str = "off"):
        samples = latent["samples"]
        config = model.config
        if samples.ndim != 5 or samples.shape[1] != config.unet.in_channels:
            raise ValueError(f"latent: expected a video latent (batch, {config.unet.in_channels}, frames, h, w) "
                             f"from VC2 Empty Video Latent; got {tuple(samples.shape)}")
        batch = samples.shape[0]
        turbo = sampler_name in SAMPLERS and SAMPLERS[sampler_name].guidance_in_unet
        if turbo and config.unet.time_cond_proj_dim is None:
            raise ValueError(f"sampler_name {sampler_name}: samples T2V-Turbo's distilled UNet; {model.name} has no "
                             "T2V-Turbo weights. Put VC2 T2V-Turbo Loader (their unet_lora.pt in models/loras) "
                             "between the checkpoint loader and this sampler")
        for name, value in (("cfg", cfg), ("eta", eta)):
            if not math.isfinite(value):
                raise ValueError(f"{name} {value}: must be a finite number")
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed {seed}: must be in [0, 2**64 - 1]")
        if seed + batch - 1 > MAX_SEED:
            raise ValueError(f"seed {seed}: a batch of {batch} needs seeds up to {seed + batch - 1}, over 2**64 - 1")
        if performance not in PERFORMANCE:
            raise ValueError(f"performance {performance!r}: choose one of {', '.join(PERFORMANCE)}")
        settings = GenerationSettings(
            fps=fps, steps=steps, cfg=cfg, eta=eta, sampler=sampler_name, context_frames=context_frames or None,
            context_overlap=context_overlap if context_frames else None, context_loop=context_loop,
            **PERFORMANCE[performance],
            step_cache=step_cache_preset(cache),
        ).resolve_for_latents(config, samples.shape)
        context = _per_video(conditioning_tensor(positive, "positive", model), batch, "positive")
        uncond = _per_video(conditioning_tensor(negative, "negative", model), batch, "negative")

        comfy.load([model.patcher])
        unet = model.unet
        device, dtype = model.patcher.load_device, next(unet.parameters()).dtype
        if context.shape[1] != uncond.shape[1]:  # prompts of different lengths (ComfyUI's 77-token chunks)
            settings = dataclasses.replace(settings, batched_cfg=False)
        noise = seeded_noise([seed + i for i in range(batch)])
        x_T = noise(torch.Size(samples.shape)).to(device)
        progress = comfy.progress_bar(settings.steps)
        preview = comfy.latent_previewer(device, config.unet.in_channels)

        def on_step(step: SamplerStep) -> None:
            comfy.check_interrupt()
            image = preview(preview_tile(step.pred_x0).float()) if preview is not None else None
            progress.update_absolute(step.step + 1, step.total, image)

        comfy.check_interrupt()
        with torch.no_grad(), attention_backend(model.attention):
            z = sample_latents(unet, context.to(device, dtype), uncond.to(device, dtype), x_T, settings, noise,
                               callback=on_step)
        raw = (1.0 / config.scale_factor) * z  # ComfyUI keeps LATENTs unscaled (as the VAE gives them)
        return ({"samples": raw.to(comfy.intermediate_device())},)
