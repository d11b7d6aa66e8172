"""`prediff train denoiser`: PreDiff's latent denoiser (Earthformer-UNet) on a frozen autoencoder.

Each item is cut into `context_length` context frames and `target_length` target frames; the autoencoder
encodes the context to its posterior mean and the target to a posterior sample (official). The target
latents are noised at a uniform random timestep of the official DDPM schedule and the network predicts the
noise; the loss is the epsilon MSE, by default weighted by a learned log-variance per timestep (official).
EMA of the weights is on by default and the exported network holds the averaged weights.

The result is a pipeline folder: `PreDiffPipeline.from_pretrained(output_dir)` (vae, unet, a fast scheduler
and, when `knowledge_model` is given, the alignment network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.alignment import KnowledgeAlignmentModel
from ..models.earthformer_unet import EarthformerUNetModel
from ..pipelines import PreDiffPipeline
from ..schedulers import SCHEDULER_PRESETS, prediff_scheduler, prediff_training_scheduler
from .config import DenoiserTrainingConfig
from .latent import LatentTrainer, load_pretrained_component, load_vae
from .losses import DiffusionLoss

__all__ = ["DenoiserTrainer", "train_denoiser"]


class _DenoiserForTraining(nn.Module):
    """The denoiser and its loss (with the learned log-variance) in one module, so distributed data parallel
    averages the log-variance gradients too."""

    def __init__(self, unet: EarthformerUNetModel, loss: DiffusionLoss) -> None:
        super().__init__()
        self.unet = unet
        self.loss = loss

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noise_pred = self.unet(noisy, timesteps, context).sample
        return self.loss(noise_pred, noise, timesteps)


class DenoiserTrainer(LatentTrainer):
    """Trains the Earthformer-UNet (see the module docstring); `train()` runs it."""

    kind = "denoiser"
    config: DenoiserTrainingConfig

    def build(self) -> None:
        cfg = self.config
        if cfg.validation_scheduler not in SCHEDULER_PRESETS:
            raise ValueError(
                f"validation_scheduler must be one of {sorted(SCHEDULER_PRESETS)}, got {cfg.validation_scheduler!r}"
            )
        h, w, c = self.load_frozen_vae()
        d = cfg.data
        condition_length = d.context_length + (d.target_length if self.extrapolator is not None else 0)
        derived = {"input_shape": (condition_length, h, w, c), "target_shape": (d.target_length, h, w, c)}
        kwargs = self.check_model_kwargs(EarthformerUNetModel, cfg.model, derived)
        unet = self.initial_network(EarthformerUNetModel, "unet")
        if unet is None:
            unet = EarthformerUNetModel(**kwargs)
        elif (tuple(unet.input_shape), tuple(unet.target_shape)) != (derived["input_shape"], derived["target_shape"]):
            raise ValueError(
                f"init_weights {cfg.init_weights!r} holds a denoiser of input_shape {tuple(unet.input_shape)} and "
                f"target_shape {tuple(unet.target_shape)}; the data and autoencoder need {derived['input_shape']} "
                f"and {derived['target_shape']}"
            )
        self.configure_network(unet)
        self.knowledge_model = None
        if cfg.knowledge_model is not None:
            self.knowledge_model = load_pretrained_component(
                KnowledgeAlignmentModel, cfg.knowledge_model, "knowledge_model"
            )
            if tuple(self.knowledge_model.input_shape) != derived["target_shape"]:
                raise ValueError(
                    f"knowledge_model {cfg.knowledge_model!r} takes latents of shape "
                    f"{tuple(self.knowledge_model.input_shape)}, but the target latents are "
                    f"{derived['target_shape']}"
                )
        self.noise_scheduler = prediff_training_scheduler()
        loss = DiffusionLoss(
            self.noise_scheduler.config.num_train_timesteps,
            learn_logvar=cfg.learn_logvar,
            logvar_init=cfg.logvar_init,
        )
        self.train_modules = {"denoiser": _DenoiserForTraining(unet, loss)}
        self.param_groups = {"denoiser": (list(unet.parameters()) + list(loss.parameters()), cfg.learning_rate)}

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        module = self.unwrap("denoiser")
        return {"unet": module.unet, "diffusion_loss": module.loss}

    def ema_model(self) -> torch.nn.Module:
        return self.unwrap("denoiser").unet

    def _losses(self, frames: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        context_latents, latents, _ = self.diffusion_latents(frames)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
        )
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        return module(noisy, timesteps, context_latents, noise)

    def compute_losses(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        loss, mse = self._losses(frames, self.train_modules["denoiser"])
        return {"denoiser": loss}, {"eps_mse": mse}

    def validation_losses(self, frames: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        loss, mse = self._losses(frames, self.unwrap("denoiser"))
        return {"loss": loss, "eps_mse": mse}

    def pipeline(self, unet: EarthformerUNetModel | None = None, export: bool = False) -> PreDiffPipeline:
        """A `PreDiffPipeline` around the network being trained (`export`: fresh float32 autoencoder)."""
        cfg = self.config
        vae = self.vae
        if export:
            vae = load_vae(cfg.vae)
            vae.register_to_config(scaling_factor=self.scaling_factor)
        return PreDiffPipeline(
            vae=vae,
            unet=unet if unet is not None else self.unwrap("denoiser").unet,
            scheduler=prediff_scheduler(cfg.validation_scheduler),
            knowledge_model=self.knowledge_model,
            extrapolator=self.extrapolator,
            **self.pipeline_scaling(),
            training_data=self.describe_training(),
            max_intensity_growth=cfg.max_intensity_growth,
            intensity_cap_radius_km=cfg.intensity_cap_radius_km,
        )

    def validation_forecasts(self, frames: torch.Tensor, step: int) -> dict[str, float] | None:
        cfg = self.config
        pipe = self.pipeline()
        pipe.set_progress_bar_config(disable=True)
        context, target = self.split(frames.float())
        generator = torch.Generator(self.device).manual_seed(cfg.seed)
        with self.autocast():
            forecast = pipe(
                self.to_physical(context),
                num_inference_steps=cfg.validation_inference_steps,
                num_ensemble_members=cfg.num_ensemble_members,
                generator=generator,
                output_type="pt",
            ).frames.float()
        target = self.to_physical(target)
        metrics = {
            "forecast_mae": (forecast.mean(1) - target).abs().mean().item(),
            "forecast_spread": forecast.std(1).mean().item() if forecast.shape[1] > 1 else 0.0,
        }
        if self.plotting_available():
            self.save_validation_panel(
                "forecast",
                step,
                self.to_physical(context[0]).cpu(),
                title=f"validation forecast, step {step}",
                target=target[0].cpu(),
                ensemble=forecast[0].cpu(),
            )
        return metrics

    def export(self, folder: Path) -> Any:
        pipe = self.pipeline(export=True)
        pipe.save_pretrained(folder)
        return pipe


def train_denoiser(config: DenoiserTrainingConfig, **kwargs: Any) -> Path:
    """Train the denoiser described by `config`; returns the output folder, a `PreDiffPipeline` folder."""
    return DenoiserTrainer(config, **kwargs).train()
