"""A VideoCrafter2 model turned into T2V-Turbo: its UNet rebuilt with their weights, the rest shared."""

from __future__ import annotations

import torch

from ..model import VideoCrafter
from ..modules import UNetModel
from .files import TurboLoRA, TurboUNet
from .unet import build_turbo_unet, check_turbo_base


def turbo_unet(unet: UNetModel, weights: TurboLoRA | TurboUNet, *, strength: float = 1.0, time_cond_seed: int = 0,
               device: torch.device | None = None) -> UNetModel:
    """A new T2V-Turbo UNet from a released VideoCrafter2 ``unet`` (see :func:`build_turbo_unet`) in its dtype, on
    ``device`` (None: ``unet``'s); ``unet`` is only read. Their weights that do not fit raise a TurboWeightsError,
    a ``unet`` that is not VideoCrafter2's released one a ValueError (:func:`check_turbo_base`)."""
    check_turbo_base(unet.config, "the UNet")
    parameter = next(unet.parameters())
    base_state = {key: value.detach().float().cpu() for key, value in unet.state_dict().items()}
    turbo = build_turbo_unet(base_state, unet.config, weights, strength=strength, time_cond_seed=time_cond_seed)
    return turbo.to(device=parameter.device if device is None else device, dtype=parameter.dtype)


def with_turbo(model: VideoCrafter, weights: TurboLoRA | TurboUNet, *, strength: float = 1.0,
               time_cond_seed: int = 0) -> VideoCrafter:
    """A VideoCrafter whose UNet is T2V-Turbo's (:func:`turbo_unet`), on the UNet's device and dtype.

    The text encoder and the VAE are ``model``'s own (shared, not copied); the config's UNet gains
    T2V-Turbo's fields, which is how the pipeline knows the ``t2v-turbo`` sampler can run. Their
    weights that do not fit raise a TurboWeightsError and leave ``model`` as it was.
    """
    unet = turbo_unet(model.unet, weights, strength=strength, time_cond_seed=time_cond_seed)
    config = model.config.replace(unet=unet.config)
    return VideoCrafter(config, unet=unet, vae=model.vae, text_encoder=model.text_encoder).eval()
