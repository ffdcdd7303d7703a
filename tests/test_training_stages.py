"""Stages freeze exactly: after optimizer steps, every tensor outside the stage's groups is bit-identical."""

from __future__ import annotations

import pytest
import torch
from conftest import random_unet, tiny_unet_config
from objective_helpers import drawn_loss

from vc2_core.config import ScheduleConfig, preset
from vc2_core.diffusion import DiffusionSchedule
from vc2_core.parameter_groups import Group, classify_unet_parameters
from vc2_core.training import STAGES, DataKind, apply_stage, diffusion_loss, get_stage
from vc2_core.training.batches import BatchMaker, CachedSample
from vc2_core.training.data import Drawn
from vc2_core.vae import VideoVAE

SCHEDULE = DiffusionSchedule(ScheduleConfig(use_scale=True, scale_b=0.7))


def train_steps(unet, stage, frames, steps=2, seed=0):
    trainable = apply_stage(unet, stage)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        latents = torch.randn(2, 4, frames, 8, 8, generator=g)
        context = torch.randn(2, 77, 32, generator=g)
        loss = drawn_loss(unet, SCHEDULE, latents, context, torch.tensor([8, 24]), g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return trainable


@pytest.mark.parametrize("stage_name, frames", [("full", 4), ("partial", 4), ("spa-dir", 1), ("temp-dir", 1),
                                                ("spa-temp-dir", 1)])
def test_only_the_stage_groups_change(stage_name, frames):
    stage = STAGES[stage_name]
    unet = random_unet(tiny_unet_config())
    before = {name: p.detach().clone() for name, p in unet.named_parameters()}
    train_steps(unet, stage, frames)
    groups = classify_unet_parameters(unet)
    changed = {name: not torch.equal(before[name], p) for name, p in unet.named_parameters()}
    frozen_changed = [n for n, c in changed.items() if c and groups[n].group not in stage.train]
    assert frozen_changed == []  # bit-identical outside the stage
    trained = [n for n in changed if groups[n].group in stage.train]
    unchanged = [n for n in trained if not changed[n]]
    assert trained and unchanged == [], unchanged[:5]  # every trainable tensor moved
    assert {groups[n].group for n in trained} == set(stage.train)


def test_stage_two_keeps_temporal_and_fps_condition_identical():
    stage = get_stage("F-Spa-DIR")
    assert stage.name == "spa-dir" and stage.train == {Group.SPATIAL} and stage.data == {DataKind.IMAGES}
    unet = random_unet(tiny_unet_config())
    frozen = {n: p.detach().clone() for n, p in unet.named_parameters()
              if classify_unet_parameters(unet)[n].group in (Group.TEMPORAL, Group.CONDITIONING)}
    assert any(n.startswith("fps_embedding") for n in frozen) and any("temopral_conv" in n for n in frozen)
    train_steps(unet, stage, frames=1, steps=3)
    params = dict(unet.named_parameters())
    assert all(torch.equal(params[n], value) for n, value in frozen.items())
    assert all(not params[n].requires_grad for n in frozen) and params["out.2.weight"].requires_grad


def test_paper_names_resolve():
    assert get_stage("F-Spa&Temp-DIR").name == "spa-temp-dir"
    assert get_stage("f-temp-dir").name == "temp-dir"
    assert get_stage("P-base").name == "partial"
    assert get_stage("F-Spa&Temp-LORA").name == "spa-temp-lora" and get_stage("P-Temp-LORA").lora
    with pytest.raises(ValueError, match="unknown stage 'spa-lra'"):
        get_stage("spa-lra")
    with pytest.raises(ValueError, match="trains LoRA adapters"):
        apply_stage(random_unet(tiny_unet_config()), get_stage("spa-lora"))


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    unet = random_unet(tiny_unet_config())
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 4, 8, 8, generator=g).cumsum(dim=2) * 0.3  # frames that move smoothly
    context = torch.randn(2, 77, 32, generator=g)
    probe_t, probe_noise = torch.tensor([100, 700]), torch.randn(latents.shape, generator=g)

    def probe():
        with torch.no_grad():
            return diffusion_loss(unet, SCHEDULE, latents, context, 8, probe_t, probe_noise).item()

    first = probe()
    optimizer = torch.optim.AdamW([p for _, p in apply_stage(unet, STAGES["full"])], lr=1e-3)
    for _ in range(30):
        loss = drawn_loss(unet, SCHEDULE, latents, context, 8, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert probe() < 0.7 * first


def test_loss_uses_the_scaled_forward_process():
    recorded = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, context, fps):
            recorded.update(x=x, t=t, fps=fps)
            return x * 0 + self.weight

    z0, noise, t = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4), torch.tensor([10, 900])
    loss = diffusion_loss(Spy(), SCHEDULE, z0, torch.zeros(2, 77, 32), 28, t, noise)
    a = SCHEDULE.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1, 1)
    s = SCHEDULE.scale_arr[t].view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(recorded["x"], a * s * z0 + (1 - a**2).sqrt() * noise)
    assert recorded["fps"] == 28 and torch.equal(recorded["t"], t)
    torch.testing.assert_close(loss, (noise**2).mean())


def test_caption_dropout_uses_the_empty_prompt_embedding():
    """BatchMaker replaces an item's text by the embedding of "" with the configured probability, keyed by item."""
    vae = VideoVAE(preset("tiny").vae)
    sample = CachedSample(torch.zeros(2 * vae.config.z_channels, 1, 4, 4), torch.ones(3, 2), 8, "x")
    drawn = [Drawn(key, sample) for key in range(1000)]

    def contexts(prob: float) -> torch.Tensor:
        maker = BatchMaker(vae, None, 1000, seed=0, caption_dropout=prob, uncond=torch.zeros(1, 3, 2),
                           device=torch.device("cpu"))
        return maker.from_cache("images", drawn).context.flatten(1)  # (1000, 3 * 2)

    rows = contexts(0.1)
    assert ((rows == 0).all(1) | (rows == 1).all(1)).all()
    assert 70 < (rows == 0).all(1).sum() < 130  # about 10% of 1000
    assert torch.equal(contexts(0.1), rows)  # keyed by the items: the same items drop again
    assert (contexts(0.0) == 1).all()
