"""Write the T2V-Turbo (VC2) parity goldens by running T2V-Turbo's own code on the CPU with random weights.

    python tools/t2v_turbo_goldens.py --t2v-turbo-src /work/t2v-turbo-src --out tests/parity/goldens_t2v_turbo

``--t2v-turbo-src`` is a checkout of the public repository Ji4chenLi/t2v-turbo (commit recorded in
each sidecar); this script imports its modules from there (nothing of it is copied into vc2). It
runs in its own environment, not the project's: torch 2.13 (CPU) plus what that code imports
(diffusers 0.30.0 as their cog.yaml pins, einops, omegaconf, pytorch_lightning, opencv, torchvision, safetensors).

Two cases, each NAME.safetensors (sd./in./out. tensors, as shared/reference/FORMAT.md) + NAME.json
(kind ``t2v_turbo_sampling``):

- ``turbo_v1_lora_tiny``: T2V-Turbo (VC2), a LoRA (``unet_lora.pt``, written by their
  ``save_lora_weight``, shipped beside the case) merged the way their app.py merges it
  (LoraHandler injection, ``collapse_lora``), 4 steps on 50 origin steps (their v1 defaults).
- ``turbo_v2_motion_tiny``: T2V-Turbo-v2, a full UNet state dict with the guidance embedding and
  the motion condition (their ``unet_mg.pt`` layout), 4 steps on 200 origin steps (their v2 app).

Each records a UNet forward with ``timestep_cond`` (and ``motion_cond``) and their pipeline's
sampling loop step by step (the UNet's inputs and outputs, the scheduler's denoised estimates),
with the noise each step drew recorded so that it can be replayed.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

TINY_UNET = {  # the flags of their configs/inference_t2v_512_v2.0.yaml at toy sizes
    "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [1],
    "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 8, "transformer_depth": 1,
    "context_dim": 16, "use_linear": True, "use_checkpoint": False, "temporal_conv": True,
    "temporal_attention": True, "temporal_selfatt_only": True, "use_relative_position": False,
    "use_causal_attention": False, "temporal_length": 4, "addition_attention": True, "fps_cond": True,
}
SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}  # their VC2 config
EMBEDDING_DIM = 256  # their pipeline's get_w_embedding(..., embedding_dim=256)
BATCH, FRAMES, LATENT = 2, 4, 8  # latents (2, 4, 4, 8, 8)
LORA_RANK = 4

CASES = {
    "turbo_v1_lora_tiny": {
        "seed": 1700, "lora": True, "motion_cond_proj_dim": None, "sd_base_case": None,
        "sampler_args": {"num_inference_steps": 4, "lcm_origin_steps": 50, "guidance_scale": 7.5, "fps": 16,
                         "use_motion_cond": False, "motion_gs": 0.0, "percentage": 0.0},
    },
    "turbo_v2_motion_tiny": {
        "seed": 1701, "lora": False, "motion_cond_proj_dim": EMBEDDING_DIM, "sd_base_case": "turbo_v1_lora_tiny",
        "sampler_args": {"num_inference_steps": 4, "lcm_origin_steps": 200, "guidance_scale": 7.5, "fps": 8,
                         "use_motion_cond": True, "motion_gs": 0.05, "percentage": 0.3},
    },
}


def randomize(module: nn.Module, seed: int) -> None:
    """FORMAT.md section 2: norms 1 + 0.1 N / 0.1 N, other biases 0.05 N, the rest N / sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    norms = {name for name, m in module.named_modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))}
    with torch.no_grad():
        for name, param in module.named_parameters():
            owner, _, leaf = name.rpartition(".")
            noise = torch.randn(param.shape, generator=generator)
            if owner in norms:
                param.copy_(1 + 0.1 * noise if leaf == "weight" else 0.1 * noise)
            elif leaf == "bias":
                param.copy_(0.05 * noise)
            else:
                fan_in = param[0].numel() if param.ndim > 1 else 1
                param.copy_(noise / fan_in**0.5)


