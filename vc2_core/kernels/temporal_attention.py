"""Fused attention over short sequences (video frames), forward and backward, in Triton.

Temporal attention in VideoCrafter attends over t <= ~32 frames but for every pixel of every
head: batch*heads is in the tens of thousands while each sequence is a 16 x 64 tile. A flash
kernel tiles the sequence and wastes most of each tile; here one program takes ``GROUP`` whole
(batch, head) sequences at once, as a ``(GROUP, L, D)`` block, and does the entire softmax in
registers: scores ``(GROUP, L, L)`` never touch memory, q/k/v are read once and o written once.
The backward pass recomputes the scores (cheaper than storing them) and writes dq, dk, dv in
the same single pass.

Layout is the dispatch layout ``(batch, seq, heads, head_dim)`` read through its strides, so the
views made by the attention layers need no copies. Inputs fp16, bf16 or fp32; accumulation is
fp32 (fp32 inputs use IEEE fp32 products, not tf32). ``causal`` lets query i see keys j <= i.

Runs on CUDA, or on the CPU under the Triton interpreter (``TRITON_INTERPRET=1``; the tests use
it). Importing this module needs Triton; the attention registry imports it only when a call runs
on the ``triton`` backend. Its limits (at most 64 positions, head dims up to 128) are in
:mod:`.temporal_attention_limits`, importable without Triton.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..attention.backends import TEMPORAL_KERNEL_COVERS
from ..attention.constraints import AttentionCall, first_unmet

Tensor = torch.Tensor


def unsupported_reason(q: Tensor, k: Tensor, v: Tensor) -> str | None:
    """None when :func:`temporal_attention` can run these (B, L, H, D) tensors, else why not: the ``triton``
    backend's checks, over the limits in :mod:`.temporal_attention_limits`."""
    unmet = first_unmet(TEMPORAL_KERNEL_COVERS, AttentionCall.of(q, k, v))
    return None if unmet is None else unmet[1]


