"""`prediff train vae`: the frame autoencoder (Diffusers' `AutoencoderKL`) with PreDiff's loss.

Every frame of every item is a sample. Loss: L1 reconstruction + `kl_weight` * KL + (from `disc_start`) a
PatchGAN hinge adversarial term with the adaptive weight, the discriminator trained alongside with its own
optimizer. The result is the autoencoder folder (`AutoencoderKL.from_pretrained(output_dir)`), the input of
`prediff train denoiser --vae DIR`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder
from torch import nn

from ..models.autoencoder import AUTOENCODER_PRESETS, autoencoder_from_preset, latent_frame_shape
from .config import VAETrainingConfig
from .losses import PatchGANDiscriminator, hinge_discriminator_loss, vae_generator_loss
from .trainer import Trainer

__all__ = ["VAETrainer", "train_vae"]


class _AutoencoderForTraining(nn.Module):
    """Encode, sample the posterior, decode: one forward, so distributed data parallel sees the whole VAE."""

    def __init__(self, vae: AutoencoderKL | AutoencoderKLTemporalDecoder) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, frames: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(frames).latent_dist
        z = posterior.sample()
        if isinstance(self.vae, AutoencoderKLTemporalDecoder):
            reconstruction = self.vae.decode(z, num_frames=num_frames).sample
        else:
            reconstruction = self.vae.decode(z).sample
        return reconstruction, posterior.mean, posterior.logvar


class VAETrainer(Trainer):
    """Trains the autoencoder (see the module docstring); `train()` runs it."""

    kind = "vae"
    config: VAETrainingConfig

    def build(self) -> None:
        cfg = self.config
        kwargs = dict(cfg.model)
        preset = kwargs.pop("preset", "prediff-sevirlr")
        if preset not in AUTOENCODER_PRESETS:
            raise ValueError(f"unknown model.preset {preset!r}; expected one of {sorted(AUTOENCODER_PRESETS)}")
        cls = AutoencoderKLTemporalDecoder if cfg.temporal_decoder else AutoencoderKL
        self.check_model_kwargs(cls, kwargs, {})
        T, H, W, C = self.item_shape
        if "in_channels" not in kwargs and C != AUTOENCODER_PRESETS[preset]["in_channels"]:
            kwargs.update(in_channels=C, out_channels=C)
        vae = self.initial_network(cls, "vae")
        if vae is None:
            try:
                vae = autoencoder_from_preset(preset, temporal_decoder=cfg.temporal_decoder, **kwargs)
            except (TypeError, KeyError, IndexError, AttributeError) as error:
                # Diffusers does not check the types of its arguments: a mapping or text where it wants numbers
                # fails somewhere inside the constructor.
                raise ValueError(
                    f"the model section {cfg.model} does not build {cls.__name__}: {type(error).__name__}: {error}"
                ) from None
        try:
            latent_frame_shape(vae, (H, W, C))
        except ValueError as error:
            raise ValueError(f"the autoencoder does not fit the data ({self.describe_data()}): {error}") from None
        if cfg.gradient_checkpointing:
            vae.enable_gradient_checkpointing()
        self.vae = vae.train()
        self.discriminator = PatchGANDiscriminator(
            in_channels=C, base_channels=cfg.disc_channels, num_layers=cfg.disc_num_layers
        )
        if min(H, W) < 2 ** (cfg.disc_num_layers + 1):
            raise ValueError(
                f"disc_num_layers={cfg.disc_num_layers} halves {H}x{W} frames too often; use fewer layers"
            )
        self.train_modules = {"vae": _AutoencoderForTraining(vae), "discriminator": self.discriminator}
        disc_lr = cfg.disc_learning_rate if cfg.disc_learning_rate is not None else cfg.learning_rate
        self.param_groups = {
            "vae": (list(vae.parameters()), cfg.learning_rate),
            "discriminator": (list(self.discriminator.parameters()), disc_lr),
        }

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.unwrap("vae").vae, "discriminator": self.unwrap("discriminator")}

    def ema_model(self) -> torch.nn.Module:
        return self.unwrap("vae").vae

    def samples_per_item(self) -> int:
        return self.config.data.window_length

    def _disc_factor(self) -> float:
        # Adversarial terms are on from optimizer step `disc_start` (global_step counts completed steps).
        return self.config.disc_factor if self.global_step >= self.config.disc_start else 0.0

    def _forward(self, frames: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, ...]:
        B, T, H, W, C = frames.shape
        flat = frames.reshape(B * T, H, W, C).permute(0, 3, 1, 2)
        reconstruction, mean, logvar = module(flat, T)
        return flat, reconstruction, mean, logvar

    def compute_losses(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        cfg = self.config
        flat, reconstruction, mean, logvar = self._forward(frames, self.train_modules["vae"])
        disc_factor = self._disc_factor()
        losses: dict[str, torch.Tensor] = {}
        if disc_factor > 0:
            # The generator's adversarial term goes through the bare discriminator with frozen weights, so its
            # gradient reaches only the autoencoder; the discriminator is trained on detached reconstructions.
            disc = self.unwrap("discriminator")
            disc.requires_grad_(False)
            try:
                logits_fake = disc(reconstruction)
            finally:
                disc.requires_grad_(True)
            last_layer = self.unwrap("vae").vae.decoder.conv_out.weight
            g_loss, logs = vae_generator_loss(
                flat,
                reconstruction,
                mean,
                logvar,
                cfg.kl_weight,
                logits_fake,
                last_layer,
                cfg.disc_weight,
                disc_factor,
            )
            both = self.train_modules["discriminator"](torch.cat([flat, reconstruction.detach()]))
            logits_real, logits_fake_d = both.chunk(2)
            d_loss = disc_factor * hinge_discriminator_loss(logits_real, logits_fake_d)
            losses["discriminator"] = d_loss
            logs["disc_loss"] = d_loss.detach()
        else:
            g_loss, logs = vae_generator_loss(flat, reconstruction, mean, logvar, cfg.kl_weight)
        losses["vae"] = g_loss
        return losses, logs

    def validation_losses(self, frames: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        flat, reconstruction, mean, logvar = self._forward(frames, self.unwrap("vae"))
        _, logs = vae_generator_loss(flat, reconstruction, mean, logvar, self.config.kl_weight)
        logs["mae"] = (flat - reconstruction).abs().mean()
        return logs

    def validation_forecasts(self, frames: torch.Tensor, step: int) -> dict[str, float] | None:
        if not self.plotting_available():
            return None
        module = self.unwrap("vae")
        B, T, H, W, C = frames.shape
        with self.autocast():
            _, reconstruction, _, _ = self._forward(frames, module)
        # At most 8 frames side by side.
        originals = self.to_physical(frames.reshape(B * T, H, W, C).float().cpu())[:8]
        recon = self.to_physical(reconstruction.permute(0, 2, 3, 1).float().cpu())[:8]
        self.save_validation_panel(
            "reconstruction",
            step,
            originals,
            title=f"autoencoder reconstructions, step {step} (top: input, bottom: reconstruction)",
            ensemble=recon[None],
            show_mean=False,
        )
        return None

    def export(self, folder: Path) -> Any:
        vae = self.unwrap("vae").vae
        vae.save_pretrained(folder, safe_serialization=True)
        return vae


def train_vae(config: VAETrainingConfig, **kwargs: Any) -> Path:
    """Train the autoencoder described by `config`; returns the output folder (see [`VAETrainer`])."""
    return VAETrainer(config, **kwargs).train()
