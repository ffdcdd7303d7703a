"""Where the samplers' Gaussian noise comes from.

A noise source is a callable ``shape -> Tensor`` of standard normal float32 values on the CPU.
Drawing on CPU generators makes a seed give the same video on every device; one generator per
batch item makes an item's video independent of what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Tensor = torch.Tensor
NoiseFn = Callable[[torch.Size], Tensor]


def seeded_noise(seeds: Sequence[int]) -> NoiseFn:
    """Noise for a batch of len(seeds) items, item i drawn from its own CPU generator seeded seeds[i]."""
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def draw(shape: torch.Size) -> Tensor:
        if shape[0] != len(generators):
            raise ValueError(f"noise for a batch of {shape[0]} requested from {len(generators)} seeds")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generators])

    return draw


def generator_noise(generator: torch.Generator) -> NoiseFn:
    """Noise drawn from one generator (on that generator's device)."""
    return lambda shape: torch.randn(tuple(shape), generator=generator, device=generator.device)


def replayed_noise(recorded: Tensor) -> NoiseFn:
    """The k-th call returns recorded[k] (to replay noise a reference run drew)."""
    calls = iter(range(recorded.shape[0]))

    def draw(shape: torch.Size) -> Tensor:
        index = next(calls, None)
        if index is None:
            raise ValueError(f"only {recorded.shape[0]} recorded noise tensors to replay")
        if tuple(recorded[index].shape) != tuple(shape):
            raise ValueError(f"recorded noise has shape {tuple(recorded[index].shape)}, "
                             f"the sampler needs {tuple(shape)}")
        return recorded[index]

    return draw
