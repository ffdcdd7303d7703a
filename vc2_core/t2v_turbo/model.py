"""A VideoCrafter2 model turned into T2V-Turbo: its UNet rebuilt with their weights, the rest shared."""

from __future__ import annotations

from ..model import VideoCrafter
from .files import TurboLoRA, TurboUNet
from .unet import build_turbo_unet


def with_turbo(model: VideoCrafter, weights: TurboLoRA | TurboUNet, *, strength: float = 1.0,
               time_cond_seed: int = 0) -> VideoCrafter:
    """A VideoCrafter whose UNet is T2V-Turbo's (see :func:`build_turbo_unet`), on the UNet's device and dtype.

    The text encoder and the VAE are ``model``'s own (shared, not copied); the config's UNet gains
    T2V-Turbo's fields, which is how the pipeline knows the ``t2v-turbo`` sampler can run. Their
    weights that do not fit raise a TurboWeightsError and leave ``model`` as it was.
    """
    parameter = next(model.unet.parameters())
    base_state = {key: value.detach().float().cpu() for key, value in model.unet.state_dict().items()}
    unet = build_turbo_unet(base_state, model.config.unet, weights, strength=strength, time_cond_seed=time_cond_seed)
    unet = unet.to(device=parameter.device, dtype=parameter.dtype)
    config = model.config.replace(unet=unet.config)
    return VideoCrafter(config, unet=unet, vae=model.vae, text_encoder=model.text_encoder).eval()
