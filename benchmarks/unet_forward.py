"""Time one UNet forward per attention backend at a mid-size VideoCrafter2 config.

    python benchmarks/unet_forward.py                       # CPU, fp32, writes benchmarks/results/unet_forward_cpu.json
    python benchmarks/unet_forward.py --device cuda --dtype bfloat16 --preset vc2-512 --frames 16 --height 40 --width 64

The mid-size config has VideoCrafter2's flags and layout (temporal convs, temporal
transformers, init_attn, fps embedding, 4 levels) with model_channels 64 instead of 320.
Random weights (zero-initialised layers randomised) from a fixed seed; same inputs for every backend.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from common import machine, mid_config, time_call, write_result

from vc2_core.attention import attention_backend, backend_names
from vc2_core.config import preset
from vc2_core.modules import UNetModel
from vc2_core.random_weights import randomize_zero_initialized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mid", help="'mid' (default) or a preset name (vc2-512, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=32, help="latent height")
    parser.add_argument("--width", type=int, default=32, help="latent width")
    parser.add_argument("--backends", nargs="+", default=["math", "sdpa"], choices=backend_names()[1:])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    unet = UNetModel(config).eval()
    randomize_zero_initialized(unet, torch.Generator().manual_seed(1))
    unet.to(args.device, dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(args.batch, config.in_channels, args.frames, args.height, args.width, generator=g)
    context = torch.randn(args.batch, 77, config.context_dim, generator=g)
    x, context = x.to(args.device, dtype), context.to(args.device, dtype)
    t = torch.full((args.batch,), 500, device=args.device)
    fps = torch.full((args.batch,), 28, device=args.device)

    results = {}
    for backend in args.backends:
        with torch.no_grad(), attention_backend(backend):
            timing = time_call(lambda: unet(x, t, context, fps), warmup=args.warmup, repeats=args.repeats,
                               device=args.device)
        results[backend] = timing
        print(f"{backend:>9}: median {timing['median_s'] * 1e3:8.1f} ms  (min {timing['min_s'] * 1e3:.1f}, "
              f"max {timing['max_s'] * 1e3:.1f}, n={args.repeats})")
    baseline = results[args.backends[0]]["median_s"]
    for backend in args.backends:
        results[backend]["ratio_to_" + args.backends[0]] = results[backend]["median_s"] / baseline
    out = args.out or Path(__file__).parent / "results" / f"unet_forward_{args.device.split(':')[0]}.json"
    write_result(out, {
        "benchmark": "unet_forward",
        "machine": machine(),
        "config": dataclasses.asdict(config) | {"name": args.preset},
        "parameters": sum(p.numel() for p in unet.parameters()),
        "input": {"batch": args.batch, "frames": args.frames, "latent_height": args.height,
                  "latent_width": args.width, "dtype": args.dtype, "device": args.device},
        "results": results,
    })


if __name__ == "__main__":
    main()
