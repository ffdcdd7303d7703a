"""``t2v_turbo_sampling`` cases (tests/parity/goldens_t2v_turbo, from T2V-Turbo's own code by
tools/t2v_turbo_goldens.py): their LoRA file merged, the UNet with the scale embeddings, and their
consistency sampler step by step with the recorded noise."""

from __future__ import annotations

import torch

from vc2_core.config import ScheduleConfig, UNetConfig
from vc2_core.diffusion import DiffusionSchedule, plan_sampling, replayed_noise
from vc2_core.modules import UNetModel
from vc2_core.t2v_turbo import TurboEps, lora_targets, merge_turbo_lora, read_turbo_weights, scale_embedding

ATOL = 1e-4  # FORMAT.md section 3: UNet outputs and embeddings
REL = 1e-4  # sampling: per tensor (each step is its own tensor), max|a-b| / max|b|
ABSOLUTE = ("w_embedding", "motion_embedding", "y", "y_no_cond")


def tolerance(name, expected):
    if not expected.is_floating_point():
        return "equal", None
    if name in ABSOLUTE or name.endswith(".motion_cond"):
        return "abs", ATOL
    return "rel", REL


def _unet(case) -> UNetModel:
    """The case's UNet (its sd.*, over its base case's when it names one), with the LoRA merged if it has one."""
    state = case.with_prefix("sd.")
    base_name = case.sidecar.get("sd_base_case")
    if base_name is not None:
        bases = [other for other in case.sibling_cases() if other.name == base_name]
        assert bases, f"{case.name}: its base case {base_name} is not beside it"
        state = {**bases[0].with_prefix("sd."), **state}
    unet = UNetModel(UNetConfig(**case.config)).eval()
    unet.load_state_dict(state, strict=True)
    lora = case.sidecar.get("lora")
    if lora is not None:
        paths = [path for path, _ in lora_targets(unet)]
        assert paths == lora["layers"], f"{case.name}: the LoRA's layers map onto other modules than theirs"
        merge_turbo_lora(unet, read_turbo_weights(case.path.parent / lora["file"]), strength=1.0)
    return unet


def produce(case) -> dict[str, torch.Tensor]:
    unet = _unet(case)
    inputs, args = case.with_prefix("in."), case.sidecar["sampler_args"]
    batch = inputs["x_T"].shape[0]
    out = {"w_embedding": scale_embedding(torch.full((batch,), float(args["guidance_scale"])))}
    conditions = {"timestep_cond": out["w_embedding"]}
    if args["use_motion_cond"]:
        out["motion_embedding"] = scale_embedding(torch.full((batch,), float(args["motion_gs"])))
        conditions["motion_cond"] = out["motion_embedding"]
    out["y"] = unet(inputs["x"], inputs["timesteps"], inputs["context"], inputs["fps"], **conditions)
    out["y_no_cond"] = unet(inputs["x"], inputs["timesteps"], inputs["context"], inputs["fps"])

    calls: list[dict[str, torch.Tensor]] = []

    def unet_recorded(x, t, context, fps, **kwargs):
        eps = unet(x, t, context, fps, **kwargs)
        calls.append({"x": x, "eps": eps, "motion_cond": kwargs.get("motion_cond")})
        return eps

    schedule = DiffusionSchedule(ScheduleConfig(**case.sidecar["schedule"]))
    plan = plan_sampling("t2v-turbo", schedule, args["num_inference_steps"],
                         spacing=f"origin-{args['lcm_origin_steps']}")
    eps_fn = TurboEps(unet_recorded, inputs["prompt_embeds"], args["guidance_scale"], fps=args["fps"],
                      motion_scale=args["motion_gs"] if args["use_motion_cond"] else None,
                      motion_share=args["percentage"], num_timesteps=schedule.num_timesteps)
    denoised = []
    out["samples"] = plan.run(eps_fn, inputs["x_T"], noise=replayed_noise(inputs["noise"]),
                              callback=lambda step: denoised.append(step.pred_x0))
    out["timesteps"] = torch.tensor(plan.steps.timesteps, dtype=torch.int64)
    for i, call in enumerate(calls):
        out[f"step{i}.x"], out[f"step{i}.eps"], out[f"step{i}.denoised"] = call["x"], call["eps"], denoised[i]
        if call["motion_cond"] is not None:
            out[f"step{i}.motion_cond"] = call["motion_cond"]
    return out
