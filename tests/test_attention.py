"""The attention function and its backends against the float32 math reference."""

from __future__ import annotations

import pytest
import torch

from vc2_core.attention import attention, backend_names, relative_position_attention


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
    with pytest.raises(RuntimeError, match="xformers runs on CUDA tensors only"):
        attention(q, q, q, backend="xformers")
    with pytest.raises(ValueError, match="causal attention needs as many queries as keys"):
        attention(q, torch.randn(1, 5, 1, 8), torch.randn(1, 5, 1, 8), causal=True)
    assert {"auto", "math", "sdpa", "xformers"} <= set(backend_names())