def launch_config(rows: int, seq: int, dim: int, fill_gpu: bool = True) -> tuple[int, int]:
    """(sequences per program, warps) for ``rows`` = batch*heads sequences padded to (seq, dim).

    At most 8K elements per (GROUP, SEQ, DIM) block, and, with ``fill_gpu``, GROUP small enough to
    give the GPU's SMs several programs each (benchmarks/kernel_sweep.py measured the choices on an
    H100). Triton's interpreter runs programs one after another, so there the blocks stay large.
    """
    if not fill_gpu:  # the interpreter: fewer, larger programs (numpy on whole blocks)
        return max(1, min(64, 65536 // (seq * dim))), 4
    group = max(1, min(8, 8192 // (seq * dim)))
    while group > 1 and rows // group < 2048:
        group //= 2
    return group, 4


@triton.jit
def _tile_offsets(pid, BH, H, L, D, s_b, s_l, s_h,
                  GROUP: tl.constexpr, SEQ: tl.constexpr, DIM: tl.constexpr):
    """Offsets (GROUP, SEQ, DIM) of the program's sequences in a (B, L, H, D) tensor, and their mask."""
    row = pid * GROUP + tl.arange(0, GROUP)  # (batch, head) pairs
    b = row // H
    h = row % H
    pos = tl.arange(0, SEQ)
    d = tl.arange(0, DIM)
    base = b.to(tl.int64) * s_b + h.to(tl.int64) * s_h
    offs = base[:, None, None] + pos[None, :, None] * s_l + d[None, None, :]
    mask = (row < BH)[:, None, None] & (pos < L)[None, :, None] & (d < D)[None, None, :]
    return offs, mask


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Batched a @ b with fp32 accumulation. UPCAST multiplies in fp32: the Triton interpreter's bf16
    dot is broken (Triton 3.9), and bf16 x bf16 products are exact in fp32, so the result is the same."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _probabilities(q, k, L, scale, CAUSAL: tl.constexpr, SEQ: tl.constexpr, PRECISION: tl.constexpr,
                   UPCAST: tl.constexpr):
    """softmax(q k^T * scale) over keys, fp32, (GROUP, SEQ, SEQ); padded keys get probability 0."""
    s = _dot(q, tl.trans(k, 0, 2, 1), PRECISION, UPCAST) * scale
    i = tl.arange(0, SEQ)[:, None]
    j = tl.arange(0, SEQ)[None, :]
    visible = j < L
    if CAUSAL:
        visible = visible & (j <= i)
    s = tl.where(visible[None, :, :], s, float("-inf"))
    s = s - tl.max(s, axis=2)[:, :, None]  # padded query rows still have key 0 visible: no NaN
    p = tl.exp(s)
    return p / tl.sum(p, axis=2)[:, :, None]


@triton.jit
def _forward_kernel(q_ptr, k_ptr, v_ptr, o_ptr, BH, H, L, D, s_b, s_l, s_h, o_b, o_l, o_h, scale,
                    CAUSAL: tl.constexpr, GROUP: tl.constexpr, SEQ: tl.constexpr, DIM: tl.constexpr,
                    PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    offs, mask = _tile_offsets(pid, BH, H, L, D, s_b, s_l, s_h, GROUP, SEQ, DIM)
    q = tl.load(q_ptr + offs, mask=mask, other=0.0)
    k = tl.load(k_ptr + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0)
    p = _probabilities(q, k, L, scale, CAUSAL, SEQ, PRECISION, UPCAST)
    o = _dot(p.to(v.dtype), v, PRECISION, UPCAST)  # (GROUP, SEQ, DIM) fp32
    o_offs, o_mask = _tile_offsets(pid, BH, H, L, D, o_b, o_l, o_h, GROUP, SEQ, DIM)
    tl.store(o_ptr + o_offs, o.to(o_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _backward_kernel(q_ptr, k_ptr, v_ptr, do_ptr, dq_ptr, dk_ptr, dv_ptr, BH, H, L, D, s_b, s_l, s_h,
                     g_b, g_l, g_h, scale, CAUSAL: tl.constexpr, GROUP: tl.constexpr, SEQ: tl.constexpr,
                     DIM: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    offs, mask = _tile_offsets(pid, BH, H, L, D, s_b, s_l, s_h, GROUP, SEQ, DIM)
    g_offs, g_mask = _tile_offsets(pid, BH, H, L, D, g_b, g_l, g_h, GROUP, SEQ, DIM)
    q = tl.load(q_ptr + offs, mask=mask, other=0.0)
    k = tl.load(k_ptr + offs, mask=mask, other=0.0)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0)
    do = tl.load(do_ptr + g_offs, mask=g_mask, other=0.0)  # padded query rows: zero gradient
    p = _probabilities(q, k, L, scale, CAUSAL, SEQ, PRECISION, UPCAST)
    dv = _dot(tl.trans(p, 0, 2, 1).to(do.dtype), do, PRECISION, UPCAST)
    dp = _dot(do, tl.trans(v, 0, 2, 1), PRECISION, UPCAST)  # (GROUP, SEQ, SEQ)
    ds = p * (dp - tl.sum(p * dp, axis=2)[:, :, None]) * scale
    dq = _dot(ds.to(k.dtype), k, PRECISION, UPCAST)
    dk = _dot(tl.trans(ds, 0, 2, 1).to(q.dtype), q, PRECISION, UPCAST)
    # dq, dk, dv are fresh contiguous tensors: same strides as do (made contiguous by the caller)
    tl.store(dq_ptr + g_offs, dq.to(dq_ptr.dtype.element_ty), mask=g_mask)
    tl.store(dk_ptr + g_offs, dk.to(dk_ptr.dtype.element_ty), mask=g_mask)
    tl.store(dv_ptr + g_offs, dv.to(dv_ptr.dtype.element_ty), mask=g_mask)


def padded_block(length: int, head_dim: int) -> tuple[int, int]:
    """(SEQ, DIM): the powers of two (at least 16) that a program's block pads the frames and head dim to."""
    return max(16, triton.next_power_of_2(length)), max(16, triton.next_power_of_2(head_dim))


def _launch_args(q: Tensor, config: tuple[int, int] | None) -> dict:
    batch, length, heads, head_dim = q.shape
    seq, dim = padded_block(length, head_dim)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    group, warps = config or launch_config(batch * heads, seq, dim, fill_gpu=not interpreted)
    return {
        "BH": batch * heads, "H": heads, "L": length, "D": head_dim, "scale": head_dim ** -0.5,
        "GROUP": group, "SEQ": seq, "DIM": dim, "num_warps": warps,
        "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",  # tf32 is ignored for 16-bit inputs
        "UPCAST": q.dtype == torch.bfloat16 and interpreted,
    }


def _check_layout(*tensors: Tensor) -> None:
    for x in tensors:
        if x.stride(3) != 1:
            raise ValueError("temporal attention kernel needs a unit stride on head_dim")


def _forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, config: tuple[int, int] | None = None) -> Tensor:
    """``config`` (GROUP, num_warps) overrides :func:`launch_config` (the sweep benchmark uses it)."""
    if k.stride() != q.stride() or v.stride() != q.stride():
        k, v, q = k.contiguous(), v.contiguous(), q.contiguous()
    _check_layout(q)
    args = _launch_args(q, config)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    grid = (triton.cdiv(args["BH"], args["GROUP"]),)
    _forward_kernel[grid](q, k, v, out, s_b=q.stride(0), s_l=q.stride(1), s_h=q.stride(2),
                          o_b=out.stride(0), o_l=out.stride(1), o_h=out.stride(2), CAUSAL=causal, **args)
    return out


def _backward(q: Tensor, k: Tensor, v: Tensor, grad_out: Tensor, causal: bool,
              config: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    if k.stride() != q.stride() or v.stride() != q.stride():
        k, v, q = k.contiguous(), v.contiguous(), q.contiguous()
    grad_out = grad_out.contiguous()
    _check_layout(q)
    args = _launch_args(q, config)
    dq, dk, dv = (torch.empty_like(grad_out) for _ in range(3))
    grid = (triton.cdiv(args["BH"], args["GROUP"]),)
    _backward_kernel[grid](q, k, v, grad_out, dq, dk, dv, s_b=q.stride(0), s_l=q.stride(1), s_h=q.stride(2),
                           g_b=grad_out.stride(0), g_l=grad_out.stride(1), g_h=grad_out.stride(2), CAUSAL=causal,
                           **args)
    return dq, dk, dv


@torch.library.custom_op("vc2::temporal_attention", mutates_args=())
def _temporal_attention_op(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    return _forward(q, k, v, causal)


@_temporal_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("vc2::temporal_attention_backward", mutates_args=())
def _temporal_attention_backward_op(q: Tensor, k: Tensor, v: Tensor, grad_out: Tensor,
                                    causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _backward(q, k, v, grad_out, causal)


@_temporal_attention_backward_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, grad_out: Tensor, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(torch.empty_like(grad_out, memory_format=torch.contiguous_format) for _ in range(3))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, causal = inputs
    ctx.save_for_backward(q, k, v)
    ctx.causal = causal


def _backward_formula(ctx, grad_out: Tensor):
    q, k, v = ctx.saved_tensors
    dq, dk, dv = _temporal_attention_backward_op(q, k, v, grad_out, ctx.causal)
    return dq, dk, dv, None


_temporal_attention_op.register_autograd(_backward_formula, setup_context=_setup_context)


def temporal_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(D)) v for (B, L, H, D) tensors, L <= 64; returns (B, L, H, D), differentiable."""
    reason = unsupported_reason(q, k, v)
    if reason is not None:
        raise ValueError(f"temporal attention kernel: {reason}")
    return _temporal_attention_op(q, k, v, causal)
