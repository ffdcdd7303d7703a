"""Sweep the temporal-attention kernel's launch choices (sequences per program, warps) at the VC2 shapes.

    python benchmarks/kernel_sweep.py        # CUDA only: writes benchmarks/results/kernel_sweep_cuda.json

For each shape of attention_kernels.py and each (GROUP, num_warps), the forward and the backward
kernel are timed separately (CUDA events, median) and the choice of
``vc2_core.kernels.temporal_attention.launch_config`` is marked, so the rule can be checked against
the best measured choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from attention_kernels import HEAD_DIM, SHAPES, cuda_median_ms
from common import machine, write_result

import vc2_core.kernels.temporal_attention as kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--warps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    for name, batch, heads, frames in SHAPES:
        g = torch.Generator().manual_seed(0)
        q, k, v, grad_out = (torch.randn(batch, frames, heads, HEAD_DIM, generator=g).to("cuda", dtype)
                             for _ in range(4))
        rule = kernel.launch_config(batch * heads, max(16, frames), HEAD_DIM)
        for group in args.groups:
            for warps in args.warps:
                config = (group, warps)
                fwd = cuda_median_ms(lambda: kernel._forward(q, k, v, False, config), 3, args.repeats)
                bwd = cuda_median_ms(lambda: kernel._backward(q, k, v, grad_out, False, config), 3, args.repeats)
                rows.append({"shape": name, "group": group, "num_warps": warps, "forward_ms": fwd,
                             "backward_ms": bwd, "rule": config == rule})
                print(f"{name:>28} group {group} warps {warps}: fwd {fwd:.3f} ms  bwd {bwd:.3f} ms"
                      f"{'  <- rule' if config == rule else ''}", flush=True)
    out = args.out or Path(__file__).parent / "results" / "kernel_sweep_cuda.json"
    write_result(out, {"benchmark": "kernel_sweep", "machine": machine(), "dtype": args.dtype, "rows": rows})


if __name__ == "__main__":
    main()
