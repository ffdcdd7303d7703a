"""``vc2 study coupling``: the paper's spatial-temporal coupling analysis at toy scale
(:mod:`vc2_core.experiments.study`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .usage import UsageError, at_least, seed


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    coupling.add_argument("--seeds", type=seed, nargs="+", default=[0, 1, 2],
                          help="training seeds, at least two (default 0 1 2)")
    coupling.add_argument("--out", default="runs/study-coupling", help="output folder (default runs/study-coupling)")
    coupling.add_argument("--jobs", type=at_least(1), default=1, metavar="N",
                          help="seeds trained side by side, each in a process of its own with an equal share of "
                               "the CPU threads (default 1: one after another). On a 2-core CPU, --jobs 3 trains "
                               "about 1.7x faster: the toy UNet's steps are too small to keep two threads busy")
    coupling.set_defaults(run=run_coupling)


def run_coupling(args: argparse.Namespace) -> int:
    from ..experiments.study import run_study

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder (it is created if missing)")
    report = run_study(args.out, preset=args.preset, seeds=tuple(args.seeds), jobs=args.jobs)
    print(f"done: {report} (and results.json and the charts beside it)")
    return 0
