"""Stand-ins for the ComfyUI modules a model family builds on (nodes/comfy_native.py imports them), for tests
without ComfyUI: the config base, the BaseModel with its apply_model and extra_conds, discrete eps model
sampling, SD's latent format, conds and DIFFUSION_MODEL wrappers. They follow ComfyUI's behaviour where the
pack depends on it (a BaseModel owns ``diffusion_model`` and ``model_sampling``; ``apply_model`` runs
``_apply_model``; the sigma table is float32; a wrapper gets an executor and the wrapped call's arguments);
tools/comfy_native_check.py runs the same model in a real ComfyUI.
"""

from __future__ import annotations

import enum
import types

import torch


def _latent_formats() -> types.ModuleType:
    module = types.ModuleType("comfy.latent_formats")

    class LatentFormat:
        scale_factor = 1.0
        latent_channels = 4
        latent_dimensions = 2

        def process_in(self, latent):
            return latent * self.scale_factor

        def process_out(self, latent):
            return latent / self.scale_factor

    class SD15(LatentFormat):
        def __init__(self, scale_factor=0.18215):
            self.scale_factor = scale_factor

    module.LatentFormat, module.SD15 = LatentFormat, SD15
    return module


def _model_sampling() -> types.ModuleType:
    module = types.ModuleType("comfy.model_sampling")

    class EPS:
        def calculate_denoised(self, sigma, model_output, model_input):
            return model_input - model_output * sigma.reshape(-1, *(1,) * (model_output.ndim - 1))

        def inverse_noise_scaling(self, sigma, latent):
            return latent

    class ModelSamplingDiscrete(torch.nn.Module):
        def __init__(self, model_config=None):
            super().__init__()
            alpha_bar = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0)
            self.set_sigmas(((1 - alpha_bar) / alpha_bar) ** 0.5)

        def set_sigmas(self, sigmas):
            self.register_buffer("sigmas", sigmas.float())
            self.register_buffer("log_sigmas", sigmas.log().float())

        @property
        def sigma_min(self):
            return self.sigmas[0]

        @property
        def sigma_max(self):
            return self.sigmas[-1]

        def timestep(self, sigma):
            distances = (sigma.log().reshape(1, -1) - self.log_sigmas.reshape(-1, 1)).abs()  # (T, n)
            return distances.argmin(dim=0).reshape(sigma.shape)

    module.EPS, module.ModelSamplingDiscrete = EPS, ModelSamplingDiscrete
    return module


def _supported_models_base(latent_formats) -> types.ModuleType:
    module = types.ModuleType("comfy.supported_models_base")

    class BASE:
        unet_config: dict = {}
        unet_extra_config: dict = {}
        sampling_settings: dict = {}
        latent_format = latent_formats.LatentFormat
        memory_usage_factor = 2.0
        manual_cast_dtype = None

        def __init__(self, unet_config):
            self.unet_config = dict(unet_config, **self.unet_extra_config)
            self.sampling_settings = dict(self.sampling_settings)
            self.latent_format = self.latent_format()

    module.BASE = BASE
    return module


def _conds() -> types.ModuleType:
    module = types.ModuleType("comfy.conds")

    class CONDRegular:
        def __init__(self, cond):
            self.cond = cond

    module.CONDRegular = CONDRegular
    module.CONDCrossAttn = type("CONDCrossAttn", (CONDRegular,), {})
    return module


def _patcher_extension() -> types.ModuleType:
    module = types.ModuleType("comfy.patcher_extension")
    module.WrappersMP = types.SimpleNamespace(DIFFUSION_MODEL="diffusion_model", APPLY_MODEL="apply_model")

    def get_all_wrappers(wrapper_type, transformer_options):
        return list(transformer_options.get("wrappers", {}).get(wrapper_type, []))

    class WrapperExecutor:
        def __init__(self, original, class_obj, wrappers, index=0):
            self.original, self.class_obj, self.wrappers, self.index = original, class_obj, wrappers, index

        @classmethod
        def new_class_executor(cls, original, class_obj, wrappers):
            return cls(original, class_obj, wrappers)

        def execute(self, *args, **kwargs):
            if self.index == len(self.wrappers):
                return self.original(*args, **kwargs)
            inner = WrapperExecutor(self.original, self.class_obj, self.wrappers, self.index + 1)
            return self.wrappers[self.index](lambda *a, **k: inner.execute(*a, **k), *args, **kwargs)

    module.get_all_wrappers, module.WrapperExecutor = get_all_wrappers, WrapperExecutor
    return module


def _model_base(model_sampling, conds) -> types.ModuleType:
    module = types.ModuleType("comfy.model_base")
    module.ModelType = enum.Enum("ModelType", ["EPS", "V_PREDICTION"])

    class BaseModel(torch.nn.Module):
        def __init__(self, model_config, model_type=module.ModelType.EPS, device=None):
            super().__init__()
            self.model_config, self.model_type, self.device = model_config, model_type, device
            self.latent_format = model_config.latent_format
            self.model_sampling = model_sampling.ModelSamplingDiscrete(model_config)

        def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
            return self._apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

        def extra_conds(self, **kwargs):
            return {"c_crossattn": conds.CONDCrossAttn(kwargs["cross_attn"])} if "cross_attn" in kwargs else {}

        def process_latent_in(self, latent):
            return self.latent_format.process_in(latent)

        def process_latent_out(self, latent):
            return self.latent_format.process_out(latent)

    module.BaseModel = BaseModel
    return module


def modules() -> dict[str, types.ModuleType]:
    """The stand-in modules by their ComfyUI names."""
    latent_formats, model_sampling, conds = _latent_formats(), _model_sampling(), _conds()
    return {
        "comfy.latent_formats": latent_formats,
        "comfy.model_sampling": model_sampling,
        "comfy.supported_models_base": _supported_models_base(latent_formats),
        "comfy.conds": conds,
        "comfy.patcher_extension": _patcher_extension(),
        "comfy.model_base": _model_base(model_sampling, conds),
    }
