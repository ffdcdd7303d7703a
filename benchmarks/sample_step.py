"""Time one sampler step (classifier-free guided UNet call + DDIM update) per dtype and attention backend.

    python benchmarks/sample_step.py          # CPU, mid config: writes benchmarks/results/sample_step_cpu.json
    python benchmarks/sample_step.py --device cuda --preset vc2-512 --frames 16 --height 40 --width 64 \
        --dtypes bf16 fp16 --backends sdpa

Each (dtype, backend) runs in its own process, so the peak memory of one does not hide another's.
A step is what ``vc2 sample`` repeats: the UNet on cond and uncond as one batch of 2, then the
DDIM update in float32. Per-step times come from the sampler's step callback; the first step is
warm-up. Peak memory is the process's resident set sampled every 5 ms while stepping (CPU) or the
CUDA allocator's peak (GPU), with the figure before stepping for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import PeakRSS, machine, mid_config, resident_bytes, write_result

from vc2_core.attention import attention_backend
from vc2_core.config import preset
from vc2_core.diffusion import DiffusionSchedule, GuidedEps, sample, seeded_noise
from vc2_core.modules import UNetModel
from vc2_core.precision import DTYPES
from vc2_core.random_weights import randomize_zero_initialized


def child(args: argparse.Namespace) -> dict:
    """One (dtype, backend) measurement in this process."""
    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    torch.manual_seed(0)
    unet = UNetModel(config).eval()
    randomize_zero_initialized(unet, torch.Generator().manual_seed(1))
    unet.to(device, dtype)
    schedule = DiffusionSchedule(preset("vc2-512").schedule)
    g = torch.Generator().manual_seed(2)
    context = torch.randn(1, 77, config.context_dim, generator=g).to(device, dtype)
    uncond = torch.randn(1, 77, config.context_dim, generator=g).to(device, dtype)
    noise = seeded_noise([3])
    x_T = noise(torch.Size((1, config.in_channels, args.frames, args.height, args.width))).to(device)
    eps_fn = GuidedEps(unet, context, uncond, 12.0, fps=28, dtype=dtype)

    stamps: list[float] = []

    def on_step(_step) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    before = resident_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss, torch.no_grad(), attention_backend(args.backend):
        start = time.perf_counter()
        sample("ddim", eps_fn, x_T, schedule, args.steps, eta=1.0, noise=noise, callback=on_step)
    step_times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)][1:]  # first step: warm-up
    result = {
        "median_step_s": statistics.median(step_times),
        "min_step_s": min(step_times),
        "max_step_s": max(step_times),
        "timed_steps": len(step_times),
        "step_times_s": step_times,
        "rss_before_steps_gb": before / 1e9,
        "peak_rss_gb": rss.peak / 1e9,
    }
    if device.type == "cuda":
        result["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    result["parameters"] = sum(p.numel() for p in unet.parameters())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mid", help="'mid' (default) or a preset name (vc2-512, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--backends", nargs="+", default=["math", "sdpa"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=32, help="latent height (pixels / 8)")
    parser.add_argument("--width", type=int, default=32, help="latent width (pixels / 8)")
    parser.add_argument("--steps", type=int, default=6, help="DDIM steps per run (the first is warm-up)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("DTYPE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        args.dtype, args.backend = args.child
        print(json.dumps(child(args)))
        return

    results: dict[str, dict] = {}
    shared = ["--preset", args.preset, "--device", args.device, "--frames", str(args.frames), "--height",
              str(args.height), "--width", str(args.width), "--steps", str(args.steps)]
    for dtype in args.dtypes:
        for backend in args.backends:
            name = f"{dtype}/{backend}"
            run = subprocess.run([sys.executable, __file__, *shared, "--child", dtype, backend],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                reason = (run.stderr.strip().splitlines() or ["exit status " + str(run.returncode)])[-1]
                results[name] = {"error": reason}
                print(f"{name:>12}: does not run here: {reason}")
                continue
            results[name] = json.loads(run.stdout.strip().splitlines()[-1])
            r = results[name]
            memory = (f"peak GPU {r['peak_gpu_allocated_gb']:.2f} GB" if "peak_gpu_allocated_gb" in r
                      else f"peak RSS {r['peak_rss_gb']:.2f} GB (before steps {r['rss_before_steps_gb']:.2f})")
            print(f"{name:>12}: median {r['median_step_s'] * 1e3:8.1f} ms/step (min {r['min_step_s'] * 1e3:.1f}, "
                  f"max {r['max_step_s'] * 1e3:.1f}, n={r['timed_steps']}), {memory}", flush=True)
    reference = results.get(f"{args.dtypes[0]}/{args.backends[0]}", {}).get("median_step_s")
    for r in results.values():
        if reference and "median_step_s" in r:
            r["ratio_to_first"] = r["median_step_s"] / reference
    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    out = args.out or Path(__file__).parent / "results" / f"sample_step_{args.device.split(':')[0]}.json"
    write_result(out, {
        "benchmark": "sample_step",
        "machine": machine(),
        "config": dataclasses.asdict(config) | {"name": args.preset},
        "input": {"batch": 1, "cfg_batch": 2, "frames": args.frames, "latent_height": args.height,
                  "latent_width": args.width, "device": args.device, "sampler": "ddim", "eta": 1.0, "cfg": 12.0},
        "results": results,
    })


if __name__ == "__main__":
    main()
