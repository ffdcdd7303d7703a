"""The VideoCrafter UNet as a ComfyUI MODEL, registered the way ComfyUI's own model families are.

A family in ComfyUI is a model config (``supported_models_base.BASE``: latent format, sampling
settings), a ``model_base.BaseModel`` subclass that owns the network as ``diffusion_model`` and turns
conditioning into model inputs (``extra_conds``, ``_apply_model``), and a model sampling object (how
a sigma becomes the network's input and its output a denoised latent). KSampler, SamplerCustom, the
LoRA loaders, TorchCompileModel and the step caches all reach the network through these.

VideoCrafter's pieces: the released UNet (``diffusion_model``, so its weights are
``diffusion_model.<official key>`` as ComfyUI names every UNet's), the schedule with the latent scale
(:class:`vc2_core.diffusion.ve_form.VEForm`: the scale enters only the model input and the start from
noise), the fps condition as an extra cond, 5-D latents (b, c, t, h, w) in Stable Diffusion's latent
format (VideoCrafter's VAE is SD's). This module imports ComfyUI at its top, so the pack imports it
only inside the functions that build a MODEL (nodes/comfy.py).
"""

from __future__ import annotations

import logging

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_sampling
import comfy.patcher_extension
import comfy.supported_models_base
import torch

from ..vc2_core.attention import attention_backend
from ..vc2_core.config import ModelConfig
from ..vc2_core.diffusion.schedule import DiffusionSchedule
from ..vc2_core.diffusion.ve_form import VEForm
from ..vc2_core.modules import UNetModel

LOG = logging.getLogger(__name__)

Tensor = torch.Tensor


class VideoCrafterLatent(comfy.latent_formats.SD15):
    """SD's latent format (same VAE, same previews) for video latents: 3 latent dimensions (t, h, w), so
    ComfyUI treats a 4-D image latent as a one-frame video."""

    latent_dimensions = 3


class VideoCrafterConfig(comfy.supported_models_base.BASE):
    """The family's config. The UNet is built by vc2_core, not by ComfyUI (``disable_unet_model_creation``)."""

    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = VideoCrafterLatent

    def __init__(self, config: ModelConfig):
        super().__init__(self.unet_config)
        self.latent_format = VideoCrafterLatent(config.scale_factor)
        self.vc2 = config


class VideoCrafterSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """Discrete eps sampling on VideoCrafter's sigmas sigma_t = sqrt(1 - alpha_bar_t) / (sqrt(alpha_bar_t) s_t),
    with the latent scale s_t in the model input and in the start from pure noise (:class:`VEForm`)."""

    def __init__(self, model_config: VideoCrafterConfig, form: VEForm):
        super().__init__(model_config)
        self.form = form
        self.set_sigmas(form.sigmas.float())  # (T,): what ComfyUI's schedulers, sigma() and timestep() read

    def calculate_input(self, sigma: Tensor, noise: Tensor) -> Tensor:
        return self.form.model_input(sigma, noise)

    def calculate_denoised(self, sigma: Tensor, model_output: Tensor, model_input: Tensor) -> Tensor:
        return self.form.denoised(sigma, model_output, model_input)

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent_image: Tensor, max_denoise: bool = False) -> Tensor:
        return self.form.start(sigma, noise, latent_image, from_pure_noise=max_denoise)


class VideoCrafterModel(comfy.model_base.BaseModel):
    """The UNet under ComfyUI's sampling: cross-attention on the text embedding, the fps condition (a
    CONDITIONING's ``fps`` entry, else the checkpoint's released fps), eps prediction on 5-D latents."""

    def __init__(self, unet: UNetModel, config: ModelConfig, schedule: DiffusionSchedule, attention: str):
        model_config = VideoCrafterConfig(config)
        super().__init__(model_config, comfy.model_base.ModelType.EPS)
        self.diffusion_model = unet
        self.model_sampling = VideoCrafterSampling(model_config, VEForm(schedule))
        self.attention = attention  # the loader's attention backend, entered around every UNet call
        self.vc2_schedule = schedule  # for VC2 Sigmas: the levels of vc2's own samplers
        self.default_fps = config.fps
        self.warned_patches: set[tuple[str, ...]] = set()  # each set of ignored patches is reported once

    def get_dtype(self) -> torch.dtype:
        return next(self.diffusion_model.parameters()).dtype

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)  # c_crossattn from the CONDITIONING's tensor
        batch = kwargs["noise"].shape[0]
        fps = torch.full((batch,), int(kwargs.get("fps", self.default_fps)), dtype=torch.long)
        out["fps"] = comfy.conds.CONDRegular(fps)
        return out

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        """Denoised latents from z (b, c, frames, h, w) at sigma t (b,): the UNet's eps at the integer timestep
        nearest to sigma, on the input a(sigma) z. DIFFUSION_MODEL wrappers (EasyCache) wrap the UNet call."""
        if c_concat is not None or control is not None:
            raise ValueError("VideoCrafter's UNet takes text and fps only: concat conditioning (inpainting, image "
                             "conditioning) and ControlNets do not apply to it")
        if x.ndim != 5:
            raise ValueError(f"VideoCrafter samples video latents (b, c, frames, h, w); got {tuple(x.shape)}")
        self._warn_of_ignored_patches(transformer_options)
        sigma, dtype = t, self.get_dtype()
        unet_input = self.model_sampling.calculate_input(sigma, x).to(dtype)  # (b, c, f, h, w)
        timestep = self.model_sampling.timestep(sigma).to(x.device).float()  # (b,)
        context = c_crossattn.to(x.device, dtype)  # (b, L, d)
        fps = kwargs["fps"].to(x.device) if "fps" in kwargs else self.default_fps  # (b,)
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            transformer_options)
        run = comfy.patcher_extension.WrapperExecutor.new_class_executor(self._run_unet, self, wrappers)
        eps = run.execute(unet_input, timestep, context, fps, transformer_options).float()
        return self.model_sampling.calculate_denoised(sigma, eps, x)

    def _warn_of_ignored_patches(self, transformer_options: dict) -> None:
        """Block and attention patches (FreeU, PAG, SAG, HyperTile...) hook ComfyUI's own UNet through
        ``transformer_options``; vc2's UNet does not read them, so they would do nothing: say so, once."""
        ignored = tuple(sorted(f"{kind}.{name}" for kind in ("patches", "patches_replace")
                               for name, value in transformer_options.get(kind, {}).items() if value))
        if ignored and ignored not in self.warned_patches:
            self.warned_patches.add(ignored)
            LOG.warning("VideoCrafter MODEL: %s patch VideoCrafter's blocks or attention through hooks its UNet does "
                        "not have, so they change nothing (FreeU, PAG, SAG and HyperTile do not apply to it)",
                        ", ".join(ignored))

    def _run_unet(self, x: Tensor, timestep: Tensor, context: Tensor, fps, transformer_options: dict) -> Tensor:
        with attention_backend(self.attention):
            return self.diffusion_model(x, timestep, context, fps)