def unet_config(case: dict) -> dict:
    config = dict(TINY_UNET, time_cond_proj_dim=EMBEDDING_DIM)
    if case["motion_cond_proj_dim"] is not None:
        config["motion_cond_proj_dim"] = case["motion_cond_proj_dim"]
    return config


def build_unet(src_modules, case: dict) -> nn.Module:
    """Their UNet with random weights: the base case's weights, then random values for the layers it lacks."""
    torch.manual_seed(case["seed"])
    unet = src_modules["UNetModel"](**unet_config(case))
    if case["sd_base_case"] is None:
        randomize(unet, case["seed"])
        return unet.eval()
    base = build_unet(src_modules, CASES[case["sd_base_case"]])
    missing = unet.load_state_dict(base.state_dict(), strict=False).missing_keys
    for key in missing:
        randomize(unet.get_submodule(key.rpartition(".")[0]), case["seed"] + len(key))
    return unet.eval()


def new_keys(src_modules, case: dict) -> set[str]:
    """The state-dict keys a case has beyond its base case's (the v2 motion condition's layers)."""
    base = CASES[case["sd_base_case"]]
    return {key for key in sd_keys(src_modules, case) if key not in sd_keys(src_modules, base)}


def sd_keys(src_modules, case: dict) -> set[str]:
    with torch.device("meta"):
        return set(src_modules["UNetModel"](**unet_config(case)).state_dict())


def write_their_lora(src_modules, base: nn.Module, path: Path, seed: int) -> None:
    """A LoRA of random values in their file format: inject with their handler, fill, save with save_lora_weight."""
    unet = copy.deepcopy(base)
    handler = their_lora_handler(src_modules)
    handler.add_lora_to_model(True, unet, handler.unet_replace_modules, r=LORA_RANK)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in unet.modules():
            if type(module).__name__.startswith("LoraInjected"):
                for part, gain in ((module.lora_down, 1.0), (module.lora_up, 0.2)):
                    weight = part.weight
                    fan_in = weight[0].numel()
                    weight.copy_(gain * torch.randn(weight.shape, generator=generator) / fan_in**0.5)
    src_modules["save_lora_weight"](unet, str(path), ["UNetModel"])


def their_lora_handler(src_modules):
    return src_modules["LoraHandler"](version="cloneofsimo", use_unet_lora=True, save_for_webui=True,
                                      unet_replace_modules=["UNetModel"])


def merge_their_lora(src_modules, unet: nn.Module, path: Path) -> list[str]:
    """As their app.py: inject from the file (r=64), collapse, remove the wrappers. Returns the wrapped paths."""
    handler = their_lora_handler(src_modules)
    handler.add_lora_to_model(True, unet, handler.unet_replace_modules, lora_path=str(path), dropout=0.1, r=64)
    wrapped = [name for name, m in unet.named_modules() if type(m).__name__.startswith("LoraInjected")]
    src_modules["collapse_lora"](unet, handler.unet_replace_modules)
    src_modules["monkeypatch_remove_lora"](unet)
    return wrapped


class StandIn(nn.Module):
    """What their pipeline reads from a LatentDiffusion, without the text encoder and VAE (latents only)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = unet
        self.first_stage_model = nn.Identity()
        self.cond_stage_model = nn.Identity()
        self.temporal_length = FRAMES

    @property
    def device(self) -> torch.device:  # a LightningModule's, which the pipeline reads
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


def record_calls(unet: nn.Module, calls: list) -> torch.utils.hooks.RemovableHandle:
    def hook(module, args, kwargs, output):
        calls.append({"x": args[0].clone(), "eps": output.clone(), "motion_cond": kwargs.get("motion_cond")})
    return unet.register_forward_hook(hook, with_kwargs=True)


def recording_scheduler(src_modules, denoised: list):
    """Their scheduler, keeping each step's denoised estimate (the second value step returns)."""

    class Recording(src_modules["T2VTurboScheduler"]):
        def step(self, *args, **kwargs):
            result = super().step(*args, **kwargs)
            denoised.append(result[1].clone())
            return result

    return Recording(linear_start=SCHEDULE["linear_start"], linear_end=SCHEDULE["linear_end"])


