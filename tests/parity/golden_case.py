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
        sidecar_path = path.with_suffix(".json")
        if not sidecar_path.exists():
            raise FileNotFoundError(f"golden {path.name} has no sidecar {sidecar_path.name}")
        return cls(path.stem, path, json.loads(sidecar_path.read_text()), load_file(str(path)))

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


def compare(case: GoldenCase, produced: dict[str, torch.Tensor], tolerance) -> list[str]:
    """Check every recorded output; returns one line per problem (an unchecked output is a problem).

    ``tolerance(name, expected) -> (kind, value)`` with kind "abs" (max |a-b|), "rel" (max |a-b| / max |b|),
    "allclose" (value = (rtol, atol)) or "equal".
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
        if how == "equal":
            ok = torch.equal(actual.to(expected.dtype), expected)
            detail = "values differ"
        elif how == "allclose":
            rtol, atol = value
            ok = torch.allclose(actual.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=False)
            detail = f"not allclose(rtol={rtol}, atol={atol}); max |diff| {max_abs_diff(actual, expected):.3g}"
        elif how == "rel":
            scale = expected.double().abs().max().item() or 1.0
            err = max_abs_diff(actual, expected) / scale
            ok = err <= value
            detail = f"max |diff| / max |golden| = {err:.3g} > {value}"
        else:
            err = max_abs_diff(actual, expected)
            ok = err <= value
            detail = f"max |diff| = {err:.3g} > {value}"
        if not ok:
            problems.append(f"out.{name}: {detail}")
    return problems
