"""vc2 demo at its tiny preset: the reproducing command (--from-scratch) writes a base with its provenance, which
loads through the same path as the shipped base; every artifact is written and decodes; stage 2 keeps stage 1's
temporal tensors; the report states each target; a second run resumes; bad input writes nothing."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vc2_core.checkpoint import load_checkpoint, read_provenance
from vc2_core.cli import main
from vc2_core.experiments.demo import SHIPPED_BASE, run_demo
from vc2_core.experiments.presets import DEMO_PRESETS
from vc2_core.parameter_groups import Group, classify_unet_parameters
from vc2_core.video_io import read_video

TINY = DEMO_PRESETS["tiny"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch")
    return out, run_demo(out, preset="tiny", from_scratch=True, show_progress=False)


def _split(first: torch.nn.Module, second: torch.nn.Module) -> tuple[bool, bool]:
    """(every temporal/conditioning tensor equal, some spatial tensor changed)."""
    groups = classify_unet_parameters(first)
    a, b = first.state_dict(), second.state_dict()
    return (all(torch.equal(a[k], b[k]) for k, info in groups.items() if info.group != Group.SPATIAL),
            any(not torch.equal(a[k], b[k]) for k, info in groups.items() if info.group == Group.SPATIAL))


def test_from_scratch_writes_a_base_with_provenance_and_every_artifact(scratch):
    out, report = scratch
    provenance = read_provenance(out / "base.safetensors")
    assert provenance["made_by"] == "vc2 demo --from-scratch --preset tiny --seed 0"
    assert provenance["stage1_steps"] == TINY.stage1_steps and provenance["seed"] == 0
    assert provenance["commit"] and provenance["machine"] and provenance["wall_seconds"] > 0
    assert len(provenance["stage1_loss"]) == TINY.stage1_steps
    text = report.read_text()
    assert "**trained now** -> " in text and "| stage 1: direction agreement |" in text
    for kind in ("mp4", "gif"):
        frames, fps = read_video(out / f"stage1_vs_stage2.{kind}")
        assert frames.shape == (8, 4 * 32 * len(TINY.prompts), 4 * (2 * 32 + 2), 3), kind
        assert fps > 0
    for chart in ("loss_curves.png", "metrics.png"):
        with Image.open(out / chart) as image:
            assert image.format == "PNG" and image.size == (720, 400)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["videos"]) == 2 * len(TINY.prompts) * len(TINY.seeds)
    assert all(np.isfinite(row["sharpness"]) and np.isfinite(row["one_object"]) for row in metrics["videos"])
    names = {target["name"] for target in metrics["targets"]}
    assert {"stage 1: direction agreement", "stage 1: frames with exactly one object", "stage 2: watermark",
            "stage 2: temporal tensors bit-identical to stage 1", "run: peak resident memory, GB"} <= names
    assert "run: wall time, s" not in names  # the time target is the default command's, not a from-scratch run's
    assert next(t for t in metrics["targets"] if t["name"].startswith("stage 2: temporal"))["met"] is True
    assert metrics["run"]["base_trained_now"] is True and 0 < metrics["run"]["peak_rss_gb"] < 24

    base, _ = load_checkpoint(out / "base.safetensors")
    stage2, _ = load_checkpoint(out / "stage2" / "checkpoints" / "step-00000003" / "model.safetensors")
    assert _split(base.unet, stage2.unet) == (True, True)

    mtime = (out / "stage2" / "summary.json").stat().st_mtime
    run_demo(out, preset="tiny", from_scratch=True, show_progress=False)  # resumes: nothing is trained again
    assert (out / "stage2" / "summary.json").stat().st_mtime == mtime


def test_a_made_base_loads_through_the_shipped_bases_path(scratch, tmp_path):
    made = scratch[0] / "base.safetensors"
    assert main(["demo", "--preset", "tiny", "--base", str(made), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert f"**loaded** from `{made}`, made by `vc2 demo --from-scratch --preset tiny --seed 0`" in text
    assert not (tmp_path / "stage1").exists() and not (tmp_path / "base.safetensors").exists()
    base, _ = load_checkpoint(made)
    stage2, _ = load_checkpoint(tmp_path / "stage2" / "checkpoints" / "step-00000003" / "model.safetensors")
    assert _split(base.unet, stage2.unet) == (True, True)


def test_the_shipped_base_records_how_it_was_made():
    provenance = read_provenance(SHIPPED_BASE)
    assert provenance["made_by"].startswith("vc2 demo --from-scratch --preset quick")
    assert provenance["stage1_steps"] == DEMO_PRESETS["quick"].stage1_steps
    # made at 5792d66; "+dirty" there was an edit to docs/architecture.md during the run (since then only the
    # package's own files decide it)
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", provenance["commit"])
    assert SHIPPED_BASE.stat().st_size <= 20 * 2**20
    model, info = load_checkpoint(SHIPPED_BASE)
    assert info.config.name == "tiny-world"


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "huge"}, "unknown demo preset 'huge'"),
    ({"from_scratch": True, "base": "x.safetensors"}, "not both"),
    ({"base": "missing.safetensors"}, "no such file"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, kwargs, message):
    out = tmp_path / "demo"
    with pytest.raises(ValueError, match=message):
        run_demo(out, show_progress=False, **kwargs)
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["demo", "--preset", "tiny", "--out", str(target)]) == 1
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"
