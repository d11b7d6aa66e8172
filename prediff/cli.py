"""The prediff command: data sets, training, the demo, forecasts from files and their evaluation.

Every sub-package that offers commands has a ``commands`` module with ``register(subparsers)``; this
file only assembles them, so each command lives next to the code it drives.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules whose ``register(subparsers)`` adds a command, in the order ``prediff --help`` lists them. Each one
#: imports only argparse-level code at module level, so ``prediff --help`` stays cheap.
_COMMAND_MODULES = (
    "prediff.data.commands",
    "prediff.training.commands",
    "prediff.demo",
    "prediff.pipelines.commands",
    "prediff.evaluation.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prediff", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"prediff {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
