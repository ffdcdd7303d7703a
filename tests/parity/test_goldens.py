"""One test per golden file: rebuild the case from its sidecar with vc2_core and check every output.

    VC2_GOLDENS_DIR=DIR python -m pytest tests/parity

DIR defaults to ../shared/reference/goldens. A golden this project cannot run fails; nothing is skipped.
"""

from __future__ import annotations

import pytest
import torch
from golden_case import GoldenCase, compare, discover, goldens_dir
from golden_kinds import KINDS

CASES = discover()


def test_goldens_directory_has_cases():
    assert CASES, f"no golden files (*.safetensors) in {goldens_dir()}; set VC2_GOLDENS_DIR"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path):
    case = GoldenCase.load(path)
    kind = KINDS.get(case.kind)
    assert kind is not None, f"{case.name}: kind {case.kind!r} is not reproduced by vc2 (known: {sorted(KINDS)})"
    torch.manual_seed(0)
    with torch.no_grad():
        produced = kind.produce(case)
    problems = compare(case, produced, kind.tolerance)
    assert not problems, f"{case.name} ({case.kind}):\n  " + "\n  ".join(problems)
