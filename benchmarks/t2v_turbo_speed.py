"""Time a 4-step T2V-Turbo sample against the released 50-step CFG DDIM sample, on one model, in one run.

    python benchmarks/t2v_turbo_speed.py    # CPU, tiny-512 at 16 x 128 x 192: results/t2v_turbo_speed_cpu.json
    python benchmarks/t2v_turbo_speed.py --device cuda --dtype bfloat16 --preset vc2-512 --height 320 --width 512

Random weights (zero-initialised layers randomised) and a LoRA of random values in T2V-Turbo's file
layout, turned into their UNet by ``vc2_core.t2v_turbo.with_turbo``; both variants run through
``vc2_core.pipeline.generate`` (text encode, sampler, VAE decode) with the same prompt and seed,
alternating, after one warm-up each:

- ``ddim-50-cfg``: the released defaults (DDIM 50 steps, eta 1, cfg 12, cond and uncond batched);
- ``t2v-turbo-4``: their defaults (4 steps on 50 origin steps, cfg 7.5 as an embedding, one UNet call a step).

The ratio compares whole samples; the VAE decode (the same work in both) is split out with the sampler's
per-step callback.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import machine, write_result

from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.pipeline import GenerationSettings, generate
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.t2v_turbo import TurboLoRA, lora_targets, turbo_config, with_turbo

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_turbo_lora(model: VideoCrafter, rank: int = 8) -> TurboLoRA:
    """Random (up, down) pairs for every layer T2V-Turbo's LoRA adapts, in their order and layout."""
    with torch.device("meta"):
        shapes = [module.weight.shape for _, module in lora_targets(type(model.unet)(turbo_config(model.config.unet)))]
    generator, tensors = torch.Generator().manual_seed(7), []
    for shape in shapes:
        r = min(rank, shape[0], shape[1])
        tensors += [0.01 * torch.randn(shape[0], r, *([1] * (len(shape) - 2)), generator=generator),
                    torch.randn(r, *shape[1:], generator=generator) / shape[1:].numel() ** 0.5]
    return TurboLoRA(tensors, path=Path("random LoRA"))


def timed_sample(model: VideoCrafter, settings: GenerationSettings, device: torch.device) -> dict:
    stamps: list[float] = []

    def on_step(_step) -> None:
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    video = generate(model, ["a red ball bouncing on a wooden table"], [0], settings, device=device, offload=False,
                     callback=on_step)
    end = time.perf_counter()
    return {"total_s": end - start, "text_and_sampling_s": stamps[-1] - start, "decode_s": end - stamps[-1],
            "steps": len(stamps), "finite": bool(torch.isfinite(video).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--preset", default="tiny-512")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=2, help="timed samples per variant, after one warm-up")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    base = VideoCrafter(preset(args.preset)).eval()
    randomize_zero_initialized(base.unet, torch.Generator().manual_seed(1))
    turbo = with_turbo(base, random_turbo_lora(base))
    size = {"frames": args.frames, "height": args.height, "width": args.width}
    variants = {
        "ddim-50-cfg": (base, GenerationSettings(**size, steps=50, cfg=12.0, sampler="ddim")),
        "t2v-turbo-4": (turbo, GenerationSettings(**size, steps=4, cfg=7.5, sampler="t2v-turbo")),
    }
    for model, _ in variants.values():
        model.to(device=device, dtype=DTYPES[args.dtype])
        model.vae.float()  # as vc2 sample casts: the VAE stays fp32
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with torch.no_grad():
        for name, (model, settings) in variants.items():
            timed_sample(model, settings, device)  # warm-up
        for _ in range(args.repeats):
            for name, (model, settings) in variants.items():
                runs[name].append(timed_sample(model, settings, device))
    summary = {name: {key: statistics.median(run[key] for run in results) for key in ("total_s", "text_and_sampling_s")}
               for name, results in runs.items()}
    result = {
        "benchmark": "t2v_turbo_speed", "machine": machine(), "preset": args.preset, "dtype": args.dtype, **size,
        "runs": runs, "median": summary,
        "speedup_total": summary["ddim-50-cfg"]["total_s"] / summary["t2v-turbo-4"]["total_s"],
        "speedup_text_and_sampling": (summary["ddim-50-cfg"]["text_and_sampling_s"]
                                      / summary["t2v-turbo-4"]["text_and_sampling_s"]),
    }
    print(f"50-step CFG DDIM {summary['ddim-50-cfg']['total_s']:.2f} s, 4-step T2V-Turbo "
          f"{summary['t2v-turbo-4']['total_s']:.2f} s: {result['speedup_total']:.1f}x whole sample, "
          f"{result['speedup_text_and_sampling']:.1f}x without the VAE decode")
    out = args.out or Path(__file__).parent / "results" / f"t2v_turbo_speed_{device.type}.json"
    write_result(out, result)


if __name__ == "__main__":
    main()
