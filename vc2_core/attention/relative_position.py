"""VideoCrafter1's relative-position attention: always the float32 math path.

It needs the probabilities explicitly (the ``rel_v`` term), which no fused backend returns.
"""

from __future__ import annotations

import torch

from .backends import reference_dtype

Tensor = torch.Tensor


def relative_position_attention(q: Tensor, k: Tensor, v: Tensor, rel_k: Tensor, rel_v: Tensor,
                                *, causal: bool = False) -> Tensor:
    """Attention with VideoCrafter1's relative-position terms (math in float32, or float64 for float64 inputs).

    q: (B, G, Lq, H, D) where the G groups share the keys and query i has position i;
    k, v: (B, Lk, H, D); rel_k, rel_v: (Lq, Lk, D) tables gathered at clamp(j - i).
    logits[i, j] = (q_i . k_j + q_i . rel_k[i, j]) / sqrt(D);  out_i = sum_j p_ij (v_j + rel_v[i, j]).
    Returns (B, G, Lq, H, D).
    """
    dtype = reference_dtype(q)
    scale = q.shape[-1] ** -0.5
    qf, kf, vf = q.to(dtype), k.to(dtype), v.to(dtype)
    logits = torch.einsum("bgihd,bjhd->bghij", qf, kf) * scale
    logits = logits + torch.einsum("bgihd,ijd->bghij", qf, rel_k.to(dtype)) * scale
    if causal:
        visible = torch.ones(q.shape[2], k.shape[1], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~visible, -torch.finfo(torch.float32).max)
    probs = logits.softmax(dim=-1)  # (B, G, H, Lq, Lk)
    out = torch.einsum("bghij,bjhd->bgihd", probs, vf)
    out = out + torch.einsum("bghij,ijd->bgihd", probs, rel_v.to(dtype))
    return out.to(q.dtype)
