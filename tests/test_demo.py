"""vc2 demo at its tiny preset: every artifact is written and decodes, stage 2 kept stage 1's temporal tensors,
and a second run resumes (skips) what is done."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from vc2_core.checkpoint import load_checkpoint
from vc2_core.demo import PRESETS, run_demo
from vc2_core.parameter_groups import Group, classify_unet_parameters
from vc2_core.video_io import read_video


def test_tiny_demo_writes_every_artifact_and_keeps_temporal_tensors(tmp_path):
    report = run_demo(tmp_path, preset="tiny", show_progress=False)
    preset = PRESETS["tiny"]
    text = report.read_text()
    assert "| motion: direction agreement" in text and "bit for bit: **yes**" in text
    for kind in ("mp4", "gif"):
        frames, fps = read_video(tmp_path / f"stage1_vs_stage2.{kind}")
        assert frames.shape == (8, 4 * 32 * len(preset.prompts), 4 * (2 * 32 + 2), 3), kind
        assert fps > 0
    for chart in ("loss_curves.png", "metrics.png"):
        with Image.open(tmp_path / chart) as image:
            assert image.format == "PNG" and image.size == (720, 400)
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert len(rows) == 2 * len(preset.prompts) * len(preset.seeds)
    assert all(np.isfinite(row["sharpness"]) and np.isfinite(row["track_jitter"]) for row in rows)

    stage1 = tmp_path / "stage1" / "checkpoints" / "step-00000004" / "model.safetensors"
    stage2 = tmp_path / "stage2" / "checkpoints" / "step-00000003" / "model.safetensors"
    first, _ = load_checkpoint(stage1)
    second, _ = load_checkpoint(stage2)
    groups = classify_unet_parameters(first.unet)
    a, b = first.unet.state_dict(), second.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k, info in groups.items() if info.group != Group.SPATIAL)
    assert any(not torch.equal(a[k], b[k]) for k, info in groups.items() if info.group == Group.SPATIAL)

    mtime = stage2.stat().st_mtime
    run_demo(tmp_path, preset="tiny", show_progress=False)  # resumes: nothing is trained again
    assert stage2.stat().st_mtime == mtime
