"""The trainer class of each `prediff train` kind.

A module of its own, not the package ``__init__``, so that naming a kind's trainer imports the trainers (and
torch with them) only when one is used.
"""

from __future__ import annotations

from .train_alignment import AlignmentTrainer
from .train_denoiser import DenoiserTrainer
from .train_distill import DistillTrainer
from .train_earthformer import EarthformerTrainer
from .train_vae import VAETrainer
from .trainer import Trainer

__all__ = ["TRAINERS"]

TRAINERS: dict[str, type[Trainer]] = {
    "vae": VAETrainer,
    "denoiser": DenoiserTrainer,
    "alignment": AlignmentTrainer,
    "earthformer": EarthformerTrainer,
    "distill": DistillTrainer,
}
