"""``vc2 train`` and ``vc2 cache``: training from a config file (single process or ``accelerate launch``).

    vc2 train --config stage2.yaml [--resume auto|CHECKPOINT_DIR] [--set optim.lr=1e-5 ...]
    vc2 cache --config stage2.yaml [--set data.cache=DIR]

``--set SECTION.FIELD=VALUE`` overrides a config field (VALUE is read as YAML: 1e-5, true, [1, 4]).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from .usage import UsageError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Two commands: ``train`` and ``cache``."""
    train = commands.add_parser(
        "train", help="train a stage (full, partial, spa-dir, ..., LoRA variants) from a config file",
        description="Train from a YAML/TOML config (docs/training.md describes every field). Runs in one process, "
                    "or data-parallel under `accelerate launch` / `torchrun`.")
    train.add_argument("--config", type=Path, required=True, help="training config (.yaml, .yml or .toml)")
    train.add_argument("--resume", metavar="auto|DIR",
                       help="continue a run: 'auto' takes the latest complete checkpoint of run.output_dir")
    _add_set(train)
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs and messages only)")
    train.set_defaults(run=run_train)

    cache = commands.add_parser(
        "cache", help="encode a config's data once into a latent cache (data.cache) to train from",
        description="Encode every usable video clip and image of a training config with the model's VAE and text "
                    "encoder into data.cache; a run with that data.cache then trains without decoding media.")
    cache.add_argument("--config", type=Path, required=True)
    _add_set(cache)
    cache.add_argument("--device", default=None, help="where the VAE and text encoder run (default: cuda if available)")
    cache.add_argument("--no-progress", action="store_true")
    cache.set_defaults(run=run_cache)


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field (repeatable)")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    overrides: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise UsageError(f"--set {item!r}: expected SECTION.FIELD=VALUE (e.g. optim.lr=1e-5)")
        try:
            overrides.setdefault(section, {})[name] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UsageError(f"--set {item!r}: the value is not valid YAML ({error})") from None
    return overrides


def run_train(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..training.trainer import NonFiniteLoss, train

    config = load_config(args.config, parse_overrides(args.overrides))
    out = Path(config.run.output_dir)
    made_here = not out.exists()
    try:
        summary = train(config, resume=args.resume, show_progress=not args.no_progress)
    except NonFiniteLoss as error:
        print(f"vc2 train: stopped: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError):
        if made_here and not _trained_anything(out):  # refused for bad input (a checkpoint, the data)
            shutil.rmtree(out, ignore_errors=True)
        raise
    if not summary.main_process:
        return 3 if summary.parameters_identical is False else 0  # None: sharded (FSDP), not comparable
    per_step = summary.seconds / max(summary.steps, 1)
    print(f"vc2 train: {summary.steps} steps done ({summary.seconds:.1f} s this run, {per_step:.2f} s/step); "
          f"last loss {summary.last_loss:.4f}; checkpoint {summary.final_checkpoint}")
    print(f"vc2 train: data: {summary.skipped_items}")
    if summary.skipped_steps:
        print(f"vc2 train: {summary.skipped_steps} steps skipped for a non-finite loss")
    if summary.parameters_identical is False:
        print("vc2 train: warning: the trained parameters differ between processes", file=sys.stderr)
        return 3
    return 0


def _trained_anything(out: Path) -> bool:
    """Whether a run folder holds a logged step or a checkpoint (kept whatever stopped the run)."""
    from ..training import run_dir

    return (out / "metrics.jsonl").exists() or run_dir.latest_checkpoint(out) is not None


def run_cache(args: argparse.Namespace) -> int:
    import torch

    from ..training.config import load_config
    from ..training.data import SkipReport
    from ..training.latent_cache import build_cache
    from ..training.trainer import build_training_model, data_sets

    config = load_config(args.config, parse_overrides(args.overrides))
    if config.data.cache is None:
        raise UsageError("set data.cache (in the config or with --set data.cache=DIR) to say where the cache goes")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_training_model(config)
    datasets, index_skips = data_sets(config, model.config, kinds=("videos", "images"))
    if not datasets:
        raise UsageError("the config names no videos.index or images.index to cache")
    report = SkipReport()
    for skipped in (item for items in index_skips.values() for item in items):
        report.add(skipped)
    info = build_cache(model, datasets, config.data.cache, seed=config.run.seed, device=device,
                       show_progress=not args.no_progress, report=report)
    counts = ", ".join(f"{kind}: {entry['count']} items" for kind, entry in info["kinds"].items())
    print(f"vc2 cache: wrote {config.data.cache} ({counts}); {report.summary()}")
    return 0
