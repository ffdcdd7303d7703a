"""Golden cases produced by the official VideoCrafter code (format: shared/reference/FORMAT.md).

A case is ``NAME.safetensors`` (tensors with prefixes sd./buf./in./out.) plus its sidecar
``NAME.json``. Each case is rebuilt from its sidecar's ``kind`` and ``config``, never its name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GOLDENS_DIR = REPO_ROOT.parent / "shared" / "reference" / "goldens"


def goldens_dir() -> Path:
    return Path(os.environ.get("VC2_GOLDENS_DIR", DEFAULT_GOLDENS_DIR)).resolve()


PROJECT_GOLDENS_DIRS = [REPO_ROOT / "tests" / "parity" / "goldens_t2v_turbo"]  # made here from other projects' code


def discover() -> list[Path]:
    """Every case file in the goldens directory (``*.safetensors``; JSON files are sidecars, not cases)."""
    return sorted(goldens_dir().glob("*.safetensors"))


def read_sidecar(path: Path) -> dict:
    """The sidecar ``NAME.json`` of the case file ``NAME.safetensors``."""
    sidecar_path = path.with_suffix(".json")
    if not sidecar_path.exists():
        raise FileNotFoundError(f"golden {path.name} has no sidecar {sidecar_path.name}")
    return json.loads(sidecar_path.read_text())


def project_goldens() -> list[Path]:
    """The case files the project made itself from other projects' code (PROJECT_GOLDENS_DIRS), always run."""
    return [path for directory in PROJECT_GOLDENS_DIRS for path in sorted(directory.glob("*.safetensors"))]


@dataclass
class GoldenCase:
    name: str
    path: Path
    sidecar: dict
    tensors: dict[str, torch.Tensor]

    @classmethod
    def load(cls, path: Path) -> GoldenCase:
        return cls(path.stem, path, read_sidecar(path), load_file(str(path)))

    @property
    def kind(self) -> str:
        return self.sidecar["kind"]

    @property
    def config(self) -> dict:
        return self.sidecar["config"]

    def with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix`` with the prefix stripped (e.g. ``sd.`` -> a state dict)."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def outputs(self) -> dict[str, torch.Tensor]:
        return self.with_prefix("out.")

    def sibling_cases(self) -> list[GoldenCase]:
        """The other cases of the same directory (a DDIM case takes its VAE weights from one)."""
        return [GoldenCase.load(p) for p in sorted(self.path.parent.glob("*.safetensors")) if p != self.path]


def max_abs_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a-b| / max |b| (max |a-b| where the golden is all zeros)."""
    scale = expected.double().abs().max().item() if expected.numel() else 0.0
    return max_abs_diff(actual, expected) / (scale or 1.0)


# One check per tolerance kind: (actual, expected, value) -> what is wrong, or None.
def _equal(actual, expected, value) -> str | None:
    return None if torch.equal(actual.to(expected.dtype), expected) else "values differ"


def _allclose(actual, expected, value) -> str | None:
    rtol, atol = value
    if torch.allclose(actual.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=False):
        return None
    return f"not allclose(rtol={rtol}, atol={atol}); max |diff| {max_abs_diff(actual, expected):.3g}"


def _abs(actual, expected, value) -> str | None:
    err = max_abs_diff(actual, expected)
    return None if err <= value else f"max |diff| = {err:.3g} > {value}"


def _rel(actual, expected, value) -> str | None:
    err = relative_error(actual, expected)
    return None if err <= value else f"max |diff| / max |golden| = {err:.3g} > {value}"


def _rel_per_step(actual, expected, value) -> str | None:
    """Dim 0 indexes steps; each step is compared against its own max |golden| (FORMAT.md section 3)."""
    errors = [relative_error(a, e) for a, e in zip(actual, expected)]  # one per step
    worst = max(range(len(errors)), key=errors.__getitem__, default=None)
    if worst is None or errors[worst] <= value:
        return None
    failing = sum(err > value for err in errors)
    return f"step {worst}: max |diff| / max |golden| = {errors[worst]:.3g} > {value} ({failing} of {len(errors)} fail)"


CHECKS = {"equal": _equal, "allclose": _allclose, "abs": _abs, "rel": _rel, "rel_per_step": _rel_per_step}


def compare(case: GoldenCase, produced: dict[str, torch.Tensor], tolerance) -> list[str]:
    """Check every recorded output; returns one line per problem (an unchecked output is a problem).

    ``tolerance(name, expected) -> (kind, value)`` with kind "abs" (max |a-b|), "rel" (max |a-b| / max |b|),
    "rel_per_step" ("rel" for each index of dim 0, the step axis of a stacked trajectory), "allclose"
    (value = (rtol, atol)) or "equal".
    """
    problems = []
    for name, expected in case.outputs().items():
        if name not in produced:
            problems.append(f"out.{name}: not reproduced by vc2 (the harness does not know this output)")
            continue
        actual = produced[name].detach().cpu()
        if tuple(actual.shape) != tuple(expected.shape):
            problems.append(f"out.{name}: shape {tuple(actual.shape)} != golden {tuple(expected.shape)}")
            continue
        how, value = tolerance(name, expected)
        problem = CHECKS[how](actual, expected, value)
        if problem is not None:
            problems.append(f"out.{name}: {problem}")
    return problems
