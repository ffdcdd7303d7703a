"""The ``vc2`` command.

    vc2 inspect CKPT [--json]                       family, parameter counts by group, key problems
    vc2 inspect --preset NAME --manifest OUT.json   every key and shape of a full checkpoint of a preset
    vc2 init --preset NAME --out FILE.safetensors   random weights in the official layout
    vc2 sample --ckpt FILE --prompt TEXT --out V.mp4 text to video (see vc2 sample --help)
    vc2 train --config FILE [--resume auto]          train a stage (see docs/training.md)
    vc2 cache --config FILE                         encode a config's data into a latent cache
    vc2 lora merge --ckpt BASE --lora L --out OUT   fold a trained LoRA into a checkpoint
    vc2 demo [--from-scratch | --base FILE]         the whole recipe on embedded synthetic data
    vc2 study coupling [--preset quick]             the paper's coupling analysis at toy scale

Every command prints a clear message and exits with status 1 on bad input, 0 on success.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .config import PRESET_NAMES, ModelConfig, preset
from .keys import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from .lora_command import add_parser as add_lora_parser
from .sample_command import add_parser as add_sample_parser
from .train_command import add_parsers as add_train_parsers

# The model modules import transformers and diffusers (seconds); commands import them when they run.
NON_PERSISTENT_BUFFERS = [TEXT_PREFIX + "model.attn_mask", "lvlb_weights"]


class UsageError(Exception):
    """Bad command-line input; printed without a traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:  # CheckpointError is a ValueError
        print(f"vc2 {args.command}: error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vc2", description="VideoCrafter2 / VideoCrafter1 text-to-video.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="describe a checkpoint, or write the key manifest of a preset",
                                  description="Describe a checkpoint (family, parameter counts by group, key "
                                              "problems), or with --preset write every key and shape of a full "
                                              "checkpoint of that preset (built on the meta device).")
    inspect.add_argument("checkpoint", nargs="?", type=Path, help=".ckpt or .safetensors file")
    inspect.add_argument("--preset", choices=PRESET_NAMES, help="describe a preset instead of a file")
    inspect.add_argument("--manifest", type=Path, help="with --preset: write its keys and shapes to this JSON file")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(run=_inspect)

    init = commands.add_parser("init", help="write a checkpoint with random weights (for tests and demos)",
                               description="Write a random-weight checkpoint of a preset in the official key "
                                           "layout (safetensors). Not a trained model.")
    init.add_argument("--preset", choices=PRESET_NAMES, required=True)
    init.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--randomize-zero-init", action="store_true",
                      help="also give random values to the layers the official init sets to zero, so the "
                           "model's output is not identically 0")
    init.set_defaults(run=_init)

    add_sample_parser(commands)
    add_train_parsers(commands)
    add_lora_parser(commands)

    demo = commands.add_parser(
        "demo", help="run the whole two-stage recipe on embedded synthetic data",
        description="The recipe on the embedded synthetic world: a base (stage 1, full training on low-quality "
                    "videos with stills) that ships with the package, or is trained now with --from-scratch; "
                    "stage 2 (spatial-only fine-tuning on high-quality images), trained now; both stages sampled "
                    "with unseen seeds and scored; videos side by side, loss and metric charts, and a report that "
                    "states every number next to its target. Resumable: run it again to continue.")
    demo.add_argument("--preset", default="quick", choices=["tiny", "quick"],
                      help="quick (default): about 1.5 minutes on a 2-core CPU with the shipped base (about 33 "
                           "minutes with --from-scratch); tiny: seconds (tests)")
    demo.add_argument("--from-scratch", action="store_true",
                      help="train the base (stage 0 autoencoder, stage 1) now instead of loading the shipped one; "
                           "writes OUT/base.safetensors with how it was made in its metadata")
    demo.add_argument("--base", type=Path, help="load this base instead of the shipped one (a file written by "
                                                "--from-scratch)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    demo.set_defaults(run=_demo)

    study = commands.add_parser("study", help="research experiments on embedded synthetic data")
    studies = study.add_subparsers(dest="study", required=True, metavar="STUDY")
    coupling = studies.add_parser(
        "coupling", help="fully vs partially trained bases, perturbed spatially or temporally (paper sec. 3.1)",
        description="Per seed: an image model, a fully and a partially trained video base from it, and eight "
                    "perturbations of them on high-quality images (F-Spa-DIR, F-Temp-DIR, F-Spa&Temp-DIR, "
                    "F-Spa&Temp-LORA, F-/P-Spa-LORA, F-/P-Temp-LORA) at several fine-tuning lengths; every model "
                    "sampled and scored; tables like the paper's Tables 3 and 4 with 95%% intervals over seeds, "
                    "plots, and a verdict on each of the paper's orderings. Resumable.")
    coupling.add_argument("--preset", default="quick", choices=["tiny", "quick", "full"],
                          help="quick (default): bases of 1,500 steps, about 40 minutes a seed on a 2-core CPU "
                               "(estimated from the demo's step rates); full: bases of 3,000 steps; "
                               "tiny: seconds (tests)")
    coupling.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                          help="training seeds, at least two (default 0 1 2)")
    coupling.add_argument("--out", default="runs/study-coupling", help="output folder (default runs/study-coupling)")
    coupling.set_defaults(run=_study_coupling)
    return parser


# ---- inspect ---------------------------------------------------------------------------------


def _inspect(args: argparse.Namespace) -> int:
    from .model import VideoCrafter

    if args.preset and args.checkpoint:
        raise UsageError("give a checkpoint file or --preset, not both")
    if args.preset:
        with torch.device("meta"):
            model = VideoCrafter(preset(args.preset))
        manifest = _manifest(model)
        if args.manifest:
            args.manifest.write_text(json.dumps(manifest, indent=1) + "\n")
            print(f"wrote {len(manifest['keys'])} keys of {args.preset} to {args.manifest}")
        report = _describe(model.config, args.preset, manifest["counts"], model, notes=())
    else:
        if args.checkpoint is None:
            raise UsageError("give a checkpoint file, or --preset NAME")
        if args.manifest:
            raise UsageError("--manifest is written for a --preset")
        from .checkpoint import inspect_checkpoint

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
    from .parameter_groups import group_totals

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


# ---- init ------------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from .checkpoint import save_checkpoint
    from .model import VideoCrafter
    from .random_weights import randomize_zero_initialized

    if args.out.suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors (got {args.out})")
    if not args.out.parent.is_dir():
        raise UsageError(f"{args.out.parent}: the output directory does not exist")
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


# ---- demo ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(args.out, preset=args.preset, seed=args.seed, base=args.base, from_scratch=args.from_scratch)
    print(f"done: {report} (and {report.parent}/stage1_vs_stage2.mp4, .gif, loss_curves.png, metrics.png)")
    return 0


def _study_coupling(args: argparse.Namespace) -> int:
    from .study import run_study

    report = run_study(args.out, preset=args.preset, seeds=tuple(args.seeds))
    print(f"done: {report} (and results.json and the charts beside it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
