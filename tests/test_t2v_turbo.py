"""T2V-Turbo: reading their files safely, fitting their LoRA, the UNet's optional conditions, the sampler.

Parity with their code is in tests/parity (goldens_t2v_turbo); these are the checks around it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_unet, tiny_unet_config

from vc2_core.config import ScheduleConfig
from vc2_core.diffusion import DiffusionSchedule, plan_sampling, seeded_noise
from vc2_core.diffusion.consistency import boundary_scalings, turbo_timesteps
from vc2_core.modules import UNetModel
from vc2_core.t2v_turbo import (
    TurboEps,
    TurboLoRA,
    TurboUNet,
    TurboWeightsError,
    build_turbo_unet,
    lora_targets,
    merge_turbo_lora,
    read_turbo_weights,
    scale_embedding,
    turbo_config,
)

RELEASED = tiny_unet_config(attention_resolutions=(2,), temporal_length=2)  # 64 channels: the embedding matters


def random_lora(unet, rank=2, seed=0) -> list[torch.Tensor]:
    """[up, down] per adapted layer in their layout, up (out, r, 1...), down (r, in, kernel...)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for _, module in lora_targets(unet):
        weight = module.weight
        up = 0.05 * torch.randn(weight.shape[0], rank, *([1] * (weight.ndim - 2)), generator=generator)
        down = torch.randn(rank, *weight.shape[1:], generator=generator)
        tensors += [up, down]
    return tensors


def turbo_unet(seed=0) -> UNetModel:
    return random_unet(turbo_config(RELEASED), seed)


def inputs(batch=2):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(batch, 4, 2, 8, 8, generator=generator)
    context = torch.randn(batch, 77, RELEASED.context_dim, generator=generator)
    return x, torch.tensor([999, 500][:batch]), context


