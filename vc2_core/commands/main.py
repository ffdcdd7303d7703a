"""``vc2``: the parser of every command, and the dispatch to the one asked for (exit status 0 done,
1 bad input; ``vc2 train`` adds 2 and 3, see :mod:`vc2_core.commands.train`)."""

from __future__ import annotations

import argparse
import sys

from . import demo, init, inspect, lora, sample, study, train


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # UsageError, CheckpointError, ConfigError; files that cannot be written
        print(f"vc2 {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """The message on one line: a list of problems (``head:\\n  - a\\n  - b``) becomes ``head: a; b``."""
    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    head, rest = lines[0], lines[1:]
    return head + (" " + "; ".join(rest) if rest else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vc2", description="VideoCrafter2 / VideoCrafter1 text-to-video.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (inspect, init, sample, train, lora, demo, study):  # the order of `vc2 --help`
        command.add_parser(commands)
    return parser
