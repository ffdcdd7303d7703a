"""The Triton temporal-attention kernel against the float32 math reference, forward and backward.

On a machine without CUDA the kernel runs under the Triton interpreter (conftest sets
TRITON_INTERPRET=1 before anything imports Triton). Tolerances are relative L2 errors
||out - ref|| / ||ref||, with the reference computed in float32 from the same (rounded) inputs:
float32 1e-5 (IEEE products), float16 2e-3, bfloat16 1e-2 (the probabilities are rounded to the
input dtype before the second product, as in every flash kernel).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

import vc2_core.kernels.temporal_attention as kernel  # Triton is a test dependency
from vc2_core.attention import AttentionCall, attention, attention_backend, fallback_counts, resolve_backend
from vc2_core.kernels import temporal_attention_limits as limits

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert torch.isfinite(actual).all()
    if expected.norm() == 0:  # e.g. dq, dk of one-frame attention: softmax over one key is constant
        return actual.abs().max().item()
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def inputs(batch: int, frames: int, heads: int, head_dim: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, frames, heads, head_dim, generator=g).to(DEVICE, dtype).requires_grad_()
            for _ in range(3)]


def check_against_math(q, k, v, causal: bool) -> None:
    out = kernel.temporal_attention(q, k, v, causal)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = attention(q32, k32, v32, causal=causal, backend="math")
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), grad_out.float())
    tolerance = TOLERANCE[q.dtype]
    assert out.dtype == q.dtype and out.shape == q.shape
    assert relative_error(out, ref) < tolerance
    for name, grad, ref_grad in zip("qkv", grads, ref_grads):
        assert grad.dtype == q.dtype
        assert relative_error(grad, ref_grad) < tolerance, f"d{name}"


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [8, 32, 40, 64])  # tiny configs 8, mid 32, VC2/VC1 64, padded 40
@pytest.mark.parametrize("frames", [1, 7, 16, 24])
def test_forward_and_backward_match_math_float32(frames, head_dim, causal):
    # batch*heads = 15 rows; test_many_programs_with_a_partial_last_one covers several programs
    check_against_math(*inputs(5, frames, 3, head_dim, torch.float32, seed=frames * head_dim), causal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames, causal", [(7, False), (16, False), (16, True), (24, True), (32, False)])
def test_forward_and_backward_match_math_half(frames, causal, dtype):
    check_against_math(*inputs(6, frames, 5, 64, dtype, seed=frames), causal)


@pytest.mark.parametrize("group", [1, 4])
def test_many_programs_with_a_partial_last_one(group):
    # the launch rule gives the interpreter large blocks; force small ones: 15 rows over 15 or 4 programs
    q, k, v = (x.detach() for x in inputs(5, 16, 3, 32, torch.float32, seed=7))
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(8))
    out = kernel._forward(q, k, v, True, config=(group, 4))
    dq, dk, dv = kernel._backward(q, k, v, grad_out, True, config=(group, 4))
    q32, k32, v32 = (x.clone().requires_grad_() for x in (q, k, v))
    ref = attention(q32, k32, v32, causal=True, backend="math")
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), grad_out)
    assert relative_error(out, ref) < 1e-5
    for grad, ref_grad in zip((dq, dk, dv), ref_grads):
        assert relative_error(grad, ref_grad) < 1e-5


def test_longest_sequence_and_widest_head():
    check_against_math(*inputs(2, limits.MAX_SEQ, 2, 128, torch.float32, seed=3), causal=True)


def test_strided_views_of_a_fused_projection():
    # the layers hand over views: here q, k, v are slices of one (B, L, H, 3D) tensor
    g = torch.Generator().manual_seed(4)
    qkv = torch.randn(4, 16, 2, 3 * 32, generator=g).to(DEVICE).requires_grad_()
    q, k, v = qkv.split(32, dim=-1)
    assert not q.is_contiguous()
    check_against_math(q, k, v, causal=False)


def test_rows_are_independent():
    # every (batch, head) sequence is its own problem: changing one leaves the others' outputs alone
    q, k, v = (x.detach() for x in inputs(9, 16, 2, 32, torch.float32, seed=5))
    out = kernel.temporal_attention(q, k, v)
    k2 = k.clone()
    k2[4, :, 1] += 3.0
    out2 = kernel.temporal_attention(q, k2, v)
    changed = (out2 - out).abs().amax(dim=(1, 3)) > 0  # (batch, heads)
    assert changed[4, 1] and changed.sum() == 1


def test_refuses_what_it_cannot_run():
    q = torch.randn(2, 16, 2, limits.MAX_HEAD_DIM + 8, device=DEVICE)
    with pytest.raises(ValueError, match="head dims"):
        kernel.temporal_attention(q, q, q)
    long = torch.randn(1, limits.MAX_SEQ + 1, 1, 64, device=DEVICE)
    with pytest.raises(ValueError, match="sequences of at most"):
        kernel.temporal_attention(long, long, long)
    cross = kernel.unsupported_reason(q[:, :4, :, :64], torch.randn(2, 77, 2, 64), torch.randn(2, 77, 2, 64))
    assert cross == "self-attention shapes only (q (2, 4, 2, 64), k (2, 77, 2, 64))"
    assert kernel.unsupported_reason(q[..., :64], q[..., :64], q[..., :64]) is None  # within the limits


def test_triton_backend_runs_the_kernel_where_it_applies_and_sdpa_elsewhere():
    g = torch.Generator().manual_seed(6)
    q = torch.randn(3, 16, 2, 32, generator=g)
    cross_q, text = torch.randn(3, 40, 2, 32, generator=g), torch.randn(3, 77, 2, 32, generator=g)
    on_triton = attention(q, q, q, backend="triton")
    torch.testing.assert_close(on_triton, kernel.temporal_attention(q, q, q), rtol=0, atol=0)
    assert not torch.equal(on_triton, attention(q, q, q, backend="sdpa"))  # so the equality above tells them apart
    torch.testing.assert_close(attention(cross_q, text, text, backend="triton"),
                               attention(cross_q, text, text, backend="sdpa"), rtol=0, atol=0)


def test_a_fallback_is_logged_once_per_block_and_counted(caplog):
    g = torch.Generator().manual_seed(6)
    cross_q, text = torch.randn(3, 40, 2, 32, generator=g), torch.randn(3, 77, 2, 32, generator=g)
    long = torch.randn(2, limits.MAX_SEQ + 1, 2, 32, generator=g)
    before = fallback_counts().get(("triton", "sdpa"), 0)
    with caplog.at_level(logging.WARNING, logger="vc2_core.attention"):
        for _ in range(2):  # two blocks: each logs each kind of fallback once
            with attention_backend("triton"):
                for _ in range(3):
                    attention(cross_q, text, text)
                    attention(long, long, long)
    assert fallback_counts()[("triton", "sdpa")] == before + 12
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4, messages
    assert "attention backend 'triton' does not cover some calls (self-attention shapes only" in messages[0]
    assert "they run on 'sdpa'" in messages[0]
    assert "(sequences of at most 64 (got 65))" in messages[1]
    assert messages[2:] == messages[:2]
    with caplog.at_level(logging.WARNING, logger="vc2_core.attention"), attention_backend("auto"):
        attention(cross_q, text, text)  # auto choosing SDPA is its rule, not a fallback
    assert fallback_counts()[("triton", "sdpa")] == before + 12 and len(caplog.records) == 4


def test_triton_on_the_cpu_without_the_interpreter_is_an_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CUDA machines do not set it
    q = torch.randn(3, 16, 2, 32)
    with pytest.raises(RuntimeError, match=r"backend 'triton' cannot run here: CUDA tensors only \(got cpu; "):
        attention(q, q, q, backend="triton")


def test_auto_rule_on_cpu_is_sdpa():
    q = torch.randn(3, 16, 2, 64)
    backend, fallback = resolve_backend("auto", AttentionCall.of(q, q, q))
    assert (backend.name, fallback) == ("sdpa", None)


@pytest.mark.parametrize("device, dtype, q_shape, k_shape, needs_grad, expected", [
    ("cuda", torch.bfloat16, (5120, 16, 5, 64), (5120, 16, 5, 64), False, "triton"),  # temporal, inference
    ("cuda", torch.float16, (40, 64, 20, 64), (40, 64, 20, 64), False, "triton"),  # 64 positions: still short
    ("cuda", torch.bfloat16, (5120, 16, 5, 64), (5120, 16, 5, 64), True, "sdpa"),  # training: SDPA's backward
    ("cuda", torch.float32, (5120, 16, 5, 64), (5120, 16, 5, 64), False, "sdpa"),  # fp32
    ("cuda", torch.bfloat16, (32, 2560, 5, 64), (32, 2560, 5, 64), False, "sdpa"),  # spatial self-attention
    ("cuda", torch.bfloat16, (32, 16, 5, 64), (32, 77, 5, 64), False, "sdpa"),  # cross-attention
    ("cuda", torch.bfloat16, (32, 16, 5, 160), (32, 16, 5, 160), False, "sdpa"),  # head dim over the kernel's
    ("cpu", torch.bfloat16, (5120, 16, 5, 64), (5120, 16, 5, 64), False, "sdpa"),
])
def test_auto_rule(device, dtype, q_shape, k_shape, needs_grad, expected):
    backend, fallback = resolve_backend("auto", AttentionCall(device, (dtype,) * 3, q_shape, k_shape, needs_grad))
    assert (backend.name, fallback) == (expected, None)


def test_everything_works_without_triton():
    # a fresh interpreter where importing triton fails: auto and sdpa run, triton says why it cannot
    script = """
import sys
sys.modules["triton"] = None  # import triton raises ImportError, find_spec returns None
import torch
from vc2_core.attention import attention
from vc2_core.attention.constraints import module_installed
from vc2_core.config import preset
from vc2_core.modules import UNetModel
assert not module_installed("triton")
q = torch.randn(2, 16, 2, 64)
torch.testing.assert_close(attention(q, q, q), attention(q, q, q, backend="math"), rtol=1e-5, atol=1e-5)
config = preset("tiny").unet
out = UNetModel(config).eval()(torch.randn(1, 4, 2, 8, 8), 10, torch.randn(1, 77, config.context_dim))
assert out.shape == (1, 4, 2, 8, 8) and out.isfinite().all()
try:
    attention(q, q, q, backend="triton")
except RuntimeError as error:
    print(error)
else:
    raise AssertionError("the triton backend ran without Triton")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Triton is not installed" in result.stdout
