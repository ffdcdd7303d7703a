"""The whole text-to-video model: UNet, text encoder, VAE and schedule, with the official key layout.

``VideoCrafter.official_state_dict()`` is the checkpoint as the released ``model.ckpt`` holds it:
the schedule buffers at the top level, then ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE) and ``cond_stage_model.*`` (OpenCLIP text tower), in that order.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig
from .diffusion.schedule import DiffusionSchedule
from .keys import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from .modules import UNetModel
from .text import TextEncoder
from .vae import VideoVAE

Tensor = torch.Tensor


class VideoCrafter(nn.Module):
    """The networks as submodules; the schedule is a plain attribute that device or dtype moves leave alone.

    Networks given (already built and loaded, see :func:`vc2_core.checkpoint.build_model`) are adopted;
    the others are built from ``config``.
    """

    def __init__(self, config: ModelConfig, *, unet: UNetModel | None = None, vae: VideoVAE | None = None,
                 text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config
        self.schedule = DiffusionSchedule(config.schedule)
        self.unet = UNetModel(config.unet) if unet is None else unet
        self.vae = VideoVAE(config.vae, scale_factor=config.scale_factor) if vae is None else vae
        self.text_encoder = TextEncoder(config.text) if text_encoder is None else text_encoder

    def official_state_dict(self, unet_state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The released checkpoint layout; ``unet_state`` replaces the UNet's own (a gathered FSDP state)."""
        unet_state = self.unet.state_dict() if unet_state is None else unet_state
        return official_state_dict(self.schedule, unet_state, self.vae, self.text_encoder)


def official_state_dict(schedule: DiffusionSchedule, unet_state: dict[str, Tensor], vae: VideoVAE,
                        text_encoder: TextEncoder) -> dict[str, Tensor]:
    """The released checkpoint layout of separately held networks (the ComfyUI nodes hold them apart)."""
    state = dict(schedule.official_state_dict())
    state.update({UNET_PREFIX + k: v for k, v in unet_state.items()})
    state.update({VAE_PREFIX + k: v for k, v in vae.official_state_dict().items()})
    state.update({TEXT_PREFIX + k: v for k, v in text_encoder.official_state_dict().items()})
    return state


def split_official_state_dict(state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """{"unet", "vae", "text", "top"} parts of an official state dict, prefixes stripped."""
    parts: dict[str, dict[str, Tensor]] = {"unet": {}, "vae": {}, "text": {}, "top": {}}
    for key, value in state.items():
        for part, prefix in (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("text", TEXT_PREFIX)):
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
                break
        else:
            parts["top"][key] = value
    return parts
