"""``ddim_sampling`` cases: the official DDIM loop step by step, then the frame-wise VAE decode."""

from __future__ import annotations

import re

import torch

from vc2_core.config import ScheduleConfig, UNetConfig, VAEConfig
from vc2_core.diffusion import Denoiser, DiffusionSchedule, GuidedEps, ddim_sample, make_ddim_schedule, replayed_noise
from vc2_core.modules import UNetModel
from vc2_core.vae import VideoVAE

REL = 1e-4  # FORMAT.md section 3: per tensor and step, max|a-b| / max|b|
ETA_PREFIX = re.compile(r"eta([0-9]+(?:\.[0-9]+)?)\.(.+)")
PER_STEP = ("x_inter", "pred_x0", "e_cond", "e_uncond")  # stacked over steps on dim 0 (FORMAT.md section 7)


def tolerance(name, expected):
    if name == "ddim_timesteps" or not expected.is_floating_point():
        return "equal", None
    if expected.dtype == torch.float64:
        return "allclose", (1e-6, 0.0)
    if name in ("ddim_alphas", "ddim_sqrt_one_minus_alphas", "ddim_scale_arr"):
        return "allclose", (1e-5, 1e-6)
    if name.endswith(".ddim_sigmas"):
        return "allclose", (1e-6, 0.0)
    per_eta = ETA_PREFIX.fullmatch(name)
    if per_eta and per_eta[2] in PER_STEP:
        return "rel_per_step", REL  # the latents grow from |x| ~ 10 to ~ 100: each step against its own scale
    return "rel", REL


def _vae_weights(case, config: VAEConfig) -> dict[str, torch.Tensor]:
    """The first stage: in this file if stored, else the first_stage_vae case of the same directory with this config."""
    own = case.with_prefix("sd.first_stage_model.")
    if own:
        return own
    for other in case.sibling_cases():
        if other.kind == "first_stage_vae" and VAEConfig.from_official(other.config) == config:
            return other.with_prefix("sd.")
    raise AssertionError(f"{case.name}: no first_stage_vae golden with its VAE config beside it to take weights from")


def produce(case) -> dict[str, torch.Tensor]:
    params = case.config["params"]
    unet = UNetModel(UNetConfig(**params["unet_config"]["params"])).eval()
    unet.load_state_dict(case.with_prefix("sd.model.diffusion_model."), strict=True)
    schedule = DiffusionSchedule(ScheduleConfig.from_official(params))
    args = case.sidecar["sampler_args"]
    if args.get("temperature", 1.0) != 1.0 or args.get("conditional_guidance_scale_temporal") is not None:
        raise AssertionError(f"{case.name}: sampler options beyond the official t2v defaults are not reproduced")
    inputs = case.with_prefix("in.")
    x_T, fps = inputs["x_T"], inputs.get("fps")
    etas = sorted({m[1] for m in map(ETA_PREFIX.fullmatch, case.outputs()) if m})

    steps, guidance = args["S"], args["unconditional_guidance_scale"]
    discretize = args.get("ddim_discretize", "uniform")
    common = make_ddim_schedule(schedule, steps, 0.0, discretize)
    out: dict[str, torch.Tensor] = {
        "ddim_timesteps": common.timesteps,
        "ddim_alphas": common.alphas,
        "ddim_alphas_prev": common.alphas_prev,
        "ddim_sqrt_one_minus_alphas": common.sqrt_one_minus_alphas,
    }
    if schedule.use_scale:
        out["ddim_scale_arr"] = common.scales
        out["ddim_scale_arr_prev"] = common.scales_prev
    for eta_text in etas:
        eta = float(eta_text)
        ddim = make_ddim_schedule(schedule, steps, eta, discretize)
        calls: list[torch.Tensor] = []

        def unet_recorded(x, t, context, fps_):
            y = unet(x, t, context, fps_)
            calls.append(y)
            return y

        eps_fn = GuidedEps(unet_recorded, inputs["c_emb"], inputs["uc_emb"], guidance, fps=fps, batched=False)
        xs, pred_x0s = [x_T], [x_T]
        recorded = inputs.get(f"eta{eta_text}.noise")
        samples = ddim_sample(Denoiser(eps_fn), x_T, ddim, noise=None if recorded is None else replayed_noise(recorded),
                              callback=lambda s: (xs.append(s.x), pred_x0s.append(s.pred_x0)))
        prefix = f"eta{eta_text}."
        out[prefix + "samples"] = samples
        out[prefix + "x_inter"] = torch.stack(xs)
        out[prefix + "pred_x0"] = torch.stack(pred_x0s)
        if guidance == 1.0:  # the official sampler then calls the UNet once, with the condition
            out[prefix + "e_cond"] = torch.stack(calls)
        else:  # cond first, then uncond, as official
            out[prefix + "e_cond"] = torch.stack(calls[0::2])
            out[prefix + "e_uncond"] = torch.stack(calls[1::2])
        out[prefix + "ddim_sigmas"] = ddim.sigmas
        if prefix + "video" in case.outputs():
            vae_config = VAEConfig.from_official(params["first_stage_config"]["params"])
            vae = VideoVAE(vae_config, scale_factor=params.get("scale_factor", 1.0)).eval()
            vae.load_official_state_dict(_vae_weights(case, vae_config))
            out[prefix + "video"] = vae.decode_video(samples, chunk_frames=1)  # official decode_first_stage_2DAE
    return out
