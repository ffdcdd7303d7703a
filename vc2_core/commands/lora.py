"""``vc2 lora``: work with LoRA adapter files (:mod:`vc2_core.training.lora`).

    vc2 lora merge --ckpt BASE --lora lora.safetensors --out merged.safetensors [--scale 1.0]

``merge`` folds the adapters into the base checkpoint's UNet weights and writes a full checkpoint
in the official key layout, which loads anywhere a VideoCrafter checkpoint does (no LoRA code
needed). The LoRA file is checked first (cheap), then the base is recognised and its family
compared with the LoRA's, and only then is anything merged or written.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from .usage import UsageError, check_output_file


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:
    lora = commands.add_parser("lora", help="LoRA adapters: fold a trained LoRA into a checkpoint",
                               description="Work with the LoRA files that LoRA training stages write "
                                           "(spa-lora, temp-lora, spa-temp-lora).")
    actions = lora.add_subparsers(dest="action", required=True, metavar="ACTION")
    merge = actions.add_parser(
        "merge", help="fold a LoRA into a base checkpoint and write a full checkpoint",
        description="Fold a LoRA file into the UNet weights of a base checkpoint (W + scale * alpha/rank * up @ down, "
                    "in float32) and write the result in the official key layout.")
    merge.add_argument("--ckpt", type=Path, required=True, help="base checkpoint (.ckpt or .safetensors)")
    merge.add_argument("--lora", type=Path, required=True, help="LoRA file written by training (lora.safetensors)")
    merge.add_argument("--out", type=Path, required=True, help="merged checkpoint to write (.safetensors)")
    merge.add_argument("--scale", type=_finite, default=1.0,
                       help="LoRA strength: 1 = as trained (default), 0 = the base model, 0.5 = half way")
    merge.set_defaults(run=run_merge)


def check_merge_paths(ckpt: Path, lora: Path, out: Path) -> None:
    """The output is a .safetensors file in an existing folder, and neither input."""
    check_output_file(out, ".safetensors")
    for flag, given in (("--ckpt", ckpt), ("--lora", lora)):
        if out.resolve() == given.resolve():
            raise UsageError(f"--out {out} is the {flag} file; write the merged checkpoint to a new file")


def run_merge(args: argparse.Namespace) -> int:
    from ..checkpoint import build_model, open_checkpoint, save_checkpoint
    from ..training.lora import merge_lora_state, read_lora

    started = time.perf_counter()
    check_merge_paths(args.ckpt, args.lora, args.out)
    lora = read_lora(args.lora)
    groups = ", ".join(g.value for g in lora.groups)
    print(f"LoRA {args.lora}: {lora.family}, {len(lora.layers())} layers ({lora.targets} of {groups}), "
          f"rank {lora.rank}, alpha {lora.alpha:g}", flush=True)
    checkpoint = open_checkpoint(args.ckpt)
    info = checkpoint.info
    if lora.family not in (info.family, info.config.name):
        raise UsageError(f"the LoRA was trained on a {lora.family} model, but {args.ckpt} is {info.family}")
    unet_state = checkpoint.parts["unet"]
    merged = merge_lora_state(unet_state, lora, scale=args.scale)
    dtype = next(value.dtype for value in unet_state.values() if value.is_floating_point())
    model = build_model(checkpoint, dtype=dtype)  # the base's precision is kept
    del checkpoint, unet_state
    save_checkpoint(model, args.out, unet_state={key: value.to(dtype) if value.is_floating_point() else value
                                                   for key, value in merged.items()})
    size = args.out.stat().st_size / 2**20
    print(f"merged into {args.ckpt} ({info.family}, {str(dtype).removeprefix('torch.')}) at scale {args.scale:g}: "
          f"wrote {args.out} ({size:,.1f} MiB) in {time.perf_counter() - started:.1f} s")
    return 0
