"""``vc2 demo``: VideoCrafter2's whole recipe on the embedded synthetic world (:mod:`vc2_core.experiments.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .usage import UsageError, seed


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    demo.add_argument("--seed", type=seed, default=0, help="seed of the data and the training")
    demo.set_defaults(run=run)


def check_base(path: Path) -> None:
    """``--base``: a readable VideoCrafter checkpoint of the demo's world model (checked before anything is written)."""
    from ..checkpoint import inspect_checkpoint
    from ..experiments.runs import world_model_config

    _, info = inspect_checkpoint(path)
    expected = world_model_config().name
    if info.config.name != expected:
        raise UsageError(f"--base {path} is a {info.config.name} model; the demo's base is a {expected} model "
                         "(a file written by vc2 demo --from-scratch)")


def run(args: argparse.Namespace) -> int:
    from ..experiments.demo import run_demo

    if args.base is not None and not args.from_scratch:
        check_base(args.base)
    report = run_demo(args.out, preset=args.preset, seed=args.seed, base=args.base, from_scratch=args.from_scratch)
    print(f"done: {report} (and {report.parent}/stage1_vs_stage2.mp4, .gif, loss_curves.png, metrics.png)")
    return 0
