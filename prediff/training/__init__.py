"""Training every component with Accelerate: configurations, loops, losses and resumable checkpoints.

Command line: ``prediff train {vae,denoiser,alignment,earthformer,distill} --config FILE [--key value ...]``, also
under ``accelerate launch -m prediff train ...``. From Python:

```py
>>> from prediff.training import DenoiserTrainer, load_config
>>> config = load_config("denoiser", "examples/configs/synthetic-tiny/denoiser.yaml", {"vae": "runs/vae"})
>>> DenoiserTrainer(config).train()  # a PreDiffPipeline folder in config.output_dir
```

PyYAML is needed to read configuration files and tensorboard to log: ``pip install "prediff[train]"``.
The names below are imported from their submodules on first use (see [`~prediff.utils.lazy`]): the
configurations and the `prediff train` command do not load torch.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpointing import find_checkpoint, list_checkpoints
    from .config import (
        CONFIG_CLASSES,
        AlignmentTrainingConfig,
        DataConfig,
        DenoiserTrainingConfig,
        DistillTrainingConfig,
        EarthformerTrainingConfig,
        TrainingConfig,
        VAETrainingConfig,
    )
    from .config_loading import load_config, parse_override_args
    from .datasets import build_datasets
    from .guards import NonFiniteGradientError, NonFiniteLossError
    from .latent import load_vae
    from .losses import DiffusionLoss, PatchGANDiscriminator, hinge_discriminator_loss, vae_generator_loss
    from .registry import TRAINERS
    from .train_alignment import AlignmentTrainer, frame_statistic, train_alignment
    from .train_denoiser import DenoiserTrainer, train_denoiser
    from .train_distill import DistillTrainer, train_distill
    from .train_earthformer import EarthformerTrainer, train_earthformer
    from .train_vae import VAETrainer, train_vae
    from .trainer import Trainer
    from .utils import ShardedBatchSampler

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".checkpointing": ["find_checkpoint", "list_checkpoints"],
        ".config": [
            "CONFIG_CLASSES",
            "AlignmentTrainingConfig",
            "DataConfig",
            "DenoiserTrainingConfig",
            "DistillTrainingConfig",
            "EarthformerTrainingConfig",
            "TrainingConfig",
            "VAETrainingConfig",
        ],
        ".config_loading": ["load_config", "parse_override_args"],
        ".datasets": ["build_datasets", "split_indices"],
        ".guards": ["NonFiniteGradientError", "NonFiniteLossError"],
        ".latent": ["load_vae"],
        ".losses": ["DiffusionLoss", "PatchGANDiscriminator", "hinge_discriminator_loss", "vae_generator_loss"],
        ".registry": ["TRAINERS"],
        ".train_alignment": ["AlignmentTrainer", "frame_statistic", "train_alignment"],
        ".train_denoiser": ["DenoiserTrainer", "train_denoiser"],
        ".train_distill": ["DistillTrainer", "train_distill"],
        ".train_earthformer": ["EarthformerTrainer", "train_earthformer"],
        ".train_vae": ["VAETrainer", "train_vae"],
        ".trainer": ["Trainer"],
        ".utils": ["ShardedBatchSampler"],
    },
)

__all__ = [
    "CONFIG_CLASSES",
    "TRAINERS",
    "AlignmentTrainer",
    "AlignmentTrainingConfig",
    "DataConfig",
    "DenoiserTrainer",
    "DenoiserTrainingConfig",
    "DiffusionLoss",
    "DistillTrainer",
    "DistillTrainingConfig",
    "EarthformerTrainer",
    "EarthformerTrainingConfig",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "PatchGANDiscriminator",
    "ShardedBatchSampler",
    "Trainer",
    "TrainingConfig",
    "VAETrainer",
    "VAETrainingConfig",
    "build_datasets",
    "find_checkpoint",
    "frame_statistic",
    "hinge_discriminator_loss",
    "list_checkpoints",
    "load_config",
    "load_vae",
    "parse_override_args",
    "split_indices",
    "train_alignment",
    "train_denoiser",
    "train_distill",
    "train_earthformer",
    "train_vae",
    "vae_generator_loss",
]