def run_case(src_modules, name: str, case: dict, out_dir: Path, commit: str) -> None:
    sd = {k: v.clone() for k, v in build_unet(src_modules, case).state_dict().items()}
    unet = build_unet(src_modules, case)
    lora_info = None
    if case["lora"]:
        lora_path = out_dir / f"{name}.unet_lora.pt"
        write_their_lora(src_modules, unet, lora_path, case["seed"])
        layers = merge_their_lora(src_modules, unet, lora_path)
        lora_info = {"file": lora_path.name, "rank": LORA_RANK, "num_layers": len(layers), "layers": layers}
    unet.eval()
    inputs = make_inputs(case["seed"] + 2)
    denoised: list[torch.Tensor] = []
    pipeline = src_modules["T2VTurboVC2Pipeline"](StandIn(unet), recording_scheduler(src_modules, denoised),
                                                  {"params": {"unet_config": {"params": dict(TINY_UNET)}}})
    with torch.no_grad():
        outputs = unet_outputs(pipeline, unet, inputs, case)
        outputs.update(sampling_outputs(pipeline, unet, inputs, case, denoised))
    if case["sd_base_case"] is None:
        stored = sd
    else:
        own = new_keys(src_modules, case)
        stored = {k: v for k, v in sd.items() if k in own}
    write_case(out_dir, name, case, commit, stored, inputs, outputs, lora_info)


def make_inputs(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(BATCH, 4, FRAMES, LATENT, LATENT, generator=generator),
        "timesteps": torch.tensor([999, 421], dtype=torch.int64),
        "context": torch.randn(BATCH, 77, TINY_UNET["context_dim"], generator=generator),
        "fps": torch.tensor([16, 8], dtype=torch.int64),
        "x_T": torch.randn(BATCH, 4, FRAMES, LATENT, LATENT, generator=generator),
        "prompt_embeds": torch.randn(BATCH, 77, TINY_UNET["context_dim"], generator=generator),
    }


def unet_outputs(pipeline, unet: nn.Module, inputs: dict, case: dict) -> dict[str, torch.Tensor]:
    """Their embeddings of the sampler's scales, and one UNet forward with and without them."""
    args = case["sampler_args"]
    outputs = {"w_embedding": pipeline.get_w_embedding(torch.tensor(args["guidance_scale"]).repeat(BATCH),
                                                       embedding_dim=EMBEDDING_DIM)}
    conditions = {"timestep_cond": outputs["w_embedding"]}
    if case["motion_cond_proj_dim"] is not None:
        outputs["motion_embedding"] = pipeline.get_w_embedding(torch.tensor(args["motion_gs"]).repeat(BATCH),
                                                               embedding_dim=EMBEDDING_DIM)
        conditions["motion_cond"] = outputs["motion_embedding"]
    plain = {"context": inputs["context"], "fps": inputs["fps"]}
    outputs["y"] = unet(inputs["x"], inputs["timesteps"], **plain, **conditions)
    outputs["y_no_cond"] = unet(inputs["x"], inputs["timesteps"], **plain)
    return outputs


