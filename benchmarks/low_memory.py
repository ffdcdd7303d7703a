"""Peak memory of a whole sample in the default mode and in the low-memory mode (``pipeline.low_memory``).

    python benchmarks/low_memory.py        # CPU: tiny-512 at the released 16 x 320 x 512 -> results/low_memory_cpu.json
    python benchmarks/low_memory.py --device cuda --preset vc2-512 --dtype bf16   # (gpu_suite.py measures this too)

Each mode runs in its own process, so its peak is its own: on a CPU the resident set sampled every 5 ms while
``generate`` runs (the peak above the resident set just before it, i.e. what sampling and decoding add to the
loaded model), on a GPU the allocator's peak. Random weights; the released sampler defaults (DDIM, cfg 12),
``--steps`` steps (the peak of a step does not grow with their number).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import PeakRSS, machine, resident_bytes, write_result

from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.pipeline import GenerationSettings, generate, low_memory
from vc2_core.precision import DTYPES, cast_for_inference
from vc2_core.random_weights import randomize_zero_initialized

MODES = ("default", "low-memory")


def child(args: argparse.Namespace, mode: str) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VideoCrafter(preset(args.preset)).eval()
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    cast_for_inference(model, DTYPES[args.dtype])
    model.unet.to(device)  # the text encoder and VAE stay on the CPU: generate offloads them (its default)
    settings = GenerationSettings(steps=args.steps)
    settings = low_memory(settings) if mode == "low-memory" else settings
    before = resident_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with PeakRSS() as rss:
        video = generate(model, ["a red ball bouncing on a wooden table"], [0], settings, device=device)
    found = {"seconds": time.perf_counter() - start, "rss_before_gb": before / 1e9, "peak_rss_gb": rss.peak / 1e9,
             "peak_rss_added_gb": (rss.peak - before) / 1e9, "finite": bool(torch.isfinite(video).all()),
             "batched_cfg": settings.batched_cfg, "decode_chunk_frames": settings.decode_chunk_frames}
    if device.type == "cuda":
        found["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-512")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child)))
        return
    shared = ["--preset", args.preset, "--device", args.device, "--dtype", args.dtype, "--steps", str(args.steps)]
    results = {}
    for mode in MODES:
        run = subprocess.run([sys.executable, __file__, *shared, "--child", mode], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{mode}: {run.stderr.strip().splitlines()[-1:]}")
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{mode}: {json.dumps(results[mode])}", flush=True)
    config = preset(args.preset)
    out = args.out or Path(__file__).parent / "results" / f"low_memory_{args.device.split(':')[0]}.json"
    write_result(out, {"benchmark": "low_memory", "machine": machine(), "preset": args.preset, "dtype": args.dtype,
                       "frames": config.frames, "height": config.height, "width": config.width, "steps": args.steps,
                       "results": results})


if __name__ == "__main__":
    main()
