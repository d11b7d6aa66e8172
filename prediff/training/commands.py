"""``prediff train {vae,denoiser,alignment,earthformer,distill} --config FILE [--key value ...]``.

Every configuration key is also an option: top-level keys by name (`--max_train_steps 4`), nested ones with
a dot (`--data.num_sequences 8`, `--model.base_units 32`); values are read as YAML. Options are never
abbreviated: an unknown or misspelt key fails before anything is written, naming the closest key. The same
command runs on one process or many: `accelerate launch -m prediff train denoiser --config FILE --vae DIR`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .config import CONFIG_CLASSES, DataConfig
from .config_loading import load_config, parse_override_args, parse_value

__all__ = ["register", "run_training"]

_HELP = {
    "vae": "the frame autoencoder (L1 + KL + PatchGAN loss)",
    "denoiser": "the latent denoiser; the result is a PreDiffPipeline folder (needs --vae DIR)",
    "alignment": "the knowledge-alignment network (needs --vae DIR)",
    "earthformer": "the deterministic Earthformer forecaster; the result is an EarthformerPipeline folder",
    "distill": "a 1-4 step student of a trained PreDiff pipeline (consistency distillation, --teacher DIR)",
}


class _TrainParser(argparse.ArgumentParser):
    """The parser of one `prediff train KIND`. Options are never abbreviated (`--max_train_step` must not
    silently become `--max_train_steps`), and arguments that no option matches are handed to the configuration
    as overrides (`args.unknown_overrides`), whose unknown-key error names the closest key; argparse alone
    would only say "unrecognized arguments"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_known_args(
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.unknown_overrides = extras
        return namespace, []


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command and its sub-commands to the ``prediff`` parser."""
    train = subparsers.add_parser(
        "train",
        help="train a component (vae, denoiser, alignment, earthformer, distill) with Accelerate",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    kinds = train.add_subparsers(dest="kind", required=True, parser_class=_TrainParser)
    for kind, cls in CONFIG_CLASSES.items():
        parser = kinds.add_parser(kind, help=_HELP[kind], argument_default=argparse.SUPPRESS)
        parser.add_argument("--config", default=None, help="YAML configuration file (default: the built-in recipe)")
        options = parser.add_argument_group("configuration overrides (values are YAML)")
        for f in dataclasses.fields(cls):
            if f.name in ("data", "model"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            options.add_argument(
                f"--{f.name}", dest=f.name, metavar="V", nargs="?", const="true", help=f"(default: {default})"
            )
        for f in dataclasses.fields(DataConfig):
            key = f"data.{f.name}"
            options.add_argument(
                f"--{key}", dest=key, metavar="V", nargs="?", const="true", help=f"(default: {f.default})"
            )
        parser.set_defaults(func=run_training, config=None)


def run_training(args: argparse.Namespace) -> int:
    """Build the configuration from `--config` and the overrides, train, and report where the result is."""
    from .guards import NonFiniteLossError
    from .registry import TRAINERS

    reserved = {"func", "config", "kind", "command", "unknown_overrides"}
    overrides = {k: parse_value(v, f"--{k}") for k, v in vars(args).items() if k not in reserved}
    # `model.*` keys (free constructor arguments, checked when the network is built) and misspelt keys.
    overrides.update(parse_override_args(args.unknown_overrides))
    config = load_config(args.kind, args.config, overrides)
    try:
        trainer = TRAINERS[args.kind](config)
        output = trainer.train()
    except NonFiniteLossError as error:
        print(f"prediff train {args.kind}: error: {error}", file=sys.stderr)
        return 1
    print(f"prediff train {args.kind}: the trained result is in {output}")
    return 0
