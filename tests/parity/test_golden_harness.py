"""The harness itself: tolerances as FORMAT.md section 3 states them, and checks that can fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from golden_case import GoldenCase, compare, goldens_dir
from golden_kinds import ddim, text

REL = 1e-4


def synthetic_case(expected: torch.Tensor) -> GoldenCase:
    return GoldenCase("synthetic", Path("synthetic.safetensors"), {"kind": "ddim_sampling"}, {"out.x_inter": expected})


def test_per_step_tolerance_rejects_an_early_error_the_whole_tensor_accepts():
    # a trajectory whose scale grows from 1 to 100, as DDIM latents grow from ~10 to ~100
    expected = torch.stack([torch.full((2, 3), scale) for scale in (1.0, 10.0, 100.0)])  # (steps, ...)
    actual = expected.clone()
    actual[0, 1, 2] += 1e-3  # 1e-3 of step 0's scale, 1e-5 of the whole tensor's
    case = synthetic_case(expected)
    assert compare(case, {"x_inter": actual}, lambda name, golden: ("rel", REL)) == []
    problems = compare(case, {"x_inter": actual}, lambda name, golden: ("rel_per_step", REL))
    assert len(problems) == 1 and problems[0].startswith("out.x_inter: step 0: "), problems
    assert problems[0].endswith("max |diff| / max |golden| = 0.001 > 0.0001 (1 of 3 fail)")


def test_per_step_tolerance_names_the_worst_step():
    expected = torch.ones(4, 5)
    actual = expected.clone()
    actual[1] += 2e-4
    actual[3] += 5e-4
    problems = compare(synthetic_case(expected), {"x_inter": actual}, lambda name, golden: ("rel_per_step", REL))
    assert problems == ["out.x_inter: step 3: max |diff| / max |golden| = 0.0005 > 0.0001 (2 of 4 fail)"]
    within = compare(synthetic_case(expected), {"x_inter": expected + 5e-5}, lambda name, golden: ("rel_per_step", REL))
    assert within == []


@pytest.mark.parametrize("name", ["eta0.x_inter", "eta1.pred_x0", "eta1.e_cond", "eta0.5.e_uncond"])
def test_ddim_trajectories_are_compared_per_step(name):
    assert ddim.tolerance(name, torch.zeros(11, 2)) == ("rel_per_step", REL)


def test_ddim_single_tensors_are_compared_whole():
    assert ddim.tolerance("eta1.samples", torch.zeros(2, 4)) == ("rel", REL)
    assert ddim.tolerance("eta1.video", torch.zeros(2, 3)) == ("rel", REL)


def text_case_with_mask(mask: torch.Tensor) -> GoldenCase:
    case = GoldenCase.load(goldens_dir() / "clip_tiny_penultimate.safetensors")
    return dataclasses.replace(case, tensors={**case.tensors, "buf.model.attn_mask": mask})


def test_text_attention_mask_is_checked_against_the_encoder():
    causal = torch.full((77, 77), float("-inf")).triu(1)  # open_clip's mask: 0 on and below the diagonal
    with torch.no_grad():
        text.produce(text_case_with_mask(causal))
        with pytest.raises(AssertionError, match=r"attn_mask: our encoder differs at 1 \(query, key\) pairs"):
            text.produce(text_case_with_mask(causal.index_put((torch.tensor(3), torch.tensor(5)), torch.tensor(0.0))))
        with pytest.raises(AssertionError, match="attn_mask: entries other than 0 and -inf"):
            text.produce(text_case_with_mask(causal.clamp(min=-1e9)))
