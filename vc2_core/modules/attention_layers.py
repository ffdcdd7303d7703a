"""Attention layers of the UNet. Attribute names are the released checkpoint keys."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..attention import attention, relative_position_attention

Tensor = torch.Tensor


class RelativePosition(nn.Module):
    """VideoCrafter1's learned relative-position table, shared across heads (keys ``embeddings_table``)."""

    def __init__(self, num_units: int, max_relative_position: int):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, num_units))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length_q: int, length_k: int) -> Tensor:
        """Table rows at clamp(j - i, -L, L) + L: (length_q, length_k, num_units)."""
        device = self.embeddings_table.device
        distance = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        limit = self.max_relative_position
        return self.embeddings_table[distance.clamp(-limit, limit) + limit]


class CrossAttention(nn.Module):
    """Multi-head attention: self-attention without a context, cross-attention with one.

    Same constructor as the official ``lvdm.modules.attention.CrossAttention`` (t2v part).
    A context may serve several consecutive query rows: with x of n rows and a context of
    n_ctx rows (n divisible by n_ctx), query rows [i*g, (i+1)*g) attend to context row i,
    g = n / n_ctx. That is exactly the official per-frame pairing after its repeats, computed
    without repeating the context or projecting it more than once. The attention backend is chosen
    per call (``vc2_core.attention.attention_backend``), not stored here.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0, relative_position: bool = False, temporal_length: int | None = None,
                 img_cross_attention: bool = False):
        super().__init__()
        if img_cross_attention:
            raise ValueError("img_cross_attention belongs to the image-to-video models, which vc2 does not implement")
        inner_dim = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))
        self.relative_position = relative_position
        if relative_position:
            if temporal_length is None:
                raise ValueError("relative_position=True needs temporal_length")
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)

    def forward(self, x: Tensor, context: Tensor | None = None, causal: bool = False) -> Tensor:
        """x: (n, L, query_dim); context: (n_ctx, L_ctx, context_dim) or None. Returns (n, L, query_dim)."""
        n, length, _ = x.shape
        heads, dim_head = self.heads, self.dim_head
        q = self.to_q(x)  # (n, L, H*D)
        source = x if context is None else context
        k, v = self.to_k(source), self.to_v(source)  # (n_kv, L_kv, H*D)
        n_kv = k.shape[0]
        if n % n_kv:
            raise ValueError(f"{n} query rows cannot share a context of {n_kv} rows (not a divisor)")
        groups = n // n_kv  # consecutive query rows per context row (1 for self-attention)
        k = k.view(n_kv, -1, heads, dim_head)
        v = v.view(n_kv, -1, heads, dim_head)
        if self.relative_position:
            q = q.view(n_kv, groups, length, heads, dim_head)
            rel_k = self.relative_position_k(length, k.shape[1])
            rel_v = self.relative_position_v(length, v.shape[1])
            out = relative_position_attention(q, k, v, rel_k, rel_v, causal=causal)
        else:
            q = q.view(n_kv, groups * length, heads, dim_head)
            out = attention(q, k, v, causal=causal)  # the backend of the call's context
        return self.to_out(out.reshape(n, length, heads * dim_head))
