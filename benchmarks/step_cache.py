"""Step caching: speed-up against error, per cache setting, on random weights and on the demo's trained model.

    OMP_NUM_THREADS=1 python benchmarks/step_cache.py    # CPU: results/step_cache_cpu.json

For each setting of :mod:`vc2_core.diffusion.step_cache` (the presets and the candidates they were chosen
from), the whole sample (text encode, sampler, VAE decode through ``vc2_core.pipeline.generate``) is run with
the same prompts and seeds as the uncached one, and compared with it:

- speed-up: the uncached sample's time over this one's, as process CPU time (the machine may be shared: CPU
  time of a single-threaded process is what the cache saves; wall time is recorded beside it);
- error: relative L2 of the final latents and of the decoded frames, and the frames' PSNR (in [0, 1]), against
  the uncached run;
- (a) ``random``: tiny-512 (VideoCrafter2-512's four levels at toy width) with random weights, the released
  released sampler (DDIM, eta 1, cfg 12) at 30 steps, 8 frames at 64x64;
- (b) ``demo``: the demo's shipped base (vc2_core/assets/demo_base.safetensors) as the demo samples it (DDIM
  25 steps, eta 0, cfg 3, 8 frames at 32x32), every demo prompt and seed, with the project's metrics
  (experiments.scoring) averaged for each setting, and their change against the uncached videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_result

from vc2_core.checkpoint import load_checkpoint
from vc2_core.config import preset
from vc2_core.diffusion.step_cache import PRESETS, StepCache
from vc2_core.experiments.demo import SHIPPED_BASE
from vc2_core.experiments.presets import DEMO_PROMPTS, DEMO_SEEDS
from vc2_core.experiments.runs import FPS, FRAMES, SAMPLE_CFG, SIZE
from vc2_core.experiments.scoring import finite_mean, score
from vc2_core.model import VideoCrafter
from vc2_core.pipeline import GenerationSettings, generate
from vc2_core.random_weights import randomize_zero_initialized

FIRST_LAST = {"full_first": 2, "full_last": 1}
SETTINGS: dict[str, StepCache | None] = {
    "off": None,
    "safe": PRESETS["safe"],
    "fast": PRESETS["fast"],
    "deep2-d2": StepCache(deep_interval=2, deep_depth=2, **FIRST_LAST),
    "deep3-d2": StepCache(deep_interval=3, deep_depth=2, **FIRST_LAST),
    "uncond2-reuse": StepCache(uncond_interval=2, uncond_reuse="uncond", **FIRST_LAST),
    "stale-deep (wrong)": StepCache(deep_interval=10_000, deep_depth=1),  # the first step's feature forever
}
METRICS = ("direction_agreement", "track_jitter", "one_object", "colour_match", "colour_correct", "shape_correct")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def run_case(model: VideoCrafter, prompts: list[str], seeds: list[int], base: GenerationSettings,
             names: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Per setting: timings and errors against the uncached sample; and the decoded videos."""
    rows, videos, latents = {}, {}, {}
    generate(model, prompts[:1], seeds[:1], dataclasses.replace(base, steps=2))  # warm-up
    for name in names:
        settings = dataclasses.replace(base, step_cache=SETTINGS[name])
        steps = []
        videos[name], times = timed(lambda: generate(model, prompts, seeds, settings, callback=steps.append))
        latents[name] = steps[-1].x  # the sampler's final latents
        cache = SETTINGS[name]
        rows[name] = {"cache": None if cache is None else dataclasses.asdict(cache), **times}
        print(f"  {name}: {times['cpu_s']:.1f} s CPU", flush=True)
    reference_video, reference_latents = videos["off"], latents["off"]
    for name in names:
        rows[name] |= {
            "speedup_cpu": rows["off"]["cpu_s"] / rows[name]["cpu_s"],
            "speedup_wall": rows["off"]["wall_s"] / rows[name]["wall_s"],
            "latents_rel_l2": relative_l2(latents[name], reference_latents),
            "frames_rel_l2": relative_l2(videos[name], reference_video),
            "frames_psnr_db": psnr(videos[name], reference_video),
        }
    return rows, videos


def relative_l2(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of frames mapped to [0, 1] (clamped as the writers do)."""
    a, b = ((video + 1) / 2).clamp(0, 1), ((reference + 1) / 2).clamp(0, 1)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def demo_metrics(videos: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """The mean of each demo metric over the videos (b, 3, t, h, w) in [-1, 1]."""
    scores = [score(((video.permute(1, 2, 3, 0).numpy() + 1) / 2).clip(0, 1), prompt)
              for video, prompt in zip(videos, prompts, strict=True)]
    return {metric: finite_mean([s[metric] for s in scores]) for metric in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_cache_cpu.json")
    args = parser.parse_args()
    names = ["off", *[name for name in args.settings if name != "off"]]
    result = {"benchmark": "step_cache", "machine": machine(), "settings": names}

    with torch.no_grad():
        torch.manual_seed(0)
        model = VideoCrafter(preset("tiny-512")).eval()
        randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
        base = GenerationSettings(height=64, width=64, frames=8, steps=30, cfg=12.0, sampler="ddim")
        rows, _ = run_case(model, ["a red ball bouncing on a wooden table"], [0], base, names)
        result["random"] = {"model": "tiny-512, random weights", "sample": "ddim 30 steps, eta 1, cfg 12, 8x64x64",
                            "rows": rows}
        print_rows("random", rows)

        model, _ = load_checkpoint(SHIPPED_BASE)
        chosen = DEMO_PROMPTS[::2]  # 6 of the 12: each shape, colour, direction and speed, 2 composition prompts
        prompts = [prompt for prompt in chosen for _ in DEMO_SEEDS]
        seeds = [seed for _ in chosen for seed in DEMO_SEEDS]
        base = GenerationSettings(height=SIZE, width=SIZE, frames=FRAMES, fps=FPS, steps=25, cfg=SAMPLE_CFG, eta=0.0)
        rows, videos = run_case(model, prompts, seeds, base, names)
        for name in names:
            rows[name]["metrics"] = demo_metrics(videos[name], prompts)
        result["demo"] = {"model": "the demo's shipped base (demo_base.safetensors)",
                          "sample": f"ddim 25 steps, eta 0, cfg {SAMPLE_CFG}, {FRAMES}x{SIZE}x{SIZE}, "
                                    f"{len(prompts)} videos ({len(chosen)} prompts x {len(DEMO_SEEDS)} seeds)",
                          "rows": rows}
        print_rows("demo", rows)
    write_result(args.out, result)


def print_rows(case: str, rows: dict) -> None:
    for name, row in rows.items():
        print(f"{case:7s} {name:20s} x{row['speedup_cpu']:.2f} cpu  latents {row['latents_rel_l2']:.4f}  frames "
              f"{row['frames_rel_l2']:.4f}  PSNR {row['frames_psnr_db']:.1f} dB", flush=True)


if __name__ == "__main__":
    main()
