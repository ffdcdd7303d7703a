"""benchmarks/gpu_suite.py's dry run: the GPU suite's every part runs on the CPU at tiny sizes (the script is
checked here; its numbers only mean something on the GPU, docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["reference", "memory", "sample/eager", "sample/compile", "sample/channels_last", "sample/diffusers-unet3d",
         "train_step", "attention", "sample/compile+channels_last", "train_checkpointing", "train_step_compiled",
         "sample/compile-cudagraphs"]


def test_dry_run_runs_every_part_and_writes_its_results(tmp_path):
    out = tmp_path / "suite.json"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["finished"] and result["machine"]["torch"] == __import__("torch").__version__
    parts = result["parts"]
    assert list(parts) == PARTS
    failed = {name: part.get("error") or part.get("skipped") for name, part in parts.items()
              if "error" in part or "skipped" in part}
    assert not failed, failed
    for name in ("sample/compile", "sample/channels_last", "sample/compile+channels_last", "sample/compile-cudagraphs"):
        assert parts[name]["all_finite"], name
        assert parts[name]["forward_rel_l2_vs_eager"] < 1e-5, (name, parts[name]["forward_rel_l2_vs_eager"])
        assert parts[name]["video_rel_l2_vs_eager"] < 1e-4, (name, parts[name]["video_rel_l2_vs_eager"])
    assert parts["sample/eager"]["video_rel_l2_vs_eager"] == 0.0  # eager is the reference of the videos
    assert parts["memory"]["low_memory"]["finite"] and parts["memory"]["default"]["finite"]
    assert set(parts["train_step"]) - {"part_s"} == {"ours_sdpa", "ours_math", "diffusers"}
    assert parts["train_step_compiled"]["ours_sdpa_compiled"]["ratio_to_diffusers"] > 0
    assert parts["train_checkpointing"]["batch"] == 2 and parts["train_checkpointing"]["median_step_s"] > 0
