"""The attention function and its backends against the float32 math reference; choosing a backend."""

from __future__ import annotations

import threading

import pytest
import torch

from vc2_core.attention import (
    AttentionCall,
    attention,
    attention_backend,
    backend_names,
    count_backend_calls,
    current_backend,
    relative_position_attention,
    resolve_backend,
)
from vc2_core.attention.constraints import dtypes_in, first_unmet, on_cuda, self_attention, sequence_at_most
from vc2_core.modules import CrossAttention


@pytest.mark.parametrize("shape_q, shape_k, causal", [
    ((3, 16, 2, 8), (3, 16, 2, 8), False),
    ((3, 16, 2, 8), (3, 16, 2, 8), True),
    ((5, 7, 4, 16), (5, 77, 4, 16), False),  # cross-attention to 77 text tokens
    ((64, 1, 5, 64), (64, 1, 5, 64), True),  # a one-frame video
])
def test_sdpa_matches_math(shape_q, shape_k, causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(shape_q, generator=g), torch.randn(shape_k, generator=g), torch.randn(shape_k, generator=g)
    reference = attention(q, k, v, causal=causal, backend="math")
    torch.testing.assert_close(attention(q, k, v, causal=causal, backend="sdpa"), reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(attention(q, k, v, causal=causal), reference, rtol=0, atol=1e-5)


def test_causal_means_no_look_ahead():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 2, 8, generator=g) for _ in range(3))
    out = attention(q, k, v, causal=True, backend="math")
    k2, v2 = k.clone(), v.clone()
    k2[:, 4:] += 5.0
    v2[:, 4:] += 5.0
    out2 = attention(q, k2, v2, causal=True, backend="math")
    torch.testing.assert_close(out[:, :4], out2[:, :4])
    assert (out[:, 4:] - out2[:, 4:]).abs().max() > 0.1


def test_relative_position_attention_equals_explicit_loop():
    g = torch.Generator().manual_seed(0)
    b, groups, lq, lk, h, d = 2, 3, 5, 6, 2, 4
    q = torch.randn(b, groups, lq, h, d, generator=g)
    k, v = torch.randn(b, lk, h, d, generator=g), torch.randn(b, lk, h, d, generator=g)
    rel_k, rel_v = torch.randn(lq, lk, d, generator=g), torch.randn(lq, lk, d, generator=g)
    out = relative_position_attention(q, k, v, rel_k, rel_v)
    expected = torch.empty_like(out)
    for bi in range(b):
        for gi in range(groups):
            for hi in range(h):
                for i in range(lq):
                    logits = torch.stack([(q[bi, gi, i, hi] @ (k[bi, j, hi] + rel_k[i, j])) * d**-0.5
                                          for j in range(lk)])
                    p = logits.softmax(0)
                    expected[bi, gi, i, hi] = sum(p[j] * (v[bi, j, hi] + rel_v[i, j]) for j in range(lk))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_backend_errors_are_clear():
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'"):
        attention(q, q, q, backend="flash9")
    with pytest.raises(RuntimeError, match=r"backend 'xformers' cannot run here: CUDA tensors only \(got cpu\)"):
        attention(q, q, q, backend="xformers")
    with attention_backend("xformers"), pytest.raises(RuntimeError, match="CUDA tensors only"):
        attention(q, q, q)
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'"), attention_backend("flash9"):
        pass
    with pytest.raises(ValueError, match="causal attention needs as many queries as keys"):
        attention(q, torch.randn(1, 5, 1, 8), torch.randn(1, 5, 1, 8), causal=True)
    assert {"auto", "math", "sdpa", "xformers"} <= set(backend_names())


