"""``unet_forward`` cases: y = UNet(x, timesteps, context, fps) and its recorded intermediates."""

from __future__ import annotations

import torch

from vc2_core.config import UNetConfig
from vc2_core.modules import UNetModel, timestep_embedding

ATOL = 1e-4  # FORMAT.md section 3


def tolerance(name, expected):
    return "abs", ATOL


def produce(case) -> dict[str, torch.Tensor]:
    unet = UNetModel(UNetConfig(**case.config)).eval()
    unet.load_state_dict(case.with_prefix("sd."), strict=True)
    inputs = case.with_prefix("in.")
    x, timesteps, context, fps = inputs["x"], inputs["timesteps"], inputs["context"], inputs.get("fps")
    frames = x.shape[2]

    captured: dict[str, torch.Tensor] = {}

    def keep(name, of_input=False):
        def hook(module, args, output):
            captured[name] = args[0] if of_input else output
        return hook

    hooks = [unet.time_embed.register_forward_hook(keep("emb_time")),
             unet.middle_block.register_forward_hook(keep("h_middle"))]
    if unet.config.fps_cond:
        hooks.append(unet.fps_embedding.register_forward_hook(keep("emb_fps")))
    if unet.config.addition_attention:
        hooks.append(unet.init_attn.register_forward_hook(keep("h_init_attn")))
    y = unet(x, timesteps, context, fps)
    for hook in hooks:
        hook.remove()

    out = {"y": y, "t_emb": timestep_embedding(timesteps, unet.config.model_channels), **captured}
    if unet.config.fps_cond:
        fps_used = fps if fps is not None else torch.full_like(timesteps, 16)
        out["fps_t_emb"] = timestep_embedding(fps_used, unet.config.model_channels)
    out["emb"] = unet.embed(timesteps, fps).repeat_interleave(frames, dim=0)  # official: one row per frame
    if "y_fps_default" in case.outputs():
        out["y_fps_default"] = unet(x, timesteps, context)
    return out
