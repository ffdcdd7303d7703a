"""``first_stage_vae`` cases: the KL autoencoder's image path and LatentDiffusion's video path (FORMAT.md §8)."""

from __future__ import annotations

import torch

from vc2_core.config import VAEConfig
from vc2_core.vae import VideoVAE

ATOL = 1e-4  # FORMAT.md section 3
SCALE_FACTOR = 0.18215  # LatentDiffusion's scale_factor in the recorded video path (FORMAT.md §8)


def tolerance(name, expected):
    return "abs", ATOL


def produce(case) -> dict[str, torch.Tensor]:
    vae = VideoVAE(VAEConfig.from_official(case.config),
                   scale_factor=case.sidecar.get("scale_factor", SCALE_FACTOR)).eval()
    vae.load_official_state_dict(case.with_prefix("sd."))
    inputs = case.with_prefix("in.")
    out: dict[str, torch.Tensor] = {}
    if "image" in inputs:
        image = inputs["image"]
        out["encoder_h"] = vae.autoencoder.encoder(image)  # Encoder output, before quant_conv
        out["moments"] = vae.encode_moments(image)
        mean, logvar = vae.split_moments(out["moments"])
        std = torch.exp(0.5 * logvar)
        out.update(posterior_mean=mean, posterior_logvar=logvar, posterior_std=std, decode_mean=vae.decode(mean))
        if "sample_noise" in inputs:
            out["posterior_sample"] = mean + std * inputs["sample_noise"]
    if "video" in inputs:
        z = vae.encode_video(inputs["video"], noise=inputs["video_sample_noise"])
        out["video_z"] = z
        out["video_decode_batched"] = vae.decode_video(z)  # decode_first_stage: all (b t) frames at once
        out["video_decode_2DAE"] = vae.decode_video(z, chunk_frames=1)  # decode_first_stage_2DAE: frame loop
    return out