def test_the_context_chooses_the_backend_per_call(monkeypatch):
    monkeypatch.delenv("VC2_ATTENTION", raising=False)
    assert current_backend() == "auto"
    with attention_backend("math") as name:
        assert name == current_backend() == "math"
        with attention_backend("sdpa"):
            assert current_backend() == "sdpa"
        assert current_backend() == "math"
        seen_by_another_thread = []
        thread = threading.Thread(target=lambda: seen_by_another_thread.append(current_backend()))
        thread.start()
        thread.join()
        assert seen_by_another_thread == ["auto"]  # the choice belongs to the thread that made it
    assert current_backend() == "auto"
    monkeypatch.setenv("VC2_ATTENTION", "math")  # the default outside blocks, read at the call
    assert current_backend() == "math"
    with attention_backend(None):  # None: the default
        assert current_backend() == "math"
    monkeypatch.setenv("VC2_ATTENTION", "flash9")
    with pytest.raises(ValueError, match="VC2_ATTENTION='flash9' is not an attention backend; choose one of auto, "):
        attention(torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8))


def test_the_context_reaches_the_layers():
    layer = CrossAttention(16, heads=2, dim_head=8)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        with attention_backend("math"):
            math = layer(x)
        with attention_backend("sdpa"):
            sdpa = layer(x)
        with attention_backend("xformers"), pytest.raises(RuntimeError, match="'xformers' cannot run here"):
            layer(x)  # the layer runs the block's backend (xformers needs CUDA)
    torch.testing.assert_close(sdpa, math, rtol=0, atol=1e-5)


def test_calls_are_counted_by_the_backend_that_ran_them():
    q = torch.randn(2, 4, 1, 8)
    with count_backend_calls() as outer:
        attention(q, q, q, backend="math")
        with count_backend_calls() as inner, attention_backend("sdpa"):
            attention(q, q, q)
            attention(q, q, q, backend="auto")  # auto's rule on the CPU: SDPA
        thread = threading.Thread(target=lambda: attention(q, q, q, backend="math"))
        thread.start()
        thread.join()  # another thread's calls are not this block's
    attention(q, q, q, backend="math")  # outside the blocks: not counted
    assert inner == {"sdpa": 2}
    assert outer == {"math": 1, "sdpa": 2}


def call(device="cpu", dtype=torch.float32, q_shape=(2, 16, 2, 8), k_shape=None, needs_grad=False) -> AttentionCall:
    return AttentionCall(device, (dtype,) * 3, q_shape, k_shape or q_shape, needs_grad)


def test_constraint_checks_say_what_a_call_lacks():
    assert on_cuda(call("cuda")) is None
    assert on_cuda(call("cpu")) == "CUDA tensors only (got cpu)"
    assert self_attention(call(k_shape=(2, 77, 2, 8))).startswith("self-attention shapes only")
    at_most_4 = sequence_at_most(4)
    assert at_most_4.__name__ == "sequence_at_most(4)"
    assert at_most_4(call(q_shape=(1, 4, 1, 8))) is None
    assert at_most_4(call(q_shape=(1, 5, 1, 8))) == "sequences of at most 4 (got 5)"
    half = dtypes_in((torch.float16, torch.bfloat16))
    assert half(call(dtype=torch.bfloat16)) is None
    assert half(call()) == "float16/bfloat16 inputs of one dtype only (got torch.float32, torch.float32, torch.float32)"
    mixed = AttentionCall("cpu", (torch.float16, torch.float16, torch.float32), (1, 4, 1, 8), (1, 4, 1, 8), False)
    assert half(mixed) is not None
    check, reason = first_unmet((on_cuda, at_most_4), call("cuda", q_shape=(1, 9, 1, 8)))
    assert check is at_most_4 and reason == "sequences of at most 4 (got 9)"
    assert first_unmet((on_cuda, at_most_4), call("cuda", q_shape=(1, 3, 1, 8))) is None


def test_math_and_sdpa_have_no_constraints():
    odd = call("meta", torch.float64, (0, 1000, 3, 300), (0, 7, 3, 300), needs_grad=True)
    for name in ("math", "sdpa"):
        assert resolve_backend(name, odd) == (resolve_backend(name, call())[0], None)
