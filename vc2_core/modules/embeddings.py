"""Sinusoidal embeddings of timesteps and frame rates."""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def timestep_embedding(timesteps: Tensor, dim: int, max_period: int = 10000) -> Tensor:
    """The official sinusoid: ``[cos(t f_k), sin(t f_k)]`` with **cos first**, f_k = exp(-ln(max_period) k / half).

    timesteps: (n,) integer or float. Returns (n, dim) float32; a zero column is appended for odd dim.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs.to(timesteps.device)[None]  # (n, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
