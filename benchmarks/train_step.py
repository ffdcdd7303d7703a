"""Time one training step (eps loss forward + backward + AdamW) with and without gradient checkpointing.

    python benchmarks/train_step.py        # CPU, mid config, fp32: writes benchmarks/results/train_step_cpu.json
    python benchmarks/train_step.py --device cuda --preset vc2-512 --frames 16 --height 40 --width 64 \
        --batches 1 4 --precision bf16     # the full model at 16x320x512 (latents 40x64)

A step is what ``vc2 train`` repeats for the UNet: ``diffusion_loss`` on the scaled forward process
(fps condition passed), backward, gradient clipping and AdamW over the stage's parameters (``full``
by default; ``--stage spa-dir`` for stage 2). The frozen VAE and text encoder are not included
(a latent cache removes them from the step). Each (batch, checkpointing) runs in its own process so
peak memory is its own: resident set sampled every 5 ms on the CPU, the allocator's peak on a GPU.
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
from vc2_core.diffusion import DiffusionSchedule
from vc2_core.modules import UNetModel
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.training import DataKind, apply_stage, diffusion_loss, get_stage

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def child(args: argparse.Namespace) -> dict:
    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    config = dataclasses.replace(config, use_checkpoint=args.checkpointing == "on")
    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = UNetModel(config)
    randomize_zero_initialized(unet, torch.Generator().manual_seed(1))
    unet.to(device).train()
    trainable = [p for _, p in apply_stage(unet, get_stage(args.stage))]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    schedule = DiffusionSchedule(preset("vc2-512").schedule)
    g = torch.Generator().manual_seed(2)
    frames = args.frames if DataKind.VIDEOS in get_stage(args.stage).data else 1
    latents = torch.randn(args.batch, config.in_channels, frames, args.height, args.width, generator=g).to(device)
    context = torch.randn(args.batch, 77, config.context_dim, generator=g).to(device)
    fps = torch.full((args.batch,), 8)

    def step() -> None:
        with torch.autocast(device.type, dtype=AUTOCAST[args.precision], enabled=args.precision != "fp32"):
            timesteps = torch.randint(0, schedule.num_timesteps, (args.batch,), generator=g)
            noise = torch.randn(latents.shape, generator=g)
            loss = diffusion_loss(unet, schedule, latents, context, fps, timesteps, noise)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 0.5)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    before = resident_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with PeakRSS() as rss, attention_backend(args.backend):
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    times = times[1:]  # the first step is warm-up (allocations, optimizer state)
    result = {"median_step_s": statistics.median(times), "min_step_s": min(times), "max_step_s": max(times),
              "timed_steps": len(times), "step_times_s": times, "rss_before_steps_gb": before / 1e9,
              "peak_rss_gb": rss.peak / 1e9, "parameters": sum(p.numel() for p in unet.parameters()),
              "trainable": sum(p.numel() for p in trainable)}
    if device.type == "cuda":
        result["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mid", help="'mid' (default) or a preset name (vc2-512, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=list(AUTOCAST), help="autocast dtype (fp32: none)")
    parser.add_argument("--stage", default="full", help="which parameters train (full, spa-dir, partial, ...)")
    parser.add_argument("--backend", default="auto", help="attention backend")
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=32, help="latent height (pixels / 8)")
    parser.add_argument("--width", type=int, default=32, help="latent width (pixels / 8)")
    parser.add_argument("--steps", type=int, default=4, help="steps per run (the first is warm-up)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("BATCH", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        args.batch, args.checkpointing = int(args.child[0]), args.child[1]
        print(json.dumps(child(args)))
        return

    shared = ["--preset", args.preset, "--device", args.device, "--precision", args.precision, "--stage", args.stage,
              "--backend", args.backend, "--frames", str(args.frames), "--height", str(args.height), "--width",
              str(args.width), "--steps", str(args.steps)]
    results: dict[str, dict] = {}
    for batch in args.batches:
        for checkpointing in ("off", "on"):
            name = f"batch{batch}/checkpointing-{checkpointing}"
            run = subprocess.run([sys.executable, __file__, *shared, "--child", str(batch), checkpointing],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                reason = (run.stderr.strip().splitlines() or ["exit status " + str(run.returncode)])[-1]
                results[name] = {"error": reason}
                print(f"{name}: does not run here: {reason}", flush=True)
                continue
            r = results[name] = json.loads(run.stdout.strip().splitlines()[-1])
            memory = (f"peak GPU {r['peak_gpu_allocated_gb']:.2f} GB" if "peak_gpu_allocated_gb" in r
                      else f"peak RSS {r['peak_rss_gb']:.2f} GB (before steps {r['rss_before_steps_gb']:.2f})")
            print(f"{name}: median {r['median_step_s']:.3f} s/step (min {r['min_step_s']:.3f}, n={r['timed_steps']}), "
                  f"{memory}", flush=True)
    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    out = args.out or Path(__file__).parent / "results" / f"train_step_{args.device.split(':')[0]}.json"
    write_result(out, {
        "benchmark": "train_step", "machine": machine(),
        "config": dataclasses.asdict(config) | {"name": args.preset},
        "input": {"frames": args.frames, "latent_height": args.height, "latent_width": args.width,
                  "device": args.device, "precision": args.precision, "stage": args.stage, "optimizer": "AdamW",
                  "max_grad_norm": 0.5},
        "results": results,
    })


if __name__ == "__main__":
    main()
