"""Exponential moving average of the trainable parameters (float32 shadow copies).

The decay warms up as in the lvdm/LDM ``LitEma``: ``min(decay, (1 + n) / (10 + n))`` after n updates,
so early averages are not dominated by the initial weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

Tensor = torch.Tensor


class EMA:
    def __init__(self, named_parameters: list[tuple[str, nn.Parameter]], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1); got {decay}")
        self.decay = decay
        self.updates = 0
        self.params = dict(named_parameters)
        self.shadow = {name: p.detach().float().clone() for name, p in self.params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * param, for every tracked parameter."""
        decay = self.current_decay()
        for name, param in self.params.items():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        self.updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The parameters hold the averages inside the block, their own values again after it."""
        saved = {name: p.detach().clone() for name, p in self.params.items()}
        for name, param in self.params.items():
            param.copy_(self.shadow[name])
        try:
            yield
        finally:
            for name, param in self.params.items():
                param.copy_(saved[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("the EMA state tracks different parameters than this run trains")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
