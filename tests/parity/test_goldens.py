"""One test per golden file: rebuild the case from its sidecar with vc2_core and check every output.

    VC2_GOLDENS_DIR=DIR python -m pytest tests/parity

DIR defaults to ../shared/reference/goldens; the project's own goldens (tests/parity/goldens_t2v_turbo, from
T2V-Turbo's code) run as well. A golden this project cannot run fails; no golden is skipped.

The forwards whose outputs come straight from attention layers (sidecar kind ``unet_forward`` or
``module_forward``) run once more with every other attention backend that runs on the CPU: ``math``, and
``triton`` under the Triton interpreter. Each rerun counts the attention calls by the backend that ran them
and requires the asked-for backend to have run, every other call being one of its counted fallbacks
(triton hands cross-attention to SDPA). Two reruns are skipped, with the reason: a case that makes no call
through the backends (a ResBlock, VC1's relative-position attention, which is always the math path), and
triton on a CUDA machine, where the kernel is built for CUDA and the goldens are CPU tensors. The sampler
goldens reach attention only through the UNet.
"""

from __future__ import annotations

import os

import pytest
import torch
from golden_case import GoldenCase, compare, discover, goldens_dir, project_goldens, read_sidecar
from golden_kinds import KINDS

from vc2_core.attention import attention_backend, count_backend_calls, fallback_counts

CASES = discover() + project_goldens()
RERUN_KINDS = ("unet_forward", "module_forward")
RERUN_CASES = [p for p in CASES if p.with_suffix(".json").exists() and read_sidecar(p)["kind"] in RERUN_KINDS]
OTHER_CPU_BACKENDS = ["math", "triton"]  # the default, sdpa, runs in test_golden
TRITON_ON_CUDA = (
    "the goldens are CPU tensors and, on a CUDA machine, the Triton kernel is built for CUDA (Triton reads "
    "TRITON_INTERPRET when the kernel is defined); TRITON_INTERPRET=1 python -m pytest tests/parity runs these "
    "reruns under the interpreter here too, and tests/test_kernels.py checks the kernel on CUDA"
)


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


def fallbacks_from(backend: str) -> int:
    return sum(calls for (asked, _), calls in fallback_counts().items() if asked == backend)


@pytest.mark.parametrize("backend", OTHER_CPU_BACKENDS)
@pytest.mark.parametrize("path", RERUN_CASES, ids=[p.stem for p in RERUN_CASES])
def test_golden_with_attention_backend(path, backend):
    if backend == "triton" and torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip(TRITON_ON_CUDA)
    fallbacks_before = fallbacks_from(backend)
    with count_backend_calls() as calls, attention_backend(backend):
        run_golden(path)
    if not calls:
        pytest.skip(f"{path.stem} makes no call through the attention backends: its outputs do not depend on them")
    fallbacks = fallbacks_from(backend) - fallbacks_before
    assert calls[backend] > 0, f"{path.stem}: no attention call ran on {backend!r} (calls by backend: {dict(calls)})"
    assert calls.total() - calls[backend] == fallbacks, (
        f"{path.stem}: calls by backend {dict(calls)}, but {fallbacks} counted fallbacks from {backend!r}"
    )
