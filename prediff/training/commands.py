"""``prediff train {vae,denoiser,alignment,earthformer} --config FILE [--key value ...]``.

Every configuration key is also an option: top-level keys by name (`--max_train_steps 4`), nested ones with
a dot (`--data.num_sequences 8`, `--model.base_units 32`); values are read as YAML. The same command runs on
one process or many: `accelerate launch -m prediff train denoiser --config FILE --vae DIR`.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from typing import Any

from .config import CONFIG_CLASSES, DataConfig, load_config, parse_value

__all__ = ["register", "run_training"]

_HELP = {
    "vae": "the frame autoencoder (L1 + KL + PatchGAN loss)",
    "denoiser": "the latent denoiser; the result is a PreDiffPipeline folder (needs --vae DIR)",
    "alignment": "the knowledge-alignment network (needs --vae DIR)",
    "earthformer": "the deterministic Earthformer forecaster",
}


def _model_keys(kind: str) -> list[str]:
    """Constructor arguments of the network trained by `kind` (the `model.*` keys), plus `preset`."""
    try:
        if kind == "vae":
            from diffusers import AutoencoderKL

            cls: Any = AutoencoderKL
        elif kind == "denoiser":
            from ..models.earthformer_unet import EarthformerUNetModel as cls
        elif kind == "alignment":
            from ..models.alignment import KnowledgeAlignmentModel as cls
        else:
            from .train_earthformer import _earthformer_class

            cls = _earthformer_class()
    except ImportError:
        return ["preset"]
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    return ["preset", *params]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command and its sub-commands to the ``prediff`` parser."""
    train = subparsers.add_parser(
        "train",
        help="train a component (vae, denoiser, alignment, earthformer) with Accelerate",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    kinds = train.add_subparsers(dest="kind", required=True)
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
        for name in _model_keys(kind):
            key = f"model.{name}"
            options.add_argument(f"--{key}", dest=key, metavar="V", nargs="?", const="true", help=argparse.SUPPRESS)
        parser.set_defaults(func=run_training, config=None)


def run_training(args: argparse.Namespace) -> int:
    """Build the configuration from `--config` and the overrides, train, and report where the result is."""
    from .train_alignment import AlignmentTrainer
    from .train_denoiser import DenoiserTrainer
    from .train_earthformer import EarthformerTrainer
    from .train_vae import VAETrainer
    from .utils import NonFiniteLossError

    trainers = {
        "vae": VAETrainer,
        "denoiser": DenoiserTrainer,
        "alignment": AlignmentTrainer,
        "earthformer": EarthformerTrainer,
    }
    reserved = {"func", "config", "kind", "command"}
    overrides = {k: parse_value(v) for k, v in vars(args).items() if k not in reserved}
    config = load_config(args.kind, args.config, overrides)
    try:
        trainer = trainers[args.kind](config)
        output = trainer.train()
    except NonFiniteLossError as error:
        print(f"prediff train {args.kind}: error: {error}", file=sys.stderr)
        return 1
    print(f"prediff train {args.kind}: the trained result is in {output}")
    return 0
