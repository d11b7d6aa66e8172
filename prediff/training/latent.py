"""What the latent-space trainers (denoiser, alignment) share: loading the frozen autoencoder, the optional
motion extrapolation, the latent scaling, and encoding batches into the denoiser's condition (posterior mean)
and diffusion target (posterior sample)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..models.autoencoder import AUTOENCODER_CLASSES, Autoencoder, encode_sequence, latent_frame_shape
from ..models.extrapolation import MotionExtrapolator
from .trainer import Trainer

__all__ = ["DiffusionLatents", "LatentTrainer", "load_pretrained_component", "load_vae"]

_VAE_CLASSES = {cls.__name__: cls for cls in AUTOENCODER_CLASSES}


def _component_folder(path: str | os.PathLike, subfolder: str, what: str) -> Path:
    folder = Path(path)
    if (folder / "config.json").is_file():
        return folder
    if (folder / subfolder / "config.json").is_file():
        return folder / subfolder
    raise FileNotFoundError(
        f"{what} folder {str(folder)!r} holds no config.json (nor {subfolder}/config.json); pass the "
        f"output_dir of the training run or a pipeline folder"
    )


def load_vae(path: str | os.PathLike) -> Autoencoder:
    """The autoencoder saved in `path` (a `prediff train vae` output, or a pipeline folder with `vae/`),
    frozen, in evaluation mode. Only safetensors weights are read."""
    folder = _component_folder(path, "vae", "vae")
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    if name not in _VAE_CLASSES:
        raise ValueError(f"{folder} holds a {name!r}, expected one of {sorted(_VAE_CLASSES)}")
    vae = _VAE_CLASSES[name].from_pretrained(folder, use_safetensors=True)
    vae.requires_grad_(False)
    return vae.eval()


def load_pretrained_component(cls: Any, path: str | os.PathLike, subfolder: str) -> Any:
    """A prediff network saved in `path` or `path/subfolder`, safetensors only, in evaluation mode."""
    folder = _component_folder(path, subfolder, subfolder)
    model = cls.from_pretrained(folder, use_safetensors=True)
    model.requires_grad_(False)
    return model.eval()


class DiffusionLatents(NamedTuple):
    """One batch in the denoiser's terms, all scaled by the autoencoder's `scaling_factor`.

    Args:
        condition: `(B, T_cond, h, w, c)` the encoded context, followed by the encoded extrapolation when the
            trainer extrapolates (`T_cond = T_in + T_out`), else `T_cond = T_in`.
        target: `(B, T_out, h, w, c)` what the diffusion models: the target latents minus `offset`.
        offset: `(B, T_out, h, w, c)` the encoded extrapolation, or zeros.
    """

    condition: torch.Tensor
    target: torch.Tensor
    offset: torch.Tensor


class LatentTrainer(Trainer):
    """A trainer whose network works on latents of a frozen autoencoder (`config.vae`), optionally with the
    motion extrapolation of `config.extrapolation`."""

    def load_frozen_vae(self) -> tuple[int, int, int]:
        """Load the autoencoder and the extrapolator, set the latent scaling; returns the `(h, w, c)` latent of
        one frame, checked against the data."""
        cfg = self.config
        self.vae = load_vae(cfg.vae)
        _, H, W, C = self.item_shape
        try:
            latent_shape = latent_frame_shape(self.vae, (H, W, C))
        except ValueError as error:
            raise ValueError(f"the vae {cfg.vae!r} does not fit the data ({self.describe_data()}): {error}") from None
        self.extrapolator = None
        if cfg.extrapolation is not None:
            try:
                self.extrapolator = MotionExtrapolator(**cfg.extrapolation)
            except (TypeError, ValueError) as error:
                raise ValueError(f"extrapolation: {error}") from None
        if cfg.latent_scaling == "std":
            self.vae.register_to_config(scaling_factor=self.estimate_scaling_factor())
        return latent_shape

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @torch.no_grad()
    def estimate_scaling_factor(self) -> float:
        """One over the standard deviation of the unscaled diffusion targets (posterior means) of the first
        `latent_scaling_items` training items, without augmentation: the same on every process and resume."""
        self.vae.register_to_config(scaling_factor=1.0)
        count = min(self.config.latent_scaling_items, len(self.train_dataset))
        batch = self.config.train_batch_size
        targets = []
        for start in range(0, count, batch):
            frames = torch.stack([self.train_dataset[i]["frames"] for i in range(start, min(start + batch, count))])
            targets.append(self.diffusion_latents(frames.float(), sample_target=False).target)
        std = float(torch.cat(targets).std())
        if not std > 0:
            raise ValueError("latent_scaling: std needs training targets that vary; the first items are constant")
        return 1.0 / std

    def move_frozen_to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.vae.to(device=device)
        if dtype != self.vae.dtype:
            self.vae.to(dtype=dtype)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, sample: bool) -> torch.Tensor:
        """Frozen-VAE latents in float32, scaled by `scaling_factor`: the posterior mean (context) or a posterior
        sample (target)."""
        return encode_sequence(self.vae, frames, sample_posterior=sample).float() * self.scaling_factor

    @torch.no_grad()
    def diffusion_latents(self, frames: torch.Tensor, sample_target: bool = True) -> DiffusionLatents:
        """Frames `(B, T, H, W, C)` in [0, 1] -> the denoiser's condition, diffusion target and offset."""
        context, target = self.split(frames)
        condition = self.encode(context, sample=False)
        target_latents = self.encode(target, sample=sample_target)
        if self.extrapolator is None:
            return DiffusionLatents(condition, target_latents, torch.zeros_like(target_latents))
        advected = self.extrapolator(context.float(), target.shape[1]).to(context.dtype)
        offset = self.encode(advected, sample=False)
        return DiffusionLatents(torch.cat([condition, offset], dim=1), target_latents - offset, offset)

    def forecast_offset(self, condition: torch.Tensor) -> torch.Tensor:
        """The `offset` `(B, T_out, h, w, c)` of `diffusion_latents` read back from its `condition` `(B, T_cond, h,
        w, c)`: the encoded extrapolation (its last `T_out` frames), or zeros without an extrapolator."""
        T_out = self.config.data.target_length
        if self.extrapolator is None:
            return condition.new_zeros((condition.shape[0], T_out, *condition.shape[2:]))
        return condition[:, -T_out:]
