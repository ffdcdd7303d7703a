"""Time whole samples (text encode + 50-step CFG DDIM + VAE decode) with our UNet and with diffusers' UNet3D.

    python benchmarks/full_sample.py --device cuda        # VC2-512, 16 x 320 x 512, bf16: results/full_sample_cuda.json

Random weights of the full VideoCrafter2 model (text encoder, VAE, UNet), cast as ``vc2 sample
--dtype bf16`` casts them, sampled through ``vc2_core.pipeline.generate`` with the released
defaults (DDIM 50 steps, cfg 12, eta 1, fps 28, cond and uncond batched). Variants, each in the
same process on the same inputs:

- ``ours-auto``: our UNet, attention ``auto`` (the Triton kernel for temporal attention where it applies);
- ``ours-sdpa``: our UNet, SDPA for every attention;
- ``ours-math``: our UNet, the float32 einsum-softmax attention (the eager math path);
- ``diffusers-unet3d``: diffusers' ``UNet3DConditionModel`` at the same size (unet_vs_diffusers.py), swapped
  in for our UNet inside the same sampler.

The split text / UNet loop / VAE comes from the sampler's per-step callback (synchronised).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from common import machine, write_result
from unet_vs_diffusers import diffusers_unet3d_config

from vc2_core.attention import attention_backend
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.pipeline import GenerationSettings, generate
from vc2_core.precision import cast_for_inference
from vc2_core.random_weights import randomize_zero_initialized


class DiffusersUNet(nn.Module):
    """diffusers' UNet3DConditionModel behind our UNet's call signature (fps is ignored: it has no fps input)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.inner = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, fps=None) -> torch.Tensor:
        return self.inner(x, t, encoder_hidden_states=context).sample


def timed_sample(model: VideoCrafter, settings: GenerationSettings, device: torch.device) -> dict:
    stamps: list[float] = []

    def on_step(_step) -> None:
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        stamps.append(time.perf_counter())

    torch.cuda.synchronize(device) if device.type == "cuda" else None
    start = time.perf_counter()
    video = generate(model, ["a red ball bouncing on a wooden table"], [0], settings, device=device, offload=False,
                     callback=on_step)
    end = time.perf_counter()
    steps = len(stamps)
    per_step = (stamps[-1] - stamps[0]) / (steps - 1)
    return {"total_s": end - start, "unet_loop_s": per_step * steps, "per_step_s": per_step,
            "text_and_setup_s": stamps[0] - start - per_step, "vae_s": end - stamps[-1],
            "finite": bool(torch.isfinite(video).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--preset", default="vc2-512")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="timed samples per variant, after one warm-up")
    parser.add_argument("--variants", nargs="+", default=["ours-auto", "ours-sdpa", "ours-math", "diffusers-unet3d"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = preset(args.preset)

    torch.manual_seed(0)
    with torch.device(device):
        model = VideoCrafter(config).eval()
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    cast_for_inference(model, dtype)
    ours = model.unet
    settings = GenerationSettings(height=args.height, width=args.width, frames=args.frames, steps=args.steps,
                                  fps=28)
    results = {}
    for variant in args.variants:
        if variant == "diffusers-unet3d":
            from diffusers import UNet3DConditionModel
            torch.manual_seed(0)
            with torch.device(device):
                model.unet = DiffusersUNet(UNet3DConditionModel(**diffusers_unet3d_config(config.unet))).eval()
            model.unet.to(dtype=dtype)
        else:
            model.unet = ours
        with attention_backend(variant.removeprefix("ours-") if variant.startswith("ours-") else None):
            timed_sample(model, settings, device)  # warm-up: kernels compiled, allocator warm
            runs = [timed_sample(model, settings, device) for _ in range(args.repeats)]
        summary = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "finite"}
        summary["all_finite"] = all(run["finite"] for run in runs)
        summary["runs"] = runs
        if device.type == "cuda":
            summary["peak_memory_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
        results[variant] = summary
        print(f"{variant:>18}: total {summary['total_s']:.2f} s  (text+setup {summary['text_and_setup_s']:.2f}, "
              f"UNet loop {summary['unet_loop_s']:.2f} = {summary['per_step_s'] * 1e3:.1f} ms/step, "
              f"VAE {summary['vae_s']:.2f})  finite={summary['all_finite']}", flush=True)
        if variant == "diffusers-unet3d":
            model.unet = ours
    base = results.get("ours-auto")
    if base:
        for summary in results.values():
            summary["ratio_to_ours_auto"] = summary["total_s"] / base["total_s"]
    out = args.out or Path(__file__).parent / "results" / f"full_sample_{device.type}.json"
    write_result(out, {"benchmark": "full_sample", "machine": machine(), "preset": args.preset, "dtype": args.dtype,
                       "frames": args.frames, "height": args.height, "width": args.width, "steps": args.steps,
                       "cfg": 12.0, "sampler": "ddim", "results": results})


if __name__ == "__main__":
    main()
