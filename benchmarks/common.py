"""Timing and machine description shared by the benchmark scripts (results are JSON, never timed tests)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vc2_core.config import UNetConfig, preset

PAGE = 4096


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class PeakRSS:
    """Highest resident set seen by a 5 ms sampling thread while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def mid_config() -> UNetConfig:
    """VideoCrafter2's UNet layout and flags (4 levels, temporal convs and transformers, init_attn, fps
    embedding) at model_channels 64, head width 32, context 256: 58.1 M parameters."""
    return dataclasses.replace(preset("vc2-512").unet, model_channels=64, num_head_channels=32, context_dim=256,
                               use_checkpoint=False)


def machine() -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def time_call(fn: Callable[[], object], *, warmup: int, repeats: int, device: str = "cpu") -> dict:
    """Median / min / max wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "repeats": repeats, "samples_s": samples}


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
