"""``vc2 inspect``: describe a checkpoint (family, parameter counts by group, key problems), or write the key
manifest of a preset (every key and shape of a full checkpoint, built on the meta device)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..config import PRESET_NAMES, ModelConfig, preset
from ..files import write_text_atomically
from ..keys import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from .usage import UsageError, check_output_file

NON_PERSISTENT_BUFFERS = [TEXT_PREFIX + "model.attn_mask", "lvlb_weights"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    inspect = commands.add_parser("inspect", help="describe a checkpoint, or write the key manifest of a preset",
                                  description="Describe a checkpoint (family, parameter counts by group, key "
                                              "problems), or with --preset write every key and shape of a full "
                                              "checkpoint of that preset (built on the meta device).")
    inspect.add_argument("checkpoint", nargs="?", type=Path, help=".ckpt or .safetensors file")
    inspect.add_argument("--preset", choices=PRESET_NAMES, help="describe a preset instead of a file")
    inspect.add_argument("--manifest", type=Path, help="with --preset: write its keys and shapes to this JSON file")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..model import VideoCrafter  # transformers and diffusers (seconds): imported when a command runs

    if args.preset and args.checkpoint:
        raise UsageError("give a checkpoint file or --preset, not both")
    if args.preset:
        if args.manifest:
            check_output_file(args.manifest, ".json", "--manifest")
        with torch.device("meta"):
            model = VideoCrafter(preset(args.preset))
        manifest = _manifest(model)
        if args.manifest:
            write_text_atomically(args.manifest, json.dumps(manifest, indent=1) + "\n")
            print(f"wrote {len(manifest['keys'])} keys of {args.preset} to {args.manifest}")
        report = _describe(model.config, args.preset, manifest["counts"], model, notes=())
    else:
        if args.checkpoint is None:
            raise UsageError("give a checkpoint file, or --preset NAME")
        if args.manifest:
            raise UsageError("--manifest is written for a --preset")
        from ..checkpoint import inspect_checkpoint

        state, info = inspect_checkpoint(args.checkpoint)
        with torch.device("meta"):
            model = VideoCrafter(info.config)
        report = _describe(info.config, info.family, _counts(state), model, info.notes)
        report["file"] = str(args.checkpoint)
    print(json.dumps(report, indent=1) if args.json else _format(report))
    return 0


def _manifest(model) -> dict:
    state = model.official_state_dict()
    return {
        "preset": model.config.name,
        "keys": {key: [list(value.shape), str(value.dtype).removeprefix("torch.")] for key, value in state.items()},
        "counts": _counts(state),
        "non_persistent_buffers": NON_PERSISTENT_BUFFERS,
    }


def _counts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, int]]:
    """Keys and elements per part, in checkpoint order: schedule, UNet, VAE, text encoder."""
    parts = ("schedule", UNET_PREFIX.rstrip("."), VAE_PREFIX.rstrip("."), TEXT_PREFIX.rstrip("."))
    counts: dict[str, dict[str, int]] = {part: {"num_keys": 0, "num_params": 0} for part in parts}
    for key, value in state.items():
        part = next((p.rstrip(".") for p in (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX) if key.startswith(p)), "schedule")
        counts[part]["num_keys"] += 1
        counts[part]["num_params"] += value.numel()
    counts["total"] = {"num_keys": len(state), "num_params": sum(v.numel() for v in state.values())}
    return counts


def _describe(config: ModelConfig, family: str, counts: dict, model, notes) -> dict:
    from ..parameter_groups import group_totals

    groups = {name: entry["total"] for name, entry in group_totals(model.unet).items()}
    return {
        "family": family,
        "video": f"{config.frames} frames, {config.height}x{config.width}, fps {config.fps}",
        "latent_scale": config.schedule.use_scale,
        "counts": counts,
        "unet_groups": groups,
        "notes": list(notes),
    }


def _format(report: dict) -> str:
    counts = report["counts"]
    lines = [f"file:        {report['file']}"] if "file" in report else []
    scale = "on" if report["latent_scale"] else "off"
    lines += [
        f"family:      {report['family']} ({report['video']}; latent scale {scale})",
        "keys:        " + ", ".join(f"{name} {entry['num_keys']}" for name, entry in counts.items()),
        "parameters:  " + ", ".join(f"{name} {entry['num_params']:,}" for name, entry in counts.items()),
        "UNet groups: " + ", ".join(f"{name} {total:,}" for name, total in report["unet_groups"].items()),
        "key problems: none (the UNet loads strictly)",
    ]
    lines += [f"note:        {note}" for note in report["notes"]]
    return "\n".join(lines)
