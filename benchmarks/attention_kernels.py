"""Attention microbenchmarks at VideoCrafter2's temporal-attention shapes, every backend, forward and backward.

    python benchmarks/attention_kernels.py --device cuda        # writes benchmarks/results/attention_kernels_cuda.json

Shapes are the temporal attention calls of one VC2-512 UNet forward at 16 x 320 x 512 with CFG
batched (batch 2): (batch = 2*h*w, seq = 16 frames, heads, head_dim 64) in the layers' layout
(batch, seq, heads, head_dim), plus 24- and 32-frame variants of the largest. Each backend is
timed with CUDA events (median of --repeats after warm-up) on the same inputs; its relative L2
error against the float32 math reference is recorded next to its time, and the achieved
bandwidth counts q, k, v, o once (forward) or q, k, v, o, do, dq, dk, dv (backward) in bytes.
SDPA is timed as PyTorch picks its kernel and with each kernel forced.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
from pathlib import Path

import torch
from common import machine, write_result
from torch.nn.attention import SDPBackend, sdpa_kernel

from vc2_core.attention import attention

# (name, batch rows = 2*h*w at the level, heads, frames); head_dim 64 everywhere in VC2-512
SHAPES = [
    ("temporal 40x64", 2 * 40 * 64, 5, 16),
    ("init_attn 40x64", 2 * 40 * 64, 8, 16),
    ("temporal 20x32", 2 * 20 * 32, 10, 16),
    ("temporal 10x16", 2 * 10 * 16, 20, 16),
    ("temporal 5x8", 2 * 5 * 8, 20, 16),
    ("temporal 40x64, 24 frames", 2 * 40 * 64, 5, 24),
    ("temporal 40x64, 32 frames", 2 * 40 * 64, 5, 32),
]
HEAD_DIM = 64

FORCED_SDPA = {
    "sdpa[flash]": SDPBackend.FLASH_ATTENTION,
    "sdpa[efficient]": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa[cudnn]": SDPBackend.CUDNN_ATTENTION,
}


def variants(device: str) -> dict[str, tuple[str, SDPBackend | None]]:
    """name -> (dispatch backend, the SDPA kernel it is forced to or None)."""
    found = {"math": ("math", None), "sdpa": ("sdpa", None)}
    if device == "cuda":
        found |= {name: ("sdpa", kernel) for name, kernel in FORCED_SDPA.items()}
        if importlib.util.find_spec("xformers") is not None:
            found["xformers"] = ("xformers", None)
        if importlib.util.find_spec("triton") is not None:
            found["triton"] = ("triton", None)
    return found


def forced(kernel: SDPBackend | None) -> contextlib.AbstractContextManager:
    return sdpa_kernel(kernel) if kernel is not None else contextlib.nullcontext()


def cuda_median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def cpu_median_ms(fn, warmup: int, repeats: int) -> float:
    import time
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).norm() / expected.norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dtype, device = getattr(torch, args.dtype), args.device
    timer = cuda_median_ms if device == "cuda" else cpu_median_ms
    rows = []
    for name, batch, heads, frames in SHAPES:
        g = torch.Generator().manual_seed(0)
        q, k, v, grad_out = (torch.randn(batch, frames, heads, HEAD_DIM, generator=g).to(device, dtype)
                             for _ in range(4))
        q32, k32, v32 = (x.float().requires_grad_() for x in (q, k, v))
        reference = attention(q32, k32, v32, backend="math")
        ref_grads = torch.autograd.grad(reference, (q32, k32, v32), grad_out.float())
        reference = reference.detach()
        element_bytes = q.numel() * q.element_size()
        for variant, (backend, sdpa_choice) in variants(device).items():
            qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

            def forward():
                with forced(sdpa_choice):
                    return attention(q, k, v, backend=backend)

            def forward_backward():
                with forced(sdpa_choice):
                    out = attention(qg, kg, vg, backend=backend)
                    return torch.autograd.grad(out, (qg, kg, vg), grad_out)

            try:
                out = forward()
                grads = forward_backward()
            except RuntimeError as error:  # a forced SDPA kernel that refuses the shape says so
                rows.append({"shape": name, "variant": variant, "error": str(error).splitlines()[0][:200]})
                print(f"{name:>28} {variant:>16}: {str(error).splitlines()[0][:80]}")
                continue
            fwd_ms = timer(forward, args.warmup, args.repeats)
            bwd_ms = timer(forward_backward, args.warmup, args.repeats)
            row = {
                "shape": name, "variant": variant, "batch": batch, "seq": frames, "heads": heads,
                "head_dim": HEAD_DIM, "forward_ms": fwd_ms, "forward_backward_ms": bwd_ms,
                "forward_GBps": 4 * element_bytes / fwd_ms / 1e6,
                "forward_backward_GBps": 11 * element_bytes / bwd_ms / 1e6,
                "forward_rel_error": relative_error(out, reference),
                "grad_rel_error": max(relative_error(a, b) for a, b in zip(grads, ref_grads)),
            }
            rows.append(row)
            print(f"{name:>28} {variant:>16}: fwd {fwd_ms:8.3f} ms ({row['forward_GBps']:6.0f} GB/s)  "
                  f"fwd+bwd {bwd_ms:8.3f} ms  err {row['forward_rel_error']:.1e}/{row['grad_rel_error']:.1e}",
                  flush=True)
    out = args.out or Path(__file__).parent / "results" / f"attention_kernels_{device}.json"
    write_result(out, {"benchmark": "attention_kernels", "machine": machine(), "dtype": args.dtype,
                       "warmup": args.warmup, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
