"""Step caching: fewer UNet blocks per sampler step by reusing what adjacent steps share. Off by default.

Two training-free reuses, each on a schedule over the sampler's steps:

- **deep features** (DeepCache, Ma et al. 2024): on a *full* step the whole UNet runs and keeps the up path's
  feature at skip depth ``deep_depth``; on the steps in between only the first ``deep_depth`` input blocks and
  the last ``deep_depth`` output blocks run, on that feature (:class:`vc2_core.modules.DeepFeatureCache`). A full
  step every ``deep_interval`` steps.
- **the unconditional branch** of classifier-free guidance (after FasterCache's CFG cache, Lv et al. 2024,
  without its frequency-domain reweighting): the unconditional prediction is computed every ``uncond_interval``
  steps; in between either the difference e_cond - e_uncond of the last computed step is reused (``"delta"``:
  guided = e_cond + (scale - 1) * delta) or e_uncond itself (``"uncond"``).

The first ``full_first`` and the last ``full_last`` steps always run everything. When both reuses are on, the
unconditional branch is computed only on full steps (``uncond_interval`` a multiple of ``deep_interval``), or on
every step (``uncond_interval`` 1); so no step mixes a fresh prediction with a deep feature older than the last
full step. State is per UNet call position within a step, so context windows (several calls a step, in the same
order every step) each keep their own features. :data:`PRESETS` are the measured choices (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import UNetConfig
from ..modules.unet import DeepFeatureCache
from .guidance import GuidedEps, guide
from .registry import Sampler
from .steps import EpsFn

Tensor = torch.Tensor
UNCOND_REUSES = ("delta", "uncond")


@dataclass(frozen=True)
class StepCache:
    """When to reuse what (see the module docstring). All intervals 1: every step computes everything."""

    deep_interval: int = 1  # a full UNet every this many steps; 1: no deep-feature reuse
    deep_depth: int = 1  # input (and output) blocks that run on a cached step; fewer = faster, coarser
    uncond_interval: int = 1  # the unconditional branch every this many steps; 1: no reuse
    uncond_reuse: str = "delta"  # what stands in for it: "delta" (e_cond - e_uncond) or "uncond" (e_uncond)
    full_first: int = 1  # the first steps run everything (>= 1: the first step has nothing to reuse)
    full_last: int = 0  # the last steps run everything

    def problems(self) -> list[str]:
        """What is wrong with these values, whatever the model; empty when they can run."""
        problems = []
        for name in ("deep_interval", "deep_depth", "uncond_interval", "full_first"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"step cache {name} {value!r}: must be a whole number >= 1")
        if not isinstance(self.full_last, int) or isinstance(self.full_last, bool) or self.full_last < 0:
            problems.append(f"step cache full_last {self.full_last!r}: must be a whole number >= 0")
        if self.uncond_reuse not in UNCOND_REUSES:
            problems.append(f"step cache uncond_reuse {self.uncond_reuse!r}: choose one of {', '.join(UNCOND_REUSES)}")
        if (not problems and self.deep_interval > 1 and self.uncond_interval > 1
                and self.uncond_interval % self.deep_interval):
            problems.append(f"step cache uncond_interval {self.uncond_interval}: with deep-feature reuse it must be 1 "
                            f"or a multiple of deep_interval {self.deep_interval} (the unconditional branch is "
                            "computed on full steps)")
        return problems

    def full_step(self, step: int, num_steps: int) -> bool:
        """Step ``step`` (0-based) of ``num_steps`` runs the whole UNet."""
        return self._computes(step, num_steps, self.deep_interval)

    def uncond_step(self, step: int, num_steps: int) -> bool:
        """Step ``step`` computes the unconditional branch."""
        return self._computes(step, num_steps, self.uncond_interval)

    def _computes(self, step: int, num_steps: int, interval: int) -> bool:
        if step < self.full_first or step >= num_steps - self.full_last:
            return True
        return (step - self.full_first + 1) % interval == 0  # counted from the last of the first full steps


PRESETS: dict[str, StepCache | None] = {
    "off": None,
    "safe": StepCache(uncond_interval=2, full_first=2, full_last=1),
    "fast": StepCache(deep_interval=3, deep_depth=2, uncond_interval=3, full_first=2, full_last=1),
}


def step_cache_preset(name: str) -> StepCache | None:
    """The preset ``name`` (None for ``off``), or a ValueError naming the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown step cache preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


PARAMETER_NAMES = {"deep": "deep_interval", "depth": "deep_depth", "uncond": "uncond_interval",
                   "reuse": "uncond_reuse", "first": "full_first", "last": "full_last"}


def parse_step_cache(text: str) -> StepCache | None:
    """A preset name (``off``, ``safe``, ``fast``) or explicit values ``deep=3,depth=2,uncond=3,reuse=delta,
    first=2,last=1`` (unnamed ones keep :class:`StepCache`'s defaults); a ValueError saying what does not fit."""
    text = text.strip()
    if "=" not in text:
        return step_cache_preset(text)
    values: dict[str, int | str] = {}
    for item in text.split(","):
        key, _, value = (part.strip() for part in item.partition("="))
        if key not in PARAMETER_NAMES:
            raise ValueError(f"step cache {item.strip()!r}: unknown name; use {', '.join(PARAMETER_NAMES)}")
        if key == "reuse":
            values[PARAMETER_NAMES[key]] = value
            continue
        try:
            values[PARAMETER_NAMES[key]] = int(value)
        except ValueError:
            raise ValueError(f"step cache {key}={value!r}: expected a whole number") from None
    cache = StepCache(**values)
    if cache.problems():
        raise ValueError("; ".join(cache.problems()))
    return cache


