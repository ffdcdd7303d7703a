"""Each sampler's output for a fixed seed, pinned: refactoring the samplers must not change their numbers.

``tests/data/sampler_outputs.safetensors`` holds the float32 outputs of every sampler (and spacing) on a
small nonlinear eps predictor, for VideoCrafter2's scaled schedule and VideoCrafter1's unscaled one, as
the samplers computed them before they were rewritten over a denoiser wrapper. Regenerate it only for
an intended change of numbers: ``python tests/test_sampler_outputs.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vc2_core.config import ScheduleConfig
from vc2_core.diffusion import DiffusionSchedule, generator_noise, sample

PINNED = Path(__file__).parent / "data" / "sampler_outputs.safetensors"
SCHEDULES = {"scaled": ScheduleConfig(use_scale=True, scale_b=0.7), "unscaled": ScheduleConfig(use_scale=False)}
CASES = [  # (sampler, steps, eta, spacing)
    ("ddim", 10, 0.0, None),
    ("ddim", 10, 1.0, None),
    ("ddim", 7, 0.5, None),
    ("euler", 8, None, None),
    ("euler", 10, None, "uniform"),
    ("euler_ancestral", 8, None, None),
    ("euler_ancestral", 10, 0.5, "uniform"),
    ("dpmpp_2m", 8, None, None),
    ("dpmpp_2m", 10, None, "uniform"),
]


def eps_fn(x, t):
    """A smooth nonlinear stand-in for the UNet: depends on x and on the timestep."""
    phase = (t.to(x.dtype) / 1000).view(-1, *(1,) * (x.ndim - 1))
    return torch.tanh(0.8 * x + phase) + 0.1 * x.roll(1, dims=-1)


def case_name(schedule: str, sampler: str, steps: int, eta: float | None, spacing: str | None) -> str:
    return f"{schedule}/{sampler}/{steps}/{eta}/{spacing}"


def outputs() -> dict[str, torch.Tensor]:
    x_T = torch.randn(2, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    results = {}
    for schedule_name, config in SCHEDULES.items():
        schedule = DiffusionSchedule(config)
        for sampler, steps, eta, spacing in CASES:
            noise = generator_noise(torch.Generator().manual_seed(1))
            results[case_name(schedule_name, sampler, steps, eta, spacing)] = sample(
                sampler, eps_fn, x_T, schedule, steps, eta=eta, spacing=spacing, noise=noise)
    return results


@pytest.fixture(scope="module")
def computed():
    return outputs()


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_sampler_output_is_pinned(computed, schedule, case):
    name = case_name(schedule, *case)
    pinned = load_file(PINNED)[name]
    assert (computed[name] - pinned).abs().max().item() <= 1e-6, name


if __name__ == "__main__":
    save_file(outputs(), PINNED)
    print(f"wrote {PINNED}")
