"""vc2 study coupling: its statistics, and the tiny preset end to end (every model trained as its stage says,
scored, tabulated, charted, and skipped when run again)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vc2_core.checkpoint import load_checkpoint
from vc2_core.cli import main
from vc2_core.experiments.presets import STUDY_PRESETS, VARIANTS
from vc2_core.experiments.study import record_settings, run_study
from vc2_core.experiments.study_analysis import CLAIMS, _preference, mean_interval
from vc2_core.parameter_groups import Group, classify_unet_parameters


def test_mean_interval_is_the_student_t_interval():
    mean, low, high = mean_interval([1.0, 2.0, 3.0, float("nan")])
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    assert mean == pytest.approx(2.0) and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    single = mean_interval([0.5])
    assert single[0] == 0.5 and math.isnan(single[1]) and math.isnan(single[2])
    assert all(math.isnan(v) for v in mean_interval([float("nan")]))


def test_preference_counts_ties_as_half_and_lost_objects_as_worst():
    first = [{"direction_agreement": v} for v in (0.9, 0.2, float("nan"), 0.5)]
    second = [{"direction_agreement": v} for v in (0.1, 0.8, 0.3, 0.5)]
    assert _preference(first, second, "prompted") == pytest.approx((1 + 0 + 0 + 0.5) / 4)
    steady = [{"one_object": 1.0, "track_jitter": 0.2}, {"one_object": 1.0, "track_jitter": 0.1}]
    flashing = [{"one_object": 0.5, "track_jitter": 0.0}, {"one_object": 1.0, "track_jitter": 0.3}]
    assert _preference(steady, flashing, "object") == 1.0  # one object first, then the smoother track


def test_study_needs_two_distinct_seeds(tmp_path, capsys):
    assert main(["study", "coupling", "--preset", "tiny", "--seeds", "3", "--out", str(tmp_path)]) == 1
    assert "at least two distinct seeds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown study preset"):
        run_study(tmp_path, preset="huge")
    record_settings(tmp_path / "study.json", STUDY_PRESETS["tiny"])  # a folder of a tiny study
    assert main(["study", "coupling", "--preset", "quick", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "holds a study with other settings" in err, err
    assert f"image_model_steps 2 -> {STUDY_PRESETS['quick'].image_model_steps}" in err, err
    assert "resume it with preset 'tiny'" in err and sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]
    with pytest.raises(SystemExit) as exit_code:  # argparse's own error
        main(["study", "coupling", "--preset", "tiny", "--jobs", "0", "--out", str(tmp_path)])
    assert exit_code.value.code == 2 and "--jobs: must be at least 1, got 0" in capsys.readouterr().err


def _spatial_and_other(path):
    model, _ = load_checkpoint(path)
    groups = classify_unet_parameters(model.unet)
    state = model.unet.state_dict()
    spatial = {k: state[k] for k, info in groups.items() if info.group == Group.SPATIAL}
    other = {k: state[k] for k, info in groups.items() if info.group != Group.SPATIAL}
    return spatial, other


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_study_trains_scores_and_reports_every_model(tmp_path):
    """Two seeds side by side (a process each), then resumed in one process: nothing is redone."""
    report = run_study(tmp_path, preset="tiny", seeds=(0, 1), show_progress=False, jobs=2)
    text = report.read_text()
    for heading in ("## Visual quality (the paper's Table 3)", "## Motion preference (the paper's Table 4)",
                    "## The paper's orderings at this scale", "## Reading"):
        assert heading in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["models"]) == 2 + len(VARIANTS) * 2  # two bases, each variant at two lengths
    assert len(results["claims"]) == len(CLAIMS)
    assert {c["verdict"] for c in results["claims"]} <= {"reproduced", "contradicted", "not resolved"}
    for chart in ("direction_agreement_vs_length.png", "watermark_vs_length.png", "sharpness_vs_length.png"):
        with Image.open(tmp_path / chart) as image:
            assert image.format == "PNG" and image.size == (720, 400)
    scores = json.loads((tmp_path / "seed1" / "scores" / "P-Temp-LORA@2.json").read_text())
    assert len(scores) == 2 and {"direction_agreement", "watermark", "sharpness"} <= set(scores[0])

    seed = tmp_path / "seed0"
    image_spatial, image_other = _spatial_and_other(seed / "image-model" / "checkpoints" / "step-00000002" /
                                                    "model-ema.safetensors")  # the image model is its EMA
    start_spatial, start_other = _spatial_and_other(seed / "start.safetensors")
    assert _same(image_other, start_other) and not _same(image_spatial, start_spatial)  # an image model
    p_spatial, p_other = _spatial_and_other(seed / "P-base" / "checkpoints" / "step-00000003" / "model.safetensors")
    assert _same(p_spatial, image_spatial) and not _same(p_other, image_other)  # partial: temporal only
    f_spatial, f_other = _spatial_and_other(seed / "F-base" / "checkpoints" / "step-00000003" / "model.safetensors")
    assert not _same(f_spatial, image_spatial) and not _same(f_other, image_other)  # full: everything
    # the perturbations start from the base's EMA weights (what the base is), written beside its weights
    ema_spatial, ema_other = _spatial_and_other(seed / "F-base" / "checkpoints" / "step-00000003" /
                                                "model-ema.safetensors")
    spa, other = _spatial_and_other(seed / "F-Spa-DIR" / "checkpoints" / "step-00000001" / "model.safetensors")
    assert _same(other, ema_other) and not _same(spa, ema_spatial)

    groups = classify_unet_parameters(load_checkpoint(seed / "start.safetensors")[0].unet)
    for name, group in (("F-Spa-LORA", Group.SPATIAL), ("P-Temp-LORA", Group.TEMPORAL)):
        lora = load_file(str(seed / name / "checkpoints" / "step-00000002" / "lora.safetensors"))
        assert lora and all(torch.isfinite(t).all() for t in lora.values())
        bases = {k.replace(".lora_down.weight", ".weight").replace(".lora_up.weight", ".weight") for k in lora}
        assert {groups[k].group for k in bases} == {group}, name

    assert not (tmp_path / "seed-caches").exists()  # the caches built before the seeds forked: no run there
    mtime = (seed / "scores" / "F-base@0.json").stat().st_mtime
    first = json.loads((tmp_path / "runtime.json").read_text())
    assert first["invocations"] == 1 and first["seconds"] > 0
    run_study(tmp_path, preset="tiny", seeds=(0, 1), show_progress=False)  # resumes: nothing is redone
    assert (seed / "scores" / "F-base@0.json").stat().st_mtime == mtime
    both = json.loads((tmp_path / "runtime.json").read_text())  # the wall time sums the invocations
    assert both["invocations"] == 2 and both["seconds"] >= first["seconds"]