def sampling_outputs(pipeline, unet: nn.Module, inputs: dict, case: dict, denoised: list) -> dict[str, torch.Tensor]:
    """Their pipeline from in.x_T, step by step; records in.noise (the draws of the pipeline's generator)."""
    args, steps, noise_seed = case["sampler_args"], case["sampler_args"]["num_inference_steps"], case["seed"] + 3
    replay = torch.Generator().manual_seed(noise_seed)  # the same draws as the pipeline's generator
    drawn = [torch.randn(inputs["x_T"].shape, generator=replay) for _ in range(steps)]
    inputs["noise"] = torch.stack(drawn[: steps - 1])  # the last draw is never used (the result is its denoised)
    calls: list[dict] = []
    handle = record_calls(unet, calls)
    samples = pipeline(prompt=None, prompt_embeds=inputs["prompt_embeds"], height=LATENT * 8, width=LATENT * 8,
                       frames=FRAMES, fps=args["fps"], guidance_scale=args["guidance_scale"],
                       motion_gs=args["motion_gs"], use_motion_cond=args["use_motion_cond"],
                       percentage=args["percentage"], num_inference_steps=steps,
                       lcm_origin_steps=args["lcm_origin_steps"], latents=inputs["x_T"].clone(),
                       generator=torch.Generator().manual_seed(noise_seed), output_type="latent")
    handle.remove()
    outputs = {"timesteps": pipeline.scheduler.timesteps.clone().to(torch.int64), "samples": samples}
    for i, call in enumerate(calls):
        outputs[f"step{i}.x"], outputs[f"step{i}.eps"], outputs[f"step{i}.denoised"] = \
            call["x"], call["eps"], denoised[i]
        if call["motion_cond"] is not None:
            outputs[f"step{i}.motion_cond"] = call["motion_cond"]
    check_replay(pipeline.scheduler, outputs, inputs["noise"])
    return outputs


def write_case(out_dir: Path, name: str, case: dict, commit: str, sd: dict, inputs: dict, outputs: dict,
               lora_info: dict | None) -> None:
    tensors = {f"sd.{k}": v.contiguous() for k, v in sd.items()}
    tensors.update({f"in.{k}": v.contiguous() for k, v in inputs.items()})
    tensors.update({f"out.{k}": v.contiguous() for k, v in outputs.items()})
    path = out_dir / f"{name}.safetensors"
    save_file(tensors, str(path), metadata={"case": name})
    sidecar = {
        "case": name,
        "kind": "t2v_turbo_sampling",
        "official_code": ["lvdm.modules.networks.openaimodel3d.UNetModel (T2V-Turbo's copy, with time_cond_proj)",
                          "pipeline.t2v_turbo_vc2_pipeline.T2VTurboVC2Pipeline",
                          "scheduler.t2v_turbo_scheduler.T2VTurboScheduler"]
                         + (["utils.lora_handler.LoraHandler", "utils.lora.save_lora_weight / collapse_lora"]
                            if case["lora"] else []),
        "t2v_turbo_commit": commit,
        "config": unet_config(case),
        "schedule": SCHEDULE,
        "sampler_args": case["sampler_args"],
        "lora": lora_info,
        "sd_module": "their UNetModel(**config).state_dict() before any LoRA (the base the LoRA is merged into)",
        "sd_base_case": case["sd_base_case"],
        "seed": case["seed"],
        "noise_seed": case["seed"] + 3,
        "math": MATH,
        "notes": NOTES,
        "env": environment(),
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                    for k, v in tensors.items() if not k.startswith("sd.")},
        "file": path.name,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"{path}: {path.stat().st_size} bytes, {len(tensors)} tensors")


def check_replay(scheduler, outputs: dict, noise: torch.Tensor) -> None:
    """The recorded noise reproduces each step's re-noised latents (the next step's UNet input)."""
    alphas, timesteps = scheduler.alphas_cumprod, outputs["timesteps"]
    for i in range(len(timesteps) - 1):
        a_next = alphas[timesteps[i + 1]]
        renoised = a_next.sqrt() * outputs[f"step{i}.denoised"] + (1 - a_next).sqrt() * noise[i]
        error = (renoised - outputs[f"step{i + 1}.x"]).abs().max().item()
        assert error < 1e-5, f"step {i}: the recorded noise does not replay ({error})"
    assert torch.equal(outputs["samples"], outputs[f"step{len(timesteps) - 1}.denoised"])


