"""The prediff command: data sets, training, the demo, forecasts from files and their evaluation.

Every sub-package that offers commands has a ``commands`` module with ``register(subparsers)``; this
file only assembles them, so each command lives next to the code it drives.

Whatever a user can get wrong (a missing or corrupted file, a size that does not fit in memory, a pipeline
whose parts do not match) ends in one line on stderr and exit status 2; ``--traceback`` or the environment
variable ``PREDIFF_TRACEBACK=1`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

#: Modules whose ``register(subparsers)`` adds a command, in the order ``prediff --help`` lists them. None of
#: them imports torch, Diffusers or Accelerate at module level (the packages above them import their names
#: lazily, see ``prediff.utils.lazy``): the commands import them when they run, so ``prediff --help`` stays
#: cheap. tests/test_imports.py checks it.
_COMMAND_MODULES = (
    "prediff.data.commands",
    "prediff.training.commands",
    "prediff.demo",
    "prediff.pipelines.commands",
    "prediff.evaluation.commands",
    "prediff.app.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prediff", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="print the traceback of an error, not only its one-line message (also: PREDIFF_TRACEBACK=1)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Taken out of the namespace: commands hand their options on (`train` turns them into configuration keys).
    show_traceback = vars(args).pop("traceback") or os.environ.get("PREDIFF_TRACEBACK", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except Exception as error:
        if show_traceback:
            traceback.print_exc()
        print(f"prediff {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Under `accelerate launch`, let the processes finish together and close their process group, whether the
    command succeeded or failed (a process that finished waits here for one still writing or reporting its
    error, rather than for ever). A process that exits while another still works (the main one writing what was
    gathered) otherwise tears gloo's threads down under an open connection, and now and then aborts
    ("terminate called without an active exception")."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


def _one_line(error: Exception) -> str:
    """The error's message on one line, led by its type where the message alone would not say what happened
    (a `MemoryError` has none, a `KeyError` only the key)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = " ".join(lines)
    if isinstance(error, ValueError | OSError) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
