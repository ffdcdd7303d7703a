"""The VC2 MODEL in a real ComfyUI, without a server: ComfyUI's own sampling code and core nodes on it.

usage: COMFYUI_DIR=... $COMFY_VENV/bin/python tools/comfy_native_check.py [RESULTS.json]

On a tiny random checkpoint (the `tiny` preset) it runs, through ComfyUI's modules:
- numerics: comfy.sample.sample_custom with the euler sampler and VC2 Sigmas against vc2's own euler
  (tests/test_native_model.py derives the expected difference and its bound; the same bound is used here);
- KSampler (nodes.common_ksampler) with euler, euler_ancestral, dpmpp_2m, ddim, uni_pc on the normal and
  karras schedulers, each decoded by VC2 VAE Decode;
- LoraLoaderModelOnly with a vc2 LoRA converted by VC2 LoRA to ComfyUI format (the MODEL's weights after
  loading equal the pack's own deltas), TorchCompileModel (inductor) and EasyCache / LazyCache under KSampler.
Prints one line per check and writes them as JSON; exit status 1 when a check fails. VC2_CHECKS=numerics,lora
runs some of the checks (numerics, ksampler, lora, patches).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS, CFG, FPS, SEED = 5, 7.5, 8, 7
BOUND = STEPS * (CFG + 2) * 2.0**-23 * 10  # tests/test_native_model.py


def start_comfyui() -> None:
    """Import ComfyUI's modules as its main.py would, on the CPU."""
    sys.path.insert(0, os.environ["COMFYUI_DIR"])
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()


def load_pack(name: str = "vc2_pack"):
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(results_path: str | None) -> int:
    start_comfyui()
    import folder_paths
    import torch

    pack = load_pack()
    nodes = pack.NODE_CLASS_MAPPINGS
    vc2 = importlib.import_module("vc2_pack.vc2_core.checkpoint"), importlib.import_module("vc2_pack.vc2_core.config")
    work = Path(tempfile.mkdtemp(prefix="vc2_native_"))
    for folder in ("videocrafter", "loras"):
        (work / folder).mkdir()
        folder_paths.add_model_folder_path(folder, str(work / folder), is_default=True)
    model_module = importlib.import_module("vc2_pack.vc2_core.model")
    random_weights = importlib.import_module("vc2_pack.vc2_core.random_weights")
    torch.manual_seed(0)
    network = model_module.VideoCrafter(vc2[1].preset("tiny"))
    random_weights.randomize_zero_initialized(network.unet, torch.Generator().manual_seed(1))
    vc2[0].save_checkpoint(network, work / "videocrafter" / "tiny.safetensors")

    results = []

    def record(name: str, ok: bool, **details) -> None:
        results.append({"check": name, "ok": bool(ok), **details})
        print(("PASS " if ok else "FAIL ") + name + " " + json.dumps(details), flush=True)

    model, clip, vae, comfy_model = nodes["VC2_CheckpointLoader"]().load("tiny.safetensors", "fp32", "sdpa")
    encode, with_fps = nodes["VC2_TextEncode"]().encode, nodes["VC2_ConditioningFPS"]().set_fps
    positive = with_fps(encode(clip, "a red ball rolls")[0], FPS)[0]
    negative = with_fps(encode(clip, "")[0], FPS)[0]
    latent = nodes["VC2_EmptyVideoLatent"]().make(model, 48, 32, 4, 1)[0]
    context = dict(torch=torch, pack=pack, nodes=nodes, model=model, vae=vae, comfy_model=comfy_model,
                   positive=positive, negative=negative, latent=latent, work=work, record=record)
    checks = {"numerics": check_numerics, "ksampler": check_ksampler, "lora": check_lora,
              "patches": check_model_patches}
    with torch.inference_mode():  # as ComfyUI executes nodes
        for name in os.environ.get("VC2_CHECKS", ",".join(checks)).split(","):
            checks[name](context)
    if results_path:
        Path(results_path).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


def check_numerics(c) -> None:
    import comfy.sample
    import comfy.samplers

    model = c["model"]
    pipeline = importlib.import_module("vc2_pack.vc2_core.pipeline")
    diffusion = importlib.import_module("vc2_pack.vc2_core.diffusion")
    levels = importlib.import_module("vc2_pack.vc2_core.diffusion.levels")
    samples = c["latent"]["samples"]
    settings = pipeline.GenerationSettings(fps=FPS, steps=STEPS, cfg=CFG, sampler="euler").resolve_for_latents(
        model.config, samples.shape)
    noise = diffusion.seeded_noise([SEED])
    steps = []
    z = pipeline.sample_latents(model.unet, c["positive"][0][0], c["negative"][0][0], noise(samples.shape), settings,
                                noise, callback=steps.append)
    expected, last_x0 = z / model.config.scale_factor, steps[-1].pred_x0 / model.config.scale_factor
    a_0 = levels.make_levels(model.schedule, STEPS, "logsnr").alphas[-1]
    for end, reference, factor in (("official", expected, a_0), ("zero", last_x0, 1.0)):
        sigmas = c["nodes"]["VC2_Sigmas"]().sigmas(c["comfy_model"], STEPS, "logsnr", end)[0]
        started = time.perf_counter()
        out = comfy.sample.sample_custom(c["comfy_model"], comfy.sample.prepare_noise(samples, SEED), CFG,
                                         comfy.samplers.sampler_object("euler"), sigmas, c["positive"], c["negative"],
                                         samples)
        error = ((factor * out - reference).abs().max() / reference.abs().max()).item()
        c["record"](f"numerics euler {STEPS} steps, sigmas end {end}", error < BOUND, relative_error=f"{error:.2e}",
                    bound=f"{BOUND:.2e}", seconds=round(time.perf_counter() - started, 2))


