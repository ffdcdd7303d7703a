"""Shared fixtures: tiny configs with random (non-zero) weights, CPU only."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from vc2_core.config import UNetConfig, preset
from vc2_core.modules import UNetModel
from vc2_core.random_weights import randomize_zero_initialized


def pytest_configure(config) -> None:
    """Without CUDA, Triton kernels run under the Triton interpreter; it must be chosen before they are defined."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


def tiny_unet_config(**changes) -> UNetConfig:
    """The tiny VideoCrafter2 UNet with some flags changed."""
    return dataclasses.replace(preset("tiny").unet, **changes)


def random_unet(config: UNetConfig, seed: int = 0) -> UNetModel:
    torch.manual_seed(seed)
    unet = UNetModel(config).eval()
    randomize_zero_initialized(unet, torch.Generator().manual_seed(seed + 1))
    return unet


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset with seeded random weights (zero-initialized layers randomized too), in eval mode."""
    from vc2_core.model import VideoCrafter  # here, not at the top: pytest_configure sets TRITON_INTERPRET first

    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny")).eval()
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    return model


@pytest.fixture
def reference_dir() -> Path:
    assert REFERENCE.is_dir(), f"the shared reference files are expected at {REFERENCE}"
    return REFERENCE
