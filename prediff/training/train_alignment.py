"""`prediff train alignment`: the knowledge-alignment network U_phi of PreDiff.

The target frames are encoded by the frozen autoencoder (posterior sample), noised at a uniform random
timestep of the official DDPM schedule, and the network learns from `(z_t, t)` alone the statistic of the
clean pixel-space target: for `statistic: avg_intensity` the mean over (H, W, C) of every target frame, in
[0, 1] units, shape `(B, T_out, 1)`. Loss: MSE. The result is the network's folder
(`KnowledgeAlignmentModel.from_pretrained(output_dir)`), which `prediff train denoiser --knowledge_model DIR`
puts into the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..models.alignment import KnowledgeAlignmentModel
from ..schedulers import prediff_training_scheduler
from .config import AlignmentTrainingConfig
from .latent import LatentTrainer

__all__ = ["AlignmentTrainer", "frame_statistic", "train_alignment"]


def frame_statistic(target: torch.Tensor, statistic: str = "avg_intensity") -> torch.Tensor:
    """The statistic the alignment network predicts: `(B, T, H, W, C)` -> `(B, T, 1)` (per-frame mean)."""
    if statistic != "avg_intensity":
        raise ValueError(f"statistic must be 'avg_intensity', got {statistic!r}")
    return target.float().mean(dim=(2, 3, 4))[..., None]


class AlignmentTrainer(LatentTrainer):
    """Trains the knowledge-alignment network (see the module docstring); `train()` runs it."""

    kind = "alignment"
    config: AlignmentTrainingConfig

    def build(self) -> None:
        cfg = self.config
        h, w, c = self.load_frozen_vae()
        t_out = cfg.data.target_length
        derived = {"input_shape": (t_out, h, w, c), "out_channels": 1}
        kwargs = self.check_model_kwargs(KnowledgeAlignmentModel, cfg.model, derived)
        if kwargs.get("out_len") not in (None, t_out):
            raise ValueError(
                f"model.out_len = {kwargs['out_len']} does not fit the data: the statistic has one value per "
                f"target frame (data.target_length={t_out})"
            )
        model = KnowledgeAlignmentModel(**kwargs)
        self.configure_network(model)
        self.noise_scheduler = prediff_training_scheduler()
        self.train_modules = {"alignment": model}
        self.param_groups = {"alignment": (list(model.parameters()), cfg.learning_rate)}

    def ema_model(self) -> torch.nn.Module:
        return self.unwrap("alignment")

    def _loss(self, frames: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        _, target = self.split(frames)
        _, latents, offset = self.diffusion_latents(frames)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
        )
        # The network sees what the pipeline's controls see: the noisy diffusion latents plus their offset.
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps) + offset
        prediction = model(noisy, timesteps).sample
        return F.mse_loss(prediction.float(), frame_statistic(target, self.config.statistic))

    def compute_losses(self, frames: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return {"alignment": self._loss(frames, self.train_modules["alignment"])}, {}

    def validation_losses(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mse": self._loss(frames, self.unwrap("alignment"))}

    def export(self, folder: Path) -> Any:
        model = self.unwrap("alignment")
        model.save_pretrained(folder, safe_serialization=True)
        return model


def train_alignment(config: AlignmentTrainingConfig, **kwargs: Any) -> Path:
    """Train the alignment network described by `config`; returns the output folder."""
    return AlignmentTrainer(config, **kwargs).train()
