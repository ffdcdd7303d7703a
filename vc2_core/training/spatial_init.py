"""Start a video model from an image model: spatial weights from a 2-D checkpoint, temporal modules fresh.

VideoCrafter's UNet is Stable Diffusion 2.1's with temporal modules added under the same names,
so an SD 2.1 checkpoint (original LDM layout: ``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*``) supplies every spatial UNet tensor, the VAE and the text encoder. The
temporal modules and the fps embedding keep the model's fresh initialisation, in which the
official code zero-initialises the temporal outputs (the ``proj_out`` of every temporal
transformer and the last convolution of every temporal conv block), so the untrained video model
starts as the image model applied frame by frame.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import read_checkpoint
from ..detect import CheckpointError
from ..model import VideoCrafter, split_official_state_dict
from ..parameter_groups import Group, classify_unet_parameters

Tensor = torch.Tensor


def load_spatial_weights(model: VideoCrafter, path: str | Path) -> dict[str, int]:
    """Copy an image model's UNet, VAE and text weights into ``model``; returns counts of what was loaded.

    Every spatial UNet parameter must be in the file with the same shape; temporal and
    conditioning tensors must not be (that would not be an image model). VAE and text encoder
    weights are loaded when the file has them (an SD 2.1 checkpoint has both).
    """
    state, _ = read_checkpoint(path)
    parts = split_official_state_dict(state)
    if not parts["unet"]:
        raise CheckpointError(f"{path}: no model.diffusion_model.* tensors: not an image-model (SD 2.1) checkpoint")
    groups = classify_unet_parameters(model.unet)
    own = model.unet.state_dict()
    spatial = {name for name, info in groups.items() if info.group == Group.SPATIAL}
    video_only = [k for k in parts["unet"] if k in groups and groups[k].group != Group.SPATIAL]
    unknown = [k for k in parts["unet"] if k not in own]
    missing = sorted(spatial - set(parts["unet"]))
    wrong = [k for k in spatial & set(parts["unet"]) if tuple(parts["unet"][k].shape) != tuple(own[k].shape)]
    problems = []
    if video_only:
        problems.append(f"{len(video_only)} temporal/fps tensors (e.g. {video_only[0]}): this is a video model; "
                        "start from it with model.checkpoint instead")
    if unknown:
        problems.append(f"{len(unknown)} UNet tensors this architecture does not have (e.g. {unknown[0]})")
    if missing:
        problems.append(f"{len(missing)} spatial tensors missing (e.g. {missing[0]})")
    if wrong:
        shapes = f"{tuple(parts['unet'][wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}"
        problems.append(f"{len(wrong)} spatial tensors of another shape (e.g. {wrong[0]}: {shapes})")
    if problems:
        raise CheckpointError(f"{path}: cannot initialise {model.config.name}'s spatial modules from it:\n  - "
                              + "\n  - ".join(problems))
    with torch.no_grad():
        for name, param in model.unet.named_parameters():
            if name in spatial:
                param.copy_(parts["unet"][name])
        for name, buffer in model.unet.named_buffers():
            if name in parts["unet"]:
                buffer.copy_(parts["unet"][name])
    if parts["vae"]:
        model.vae.load_official_state_dict(parts["vae"])
    if parts["text"]:
        model.text_encoder.load_official_state_dict(parts["text"])
    return {"spatial": len(spatial), "vae": len(parts["vae"]), "text": len(parts["text"])}
