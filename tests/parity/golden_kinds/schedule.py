"""``diffusion_schedule`` cases: the schedule buffers and q_sample / predict_start / q_posterior."""

from __future__ import annotations

import torch

from vc2_core.config import ScheduleConfig
from vc2_core.diffusion import DiffusionSchedule

RTOL, ATOL = 1e-5, 1e-6  # FORMAT.md section 3


def tolerance(name, expected):
    return "allclose", (RTOL, ATOL)


def _check_buffers(case, schedule: DiffusionSchedule) -> None:
    ours = schedule.official_state_dict()
    recorded = case.with_prefix("sd.")
    assert set(ours) == set(recorded), f"schedule buffers differ: ours {sorted(ours)}, golden {sorted(recorded)}"
    recorded.update({f"buf.{k}": v for k, v in case.with_prefix("buf.").items()})
    ours.update({"buf.lvlb_weights": schedule.lvlb_weights, "buf.logvar": torch.zeros(schedule.num_timesteps)})
    for name, expected in recorded.items():
        assert name in ours, f"{name}: not reproduced by vc2"
        assert ours[name].shape == expected.shape, f"{name}: shape {tuple(ours[name].shape)} != {tuple(expected.shape)}"
        assert torch.allclose(ours[name].double(), expected.double(), rtol=RTOL, atol=ATOL), f"{name}: values differ"


def produce(case) -> dict[str, torch.Tensor]:
    schedule = DiffusionSchedule(ScheduleConfig.from_official(case.config))
    _check_buffers(case, schedule)
    inputs = case.with_prefix("in.")
    x0, t, noise = inputs["x0"], inputs["t"], inputs["noise"]
    x_t = schedule.q_sample(x0, t, noise)
    mean, variance, log_variance = schedule.q_posterior(x0, x_t, t)
    return {
        "x_t": x_t,
        "target_eps": noise,  # eps prediction: the scale does not change the target
        "predict_start_from_noise": schedule.predict_start_from_noise(x_t, t, noise),
        "q_posterior_mean": mean,
        "q_posterior_variance": variance,
        "q_posterior_log_variance_clipped": log_variance,
    }
