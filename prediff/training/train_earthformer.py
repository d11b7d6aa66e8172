"""`prediff train earthformer`: the deterministic Earthformer forecaster.

Each item is cut into `context_length` context frames and `target_length` target frames (in [0, 1]); the
network maps the context to the target directly; loss: MSE (official). The result is a pipeline folder,
`EarthformerPipeline.from_pretrained(output_dir)`, which keeps the data's value range and units (forecasts
in physical units); the network alone loads with `EarthformerModel.from_pretrained(output_dir,
subfolder="model")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..models.earthformer import EarthformerModel
from ..pipelines import EarthformerPipeline
from .config import EarthformerTrainingConfig
from .trainer import Trainer

__all__ = ["EarthformerTrainer", "train_earthformer"]


class EarthformerTrainer(Trainer):
    """Trains `EarthformerModel` (see the module docstring); `train()` runs it."""

    kind = "earthformer"
    config: EarthformerTrainingConfig

    def build(self) -> None:
        cfg = self.config
        d = cfg.data
        _, H, W, C = self.item_shape
        if d.target_length < 1:
            raise ValueError(f"data.target_length must be an integer >= 1, got {d.target_length}")
        cls = EarthformerModel
        derived = {"input_shape": (d.context_length, H, W, C), "target_shape": (d.target_length, H, W, C)}
        kwargs = self.check_model_kwargs(cls, cfg.model, derived)
        model = cls(**kwargs)
        self.configure_network(model)
        self.train_modules = {"earthformer": model}
        self.param_groups = {"earthformer": (list(model.parameters()), cfg.learning_rate)}

    def ema_model(self) -> torch.nn.Module:
        return self.unwrap("earthformer")

    def compute_losses(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        context, target = self.split(frames)
        prediction = self.train_modules["earthformer"](context).sample
        return {"earthformer": F.mse_loss(prediction.float(), target.float())}, {}

    def validation_losses(self, frames: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        context, target = self.split(frames)
        prediction = self.unwrap("earthformer")(context).sample.float()
        return {"mse": F.mse_loss(prediction, target.float()), "mae": (prediction - target).abs().mean()}

    def validation_forecasts(self, frames: torch.Tensor, step: int) -> dict[str, float] | None:
        if not self.plotting_available():
            return None
        context, target = self.split(frames.float())
        with self.autocast():
            prediction = self.unwrap("earthformer")(context).sample.float()
        self.save_validation_panel(
            "forecast",
            step,
            self.to_physical(context[0]).cpu(),
            title=f"validation forecast, step {step}",
            target=self.to_physical(target[0]).cpu(),
            ensemble=self.to_physical(prediction[:1]).cpu(),
        )
        return None

    def export(self, folder: Path) -> Any:
        pipe = EarthformerPipeline(
            self.unwrap("earthformer"),
            **self.pipeline_scaling(),
            training_data=self.describe_training(),
        )
        pipe.save_pretrained(folder)
        return pipe


def train_earthformer(config: EarthformerTrainingConfig, **kwargs: Any) -> Path:
    """Train the Earthformer described by `config`; returns the output folder, an `EarthformerPipeline` folder."""
    return EarthformerTrainer(config, **kwargs).train()