class Exploit:
    """Unpickling this would create a file: a weights_only load must never run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_with_code_is_refused_and_runs_nothing(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "unet_lora.pt"
    torch.save([torch.zeros(2, 2), Exploit(str(marker))], path)
    with pytest.raises(TurboWeightsError, match="refused"):
        read_turbo_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize(("contents", "message"), [
    (7, "holds a int"),
    ([], "empty"),
    ([torch.zeros(2, 2)] * 3, "odd number"),
    ([torch.zeros(2, 2), "up"], "item 1 \\(str\\)"),
    ({"time_embed.0.weight": 3}, "not a UNet state dict"),
])
def test_files_that_are_not_turbo_weights_are_named(tmp_path, contents, message):
    path = tmp_path / "weights.pt"
    torch.save(contents, path)
    with pytest.raises(TurboWeightsError, match=message):
        read_turbo_weights(path)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "unet_lora.pt"
    torch.save([torch.zeros(4, 4)] * 2, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TurboWeightsError, match="not a torch file, or a truncated one"):
        read_turbo_weights(path)
    with pytest.raises(TurboWeightsError, match="no such"):
        read_turbo_weights(tmp_path / "absent.pt")


def test_their_list_of_parameters_reads_as_a_lora(tmp_path):
    path = tmp_path / "unet_lora.pt"
    torch.save([torch.nn.Parameter(torch.ones(3, 1)), torch.nn.Parameter(torch.ones(1, 2))], path)
    lora = read_turbo_weights(path)
    assert isinstance(lora, TurboLoRA) and lora.num_layers == 1
    assert torch.equal(lora.pair(0)[1], torch.ones(1, 2))


def test_released_unet_keeps_its_keys_and_refuses_conditions():
    plain, turbo = UNetModel(RELEASED), UNetModel(turbo_config(RELEASED, motion=True))
    extra = [key for key in turbo.state_dict() if key not in plain.state_dict()]
    assert extra == ["time_cond_proj.weight", "motion_cond_proj.weight", "combine_proj.weight"]
    assert list(turbo.state_dict())[8:11] == extra  # after fps_embedding, before input_blocks, as theirs
    x, t, context = inputs()
    with pytest.raises(ValueError, match="no guidance embedding"):
        plain(x, t, context, timestep_cond=torch.zeros(2, 256))
    with pytest.raises(ValueError, match=r"timestep_cond must be \(2, 256\)"):
        turbo(x, t, context, timestep_cond=torch.zeros(1, 256))
    with pytest.raises(ValueError, match="motion_cond needs timestep_cond"):
        turbo(x, t, context, motion_cond=torch.zeros(2, 256))


def test_the_guidance_embedding_enters_the_output():
    unet = turbo_unet()
    x, t, context = inputs()
    with torch.no_grad():
        without = unet(x, t, context)
        low = unet(x, t, context, timestep_cond=scale_embedding(torch.full((2,), 2.0)))
        high = unet(x, t, context, timestep_cond=scale_embedding(torch.full((2,), 8.0)))
    assert (low - high).abs().max() > 1e-3 and (low - without).abs().max() > 1e-3


def test_merge_is_linear_in_strength_and_zero_is_the_base():
    base = turbo_unet()
    lora = TurboLoRA(random_lora(base), path="mem")
    states = {}
    for strength in (0.0, 0.5, 1.0):
        unet = turbo_unet()
        merge_turbo_lora(unet, lora, strength=strength)
        states[strength] = unet.state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(states[0.0][key], value)
        half = states[0.5][key] - value
        torch.testing.assert_close(2 * half, states[1.0][key] - value, rtol=1e-4, atol=1e-6)
    changed = [key for key in states[1.0] if not torch.equal(states[1.0][key], base.state_dict()[key])]
    assert len(changed) == len(lora_targets(base))  # every adapted layer's weight, nothing else


def test_a_lora_that_does_not_fit_names_the_problem_and_loads_nothing():
    unet = turbo_unet()
    before = {key: value.clone() for key, value in unet.state_dict().items()}
    good = random_lora(unet)
    bad = list(good)
    bad[2 * 6] = bad[2 * 6][:-1]  # layer 6's up loses a row
    path6 = lora_targets(unet)[6][0]
    with pytest.raises(TurboWeightsError, match=f"layer 6 {path6}") as caught:
        merge_turbo_lora(unet, TurboLoRA(bad, path="bad.pt"), strength=1.0)
    assert "nothing was loaded" in str(caught.value)
    with pytest.raises(TurboWeightsError, match="adapts .* layers, this UNet has"):
        merge_turbo_lora(unet, TurboLoRA(good[:-2], path="short.pt"))
    assert all(torch.equal(value, before[key]) for key, value in unet.state_dict().items())
    plain = random_unet(RELEASED)  # no time_cond_proj: their LoRA has one layer more
    with pytest.raises(TurboWeightsError, match="time_cond_proj, which this UNet lacks"):
        merge_turbo_lora(plain, TurboLoRA(good, path="lora.pt"))


def test_build_from_released_weights_and_from_a_whole_v2_unet():
    released = random_unet(RELEASED).state_dict()
    lora = TurboLoRA(random_lora(turbo_unet()), path="lora.pt")
    one = build_turbo_unet(released, RELEASED, lora, time_cond_seed=1)
    two = build_turbo_unet(released, RELEASED, lora, time_cond_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values(), strict=True))
    v2_state = random_unet(turbo_config(RELEASED, motion=True)).state_dict()
    v2 = build_turbo_unet(released, RELEASED, TurboUNet(v2_state, path="unet_mg.pt"))
    assert v2.config.motion_cond_proj_dim == 256
    assert all(torch.equal(v2.state_dict()[key], value) for key, value in v2_state.items())
    del v2_state["combine_proj.weight"]  # without both motion layers it is read as a UNet without the condition
    with pytest.raises(TurboWeightsError, match="1 unknown keys: motion_cond_proj.weight"):
        build_turbo_unet(released, RELEASED, TurboUNet(v2_state, path="unet_mg.pt"))


def test_timesteps_and_boundary_condition():
    assert turbo_timesteps(4, 50) == [999, 759, 519, 279]
    assert turbo_timesteps(4, 200) == [999, 749, 499, 249]
    assert turbo_timesteps(8, 50) == [999, 879, 759, 639, 519, 399, 279, 159]
    assert turbo_timesteps(1, 50) == [999]
    with pytest.raises(ValueError, match="1 to 50 steps"):
        turbo_timesteps(51, 50)
    c_skip, c_out = boundary_scalings(0)
    assert (c_skip, c_out) == (1.0, 0.0)  # the boundary: the model's output is not used at t = 0
    c_skip, c_out = boundary_scalings(279)
    assert c_skip < 1e-7 and abs(c_out - 1) < 1e-7


def test_sampler_in_the_registry_with_their_defaults():
    schedule = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))
    plan = plan_sampling("t2v-turbo", schedule, 4)
    assert plan.eta == 1.0 and plan.steps.timesteps == [999, 759, 519, 279]
    assert plan.steps.level(0).scale == 1.0  # distilled without VideoCrafter2's latent scale
    with pytest.raises(ValueError, match="eta 1"):
        plan_sampling("t2v-turbo", schedule, 4, eta=0.0)
    with pytest.raises(ValueError, match="origin-50, origin-200"):
        plan_sampling("t2v-turbo", schedule, 4, spacing="logsnr")


def test_motion_guidance_applies_in_the_top_share_of_timesteps():
    seen = []

    def unet(x, t, context, fps, timestep_cond, motion_cond=None):
        seen.append(motion_cond)
        return torch.zeros_like(x)

    eps = TurboEps(unet, torch.zeros(2, 77, 8), 7.5, motion_scale=0.05, motion_share=0.3)
    x = torch.zeros(2, 4, 1, 2, 2)
    eps(x, torch.tensor([999, 699]))
    torch.testing.assert_close(seen[0][0], scale_embedding(torch.tensor([0.05]))[0])
    torch.testing.assert_close(seen[0][1], scale_embedding(torch.tensor([0.0]))[0])


def test_four_turbo_steps_sample_and_repeat():
    unet = build_turbo_unet(random_unet(RELEASED).state_dict(), RELEASED,
                            TurboLoRA(random_lora(turbo_unet()), path="lora.pt"))
    x, _, context = inputs()
    schedule = DiffusionSchedule(ScheduleConfig())
    runs = []
    for _ in range(2):
        with torch.no_grad():
            runs.append(plan_sampling("t2v-turbo", schedule, 4).run(TurboEps(unet, context, 7.5, fps=16), x,
                                                                     noise=seeded_noise([1, 2])))
    assert torch.isfinite(runs[0]).all() and torch.equal(runs[0], runs[1])
