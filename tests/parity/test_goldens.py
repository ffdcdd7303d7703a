"""One test per golden file: rebuild the case from its sidecar with vc2_core and check every output.

    VC2_GOLDENS_DIR=DIR python -m pytest tests/parity

DIR defaults to ../shared/reference/goldens; the project's own goldens (tests/parity/goldens_t2v_turbo, from
T2V-Turbo's code) run as well. A golden this project cannot run fails; nothing is skipped.
The goldens whose outputs go through the attention layers (UNet and module forwards) run once
more with every other attention backend that runs on the CPU (``math``; ``triton`` under the
Triton interpreter). The sampler goldens reach attention only through the UNet.
"""

from __future__ import annotations

import os

import pytest
import torch
from golden_case import GoldenCase, compare, discover, goldens_dir, project_goldens
from golden_kinds import KINDS

from vc2_core.attention import attention_backend

CASES = discover() + project_goldens()
ATTENTION_CASES = [p for p in CASES if p.stem.startswith(("unet_", "mod_"))]
OTHER_CPU_BACKENDS = ["math", "triton"]  # the default, sdpa, runs in test_golden


def test_goldens_directory_has_cases():
    assert discover(), f"no golden files (*.safetensors) in {goldens_dir()}; set VC2_GOLDENS_DIR"


def run_golden(path) -> None:
    case = GoldenCase.load(path)
    kind = KINDS.get(case.kind)
    assert kind is not None, f"{case.name}: kind {case.kind!r} is not reproduced by vc2 (known: {sorted(KINDS)})"
    torch.manual_seed(0)
    with torch.no_grad():
        produced = kind.produce(case)
    problems = compare(case, produced, kind.tolerance)
    assert not problems, f"{case.name} ({case.kind}):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path):
    run_golden(path)


@pytest.mark.parametrize("backend", OTHER_CPU_BACKENDS)
@pytest.mark.parametrize("path", ATTENTION_CASES, ids=[p.stem for p in ATTENTION_CASES])
def test_golden_with_attention_backend(path, backend):
    assert GoldenCase.load(path).kind in ("unet_forward", "module_forward")
    assert backend != "triton" or os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
    with attention_backend(backend):
        run_golden(path)
