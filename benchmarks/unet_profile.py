"""Profile one UNet forward and list where the time goes (torch.profiler, top operators).

    python benchmarks/unet_profile.py --device cuda      # VC2-512, 16 x 40 x 64 latents, batch 2 (CFG), bf16
    python benchmarks/unet_profile.py --device cpu --preset mid --frames 8 --height 32 --width 32 --batch 1 \
        --dtype float32

Writes benchmarks/results/unet_profile_<device>.json: the top operators by self time (device time
on CUDA), their call counts and shares, and the total.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from common import machine, mid_config, write_result
from torch.profiler import ProfilerActivity, profile

from vc2_core.attention import attention_backend
from vc2_core.config import preset
from vc2_core.modules import UNetModel
from vc2_core.random_weights import randomize_zero_initialized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vc2-512")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=40)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNetModel(config).eval()
    randomize_zero_initialized(unet, torch.Generator().manual_seed(1))
    unet.to(dtype=dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(args.batch, config.in_channels, args.frames, args.height, args.width, generator=g).to(device, dtype)
    context = torch.randn(args.batch, 77, config.context_dim, generator=g).to(device, dtype)
    t = torch.full((args.batch,), 500, device=device)
    on_cuda = device.type == "cuda"
    with torch.no_grad(), attention_backend(args.attention):
        for _ in range(3):
            unet(x, t, context, 28)
        if on_cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with profile(activities=activities) as prof:
            unet(x, t, context, 28)
            if on_cuda:
                torch.cuda.synchronize()
    events = prof.key_averages()
    key = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events)
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:args.top]
    rows = [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total}
            for e in top]
    for row in rows:
        print(f"{row['op'][:60]:>60} {row['calls']:6d} {row['self_ms']:9.2f} ms {100 * row['share']:5.1f} %")
    print(f"total self {'device' if on_cuda else 'CPU'} time {total / 1e3:.1f} ms")
    out = args.out or Path(__file__).parent / "results" / f"unet_profile_{device.type}.json"
    write_result(out, {"benchmark": "unet_profile", "machine": machine(),
                       "config": dataclasses.asdict(config) | {"name": args.preset},
                       "input": {"batch": args.batch, "frames": args.frames, "height": args.height,
                                 "width": args.width, "dtype": args.dtype, "attention": args.attention},
                       "total_ms": total / 1e3, "top": rows})


if __name__ == "__main__":
    main()
