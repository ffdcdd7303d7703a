"""``vc2 init``: a checkpoint of a preset with random weights, in the official key layout (tests and demos)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..config import PRESET_NAMES, preset
from .usage import check_output_file, seed


def add_parser(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="write a checkpoint with random weights (for tests and demos)",
                               description="Write a random-weight checkpoint of a preset in the official key "
                                           "layout (safetensors). Not a trained model.")
    init.add_argument("--preset", choices=PRESET_NAMES, required=True)
    init.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    init.add_argument("--seed", type=seed, default=0)
    init.add_argument("--randomize-zero-init", action="store_true",
                      help="also give random values to the layers the official init sets to zero, so the "
                           "model's output is not identically 0")
    init.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import save_checkpoint
    from ..model import VideoCrafter
    from ..random_weights import randomize_zero_initialized

    check_output_file(args.out, ".safetensors")
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    print(f"building {args.preset} with random weights (seed {args.seed}) ...", flush=True)
    model = VideoCrafter(preset(args.preset))
    if args.randomize_zero_init:
        randomize_zero_initialized(model.unet, torch.Generator().manual_seed(args.seed + 1))
    save_checkpoint(model, args.out)
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size:,.1f} MiB) in {time.perf_counter() - started:.1f} s; random weights, not a "
          "trained model")
    return 0
