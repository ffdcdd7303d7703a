"""Sweep the temporal-attention kernel's launch choices (sequences per program, warps) at the VC2 shapes.

    python benchmarks/kernel_sweep.py        # CUDA only: writes benchmarks/results/kernel_sweep_cuda.json
    python benchmarks/kernel_sweep.py --summarize benchmarks/results/kernel_sweep_cuda.json
                                             # any machine: rule vs best of a recorded sweep -> *_summary.json

For each shape of attention_kernels.py and each (GROUP, num_warps), the forward and the backward
kernel are timed separately (CUDA events, median). The summary puts the choice of
``vc2_core.kernels.temporal_attention.launch_config`` (for the block the kernel really launches: frames
padded to a power of two) next to the best measured choice, forward, backward and both together, so the
rule can be checked against the measurements; it is recomputed from the rows with the current rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from attention_kernels import HEAD_DIM, SHAPES, cuda_median_ms
from common import machine, write_result

import vc2_core.kernels.temporal_attention as kernel


def rule_for(batch: int, heads: int, frames: int) -> tuple[int, int]:
    """The (GROUP, num_warps) the kernel launches on a GPU for (batch, frames, heads, HEAD_DIM) inputs."""
    seq, dim = kernel.padded_block(frames, HEAD_DIM)
    return kernel.launch_config(batch * heads, seq, dim)


def summarize(rows: list[dict]) -> list[dict]:
    """Per shape: the rule's times and the best measured ones (ms), and rule / best (1.0 = the rule is the best)."""
    summary = []
    for name, batch, heads, frames in SHAPES:
        measured = {(r["group"], r["num_warps"]): r for r in rows if r["shape"] == name}
        if not measured:
            continue
        rule = rule_for(batch, heads, frames)
        if rule not in measured:
            raise ValueError(f"{name}: the rule's choice {rule} was not measured; sweep it")
        entry = {"shape": name, "rule": list(rule)}
        for part, time_of in (("forward", lambda r: r["forward_ms"]), ("backward", lambda r: r["backward_ms"]),
                              ("forward+backward", lambda r: r["forward_ms"] + r["backward_ms"])):
            best = min(measured, key=lambda c: time_of(measured[c]))
            entry[part] = {"rule_ms": time_of(measured[rule]), "best_ms": time_of(measured[best]),
                           "best": list(best), "rule_over_best": time_of(measured[rule]) / time_of(measured[best])}
        summary.append(entry)
    return summary


def write_summary(sweep: Path) -> None:
    recorded = json.loads(sweep.read_text())
    write_result(sweep.with_name(sweep.stem + "_summary.json"), {
        "benchmark": "kernel_sweep_summary", "source": sweep.name, "swept_on": recorded["machine"],
        "dtype": recorded["dtype"], "shapes": summarize(recorded["rows"])})


def sweep(groups: list[int], warps_choices: list[int], repeats: int, dtype: torch.dtype) -> list[dict]:
    rows = []
    for name, batch, heads, frames in SHAPES:
        g = torch.Generator().manual_seed(0)
        q, k, v, grad_out = (torch.randn(batch, frames, heads, HEAD_DIM, generator=g).to("cuda", dtype)
                             for _ in range(4))
        rule = rule_for(batch, heads, frames)
        for group in groups:
            for warps in warps_choices:
                config = (group, warps)
                fwd = cuda_median_ms(lambda: kernel._forward(q, k, v, False, config), 3, repeats)
                bwd = cuda_median_ms(lambda: kernel._backward(q, k, v, grad_out, False, config), 3, repeats)
                rows.append({"shape": name, "group": group, "num_warps": warps, "forward_ms": fwd,
                             "backward_ms": bwd, "rule": config == rule})
                print(f"{name:>28} group {group} warps {warps}: fwd {fwd:.3f} ms  bwd {bwd:.3f} ms"
                      f"{'  <- rule' if config == rule else ''}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--warps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarize", type=Path, metavar="SWEEP_JSON",
                        help="only summarize a recorded sweep (no GPU needed)")
    args = parser.parse_args()
    if args.summarize:
        write_summary(args.summarize)
        return
    rows = sweep(args.groups, args.warps, args.repeats, getattr(torch, args.dtype))
    out = args.out or Path(__file__).parent / "results" / "kernel_sweep_cuda.json"
    write_result(out, {"benchmark": "kernel_sweep", "machine": machine(), "dtype": args.dtype, "rows": rows})
    write_summary(out)


if __name__ == "__main__":
    main()