MATH = [
    "w_embedding(w, 256): w*1000, half=128, f_k = exp(-k*ln(10000)/(half-1)) (float32), [sin(w f), cos(w f)] "
    "(sin first)",
    "UNet: emb = time_embed(sinusoid(t) + c) [+ fps_embedding(sinusoid(fps))], c = time_cond_proj(timestep_cond) "
    "or, with motion_cond, combine_proj(cat[time_cond_proj(timestep_cond), motion_cond_proj(motion_cond)])",
    "timesteps: c = 1000 // origin; origin = (1..origin)*c - 1; timesteps = origin[::-(origin // steps)][:steps]",
    "step i at t (next t' = timesteps[i+1], the last step uses t' = t): a = alphas_cumprod (float32 cumprod of "
    "1 - linspace(sqrt(0.00085), sqrt(0.012), 1000)^2; no VC2 scale_arr); x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t); "
    "c_skip = 0.25 / ((t/0.1)^2 + 0.25), c_out = (t/0.1) / sqrt((t/0.1)^2 + 0.25); denoised = c_out x0 + "
    "c_skip x; x <- sqrt(a_t') denoised + sqrt(1-a_t') z_i",
    "result: the last step's denoised (its re-noised x is discarded); one UNet call per step, no CFG pass",
    "motion_cond (v2): w_embedding(motion_gs) while t >= 1000 * (1 - percentage), else w_embedding(0)",
]
NOTES = [
    "weights: their UNetModel(**config) after torch.manual_seed(seed), then FORMAT.md's random scheme "
    "(randomize in tools/t2v_turbo_goldens.py), time_cond_proj included; with sd_base_case, the weights are that "
    "case's sd.* plus this file's sd.* (the layers the base lacks: motion_cond_proj, combine_proj)",
    "LoRA (v1): written by their save_lora_weight (a list [up_0, down_0, up_1, down_1, ...] over every Linear, "
    "Conv2d and Conv3d of the UNet in module order), merged as their app.py does (inject r=64 from the file, "
    "collapse_lora alpha 1, monkeypatch_remove_lora); 'layers' lists the wrapped modules in file order",
    "in.noise[i] is the noise step i drew (generator seeded noise_seed); the last step's draw is not used",
    "out.step{i}.x / .eps / .denoised (/ .motion_cond): step i's UNet input latents (step0.x = x_T), its "
    "output, the scheduler's denoised estimate (and the motion embedding the UNet got)",
    "out.y / out.y_no_cond: UNet(in.x, in.timesteps, in.context, in.fps) with and without the conditions",
]


def environment() -> dict:
    import diffusers
    import numpy
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "numpy": numpy.__version__, "torch_num_threads": torch.get_num_threads()}


def import_their_code(src: Path) -> dict:
    sys.path.insert(0, str(src))  # their modules import each other as top-level packages
    from lvdm.modules.networks.openaimodel3d import UNetModel
    from pipeline.t2v_turbo_vc2_pipeline import T2VTurboVC2Pipeline
    from scheduler.t2v_turbo_scheduler import T2VTurboScheduler
    from utils.lora import collapse_lora, monkeypatch_remove_lora, save_lora_weight
    from utils.lora_handler import LoraHandler
    return {"UNetModel": UNetModel, "T2VTurboVC2Pipeline": T2VTurboVC2Pipeline,
            "T2VTurboScheduler": T2VTurboScheduler, "collapse_lora": collapse_lora,
            "monkeypatch_remove_lora": monkeypatch_remove_lora, "save_lora_weight": save_lora_weight,
            "LoraHandler": LoraHandler}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--t2v-turbo-src", type=Path, required=True, help="a checkout of Ji4chenLi/t2v-turbo")
    parser.add_argument("--commit", default=None, help="its commit (default: read with git, else 'unknown')")
    parser.add_argument("--out", type=Path, required=True, help="the goldens folder to write")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    commit = args.commit or git_commit(args.t2v_turbo_src)
    src_modules = import_their_code(args.t2v_turbo_src.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        run_case(src_modules, name, case, args.out, commit)


def git_commit(src: Path) -> str:
    result = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


if __name__ == "__main__":
    main()