def check_ksampler(c) -> None:
    import nodes as comfy_nodes

    torch = c["torch"]
    for sampler in ("euler", "euler_ancestral", "dpmpp_2m", "ddim", "uni_pc"):
        for scheduler in ("normal", "karras"):
            started = time.perf_counter()
            out = comfy_nodes.common_ksampler(c["comfy_model"], SEED, 8, CFG, sampler, scheduler, c["positive"],
                                              c["negative"], c["latent"])[0]
            frames = c["nodes"]["VC2_VAEDecode"]().decode(c["vae"], out, 1)[0]
            ok = out["samples"].shape == c["latent"]["samples"].shape and bool(torch.isfinite(frames).all())
            c["record"](f"KSampler {sampler} {scheduler} 8 steps + VC2 VAE Decode", ok,
                        frames=list(frames.shape), seconds=round(time.perf_counter() - started, 2))


def check_lora(c) -> None:
    import comfy.model_management

    import nodes as comfy_nodes

    torch = c["torch"]
    lora = importlib.import_module("vc2_pack.vc2_core.training.lora")
    with torch.inference_mode(False), torch.no_grad():  # a LoRA with random adapters, as training would leave one
        unet = type(c["model"].unet)(c["model"].config.unet)
        lora.inject_lora(unet, ["spatial", "temporal"], rank=2, alpha=3.0)
        generator = torch.Generator().manual_seed(0)
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        path = lora.save_lora(unet, c["work"] / "loras" / "vc2.safetensors", family="tiny",
                              groups=["spatial", "temporal"], rank=2, alpha=3.0, targets="attention")
    c["nodes"]["VC2_LoraToComfyUI"]().convert("vc2.safetensors")
    before = {k: v.clone() for k, v in c["model"].unet.state_dict().items()}
    patched = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(c["comfy_model"], "vc2_comfyui.safetensors",
                                                                      0.5)[0]
    comfy.model_management.load_models_gpu([patched], force_full_load=True)
    after = patched.model.diffusion_model.state_dict()
    deltas = lora.lora_weight_deltas(lora.read_lora(path), scale=0.5)
    worst = max((after[k] - before[k] - d).abs().max().item() for k, d in deltas.items())
    untouched = all(torch.equal(after[k], v) for k, v in before.items() if k not in deltas)
    c["record"]("LoraLoaderModelOnly (strength 0.5) on a converted vc2 LoRA", worst < 1e-5 and untouched,
                layers=len(deltas), worst_abs_error=f"{worst:.1e}")
    comfy.model_management.load_models_gpu([c["comfy_model"]], force_full_load=True)
    restored = all(torch.equal(c["model"].unet.state_dict()[k], v) for k, v in before.items())
    c["record"]("loading the base MODEL again removes the LoRA", restored)


def check_model_patches(c) -> None:
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    import nodes as comfy_nodes

    torch = c["torch"]

    def ksample(model, steps: int = 10):
        started = time.perf_counter()
        out = comfy_nodes.common_ksampler(model, SEED, steps, CFG, "euler", "normal", c["positive"], c["negative"],
                                          c["latent"])[0]["samples"]
        return out, round(time.perf_counter() - started, 2)

    plain, plain_time = ksample(c["comfy_model"])
    scale = plain.abs().max().item()
    compiled_model = TorchCompileModel.execute(c["comfy_model"], "inductor").result[0]
    compiled, first = ksample(compiled_model)
    compiled_again, second = ksample(compiled_model)
    error = (compiled_again - plain).abs().max().item() / scale
    c["record"]("TorchCompileModel (inductor) + KSampler euler 10 steps", error < 1e-4,
                relative_error=f"{error:.1e}", seconds_first=first, seconds_second=second, seconds_plain=plain_time)
    for node, label in ((EasyCacheNode, "EasyCache"), (LazyCacheNode, "LazyCache")):
        cached_model = node.execute(c["comfy_model"], 0.2, 0.15, 0.95, False).result[0]
        cached, seconds = ksample(cached_model)
        change = (cached - plain).abs().max().item() / scale
        c["record"](f"{label} (threshold 0.2) + KSampler euler 10 steps", bool(torch.isfinite(cached).all()),
                    relative_change=f"{change:.1e}", seconds=seconds, seconds_plain=plain_time)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