def input_blocks(unet: UNetConfig) -> int:
    """The UNet's input blocks (the deepest skip depth): the first conv, each level's res blocks, the downsamplers."""
    levels = len(unet.channel_mult)
    return 1 + levels * unet.num_res_blocks + levels - 1


def step_cache_problems(cache: StepCache, unet: UNetConfig, sampler: Sampler) -> list[str]:
    """What stops ``cache`` on a UNet of ``unet`` sampled by ``sampler``; empty when it can run."""
    problems = cache.problems()
    if sampler.guidance_in_unet:
        problems.append(f"step cache: {sampler.name} samples a distilled UNet in a few steps with one call each; "
                        "there is nothing to reuse between its steps (use --cache off)")
    deepest = input_blocks(unet)
    if not problems and cache.deep_interval > 1 and cache.deep_depth > deepest:
        problems.append(f"step cache deep_depth {cache.deep_depth}: this UNet has {deepest} input blocks "
                        f"(depth 1..{deepest})")
    return problems


@dataclass
class _CallState:
    """What one UNet call position of a step (one context window) keeps between steps."""

    cond: DeepFeatureCache
    uncond: DeepFeatureCache
    reused: Tensor | None = None  # e_uncond or e_cond - e_uncond of the last step that computed it


class CachedGuidance:
    """Classifier-free guidance (:class:`GuidedEps`'s values) with step caching, for one sample.

    ``eps`` predicts like :class:`GuidedEps` (called once per UNet call position, e.g. per context window);
    ``stepping(eps_fn)`` wraps the sampler's whole eps predictor so that each sampler call starts a new step.
    """

    def __init__(self, guided: GuidedEps, cache: StepCache, num_steps: int):
        if cache.problems():
            raise ValueError("; ".join(cache.problems()))
        self.guided, self.cache, self.num_steps = guided, cache, num_steps
        self.step, self.position = -1, 0
        self.states: dict[int, _CallState] = {}

    def stepping(self, eps_fn: EpsFn) -> EpsFn:
        def predict(x: Tensor, t: Tensor) -> Tensor:
            self.step, self.position = self.step + 1, 0
            return eps_fn(x, t)

        return predict

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        if self.step < 0:
            raise RuntimeError("CachedGuidance.eps runs inside stepping(...): each sampler call starts a step")
        g, cache = self.guided, self.cache
        state = self.states.setdefault(self.position, _CallState(DeepFeatureCache(cache.deep_depth),
                                                                 DeepFeatureCache(cache.deep_depth)))
        self.position += 1
        full = cache.full_step(self.step, self.num_steps)
        if full:
            state.cond.feature = state.uncond.feature = None  # this call stores fresh ones
        deep = cache.deep_interval > 1
        x_in = x if g.dtype is None else x.to(g.dtype)
        if g.uncond_context is None or g.scale == 1.0:
            return self._unet(x_in, t, g.context, state.cond if deep else None).to(x.dtype)
        if cache.uncond_step(self.step, self.num_steps) or state.reused is None:
            e_cond, e_uncond = self._both(x_in, t, state, deep)
            e_cond, e_uncond = e_cond.to(x.dtype), e_uncond.to(x.dtype)
            state.reused = e_cond - e_uncond if cache.uncond_reuse == "delta" else e_uncond
        else:
            e_cond = self._unet(x_in, t, g.context, state.cond if deep else None).to(x.dtype)
            e_uncond = e_cond - state.reused if cache.uncond_reuse == "delta" else state.reused
        return guide(e_cond, e_uncond, g.scale, g.rescale)

    def _both(self, x: Tensor, t: Tensor, state: _CallState, deep: bool) -> tuple[Tensor, Tensor]:
        g = self.guided
        if not g.batched:
            return (self._unet(x, t, g.context, state.cond if deep else None),
                    self._unet(x, t, g.uncond_context, state.uncond if deep else None))
        fps = g.fps
        if isinstance(fps, Tensor) and fps.ndim == 1:
            fps = torch.cat([fps, fps])
        both = None
        if deep:
            stored = state.cond.feature is not None
            both = DeepFeatureCache(self.cache.deep_depth,
                                    torch.cat([state.cond.feature, state.uncond.feature]) if stored else None)
        out = g.unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([g.context, g.uncond_context]), fps,
                     deep_cache=both)
        if deep and both.feature is not None and state.cond.feature is None:
            state.cond.feature, state.uncond.feature = both.feature.chunk(2)  # (b t) rows: cond first
        return out.chunk(2)

    def _unet(self, x: Tensor, t: Tensor, context: Tensor, deep: DeepFeatureCache | None) -> Tensor:
        return self.guided.unet(x, t, context, self.guided.fps, deep_cache=deep)

