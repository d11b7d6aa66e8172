"""What the latent-space trainers (denoiser, alignment) share: loading the frozen autoencoder and encoding
batches into context (posterior mean) and target (posterior sample) latents."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

from ..models.autoencoder import encode_sequence, latent_frame_shape
from .trainer import Trainer

__all__ = ["LatentTrainer", "load_pretrained_component", "load_vae"]

_VAE_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderKLTemporalDecoder": AutoencoderKLTemporalDecoder}


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


def load_vae(path: str | os.PathLike) -> AutoencoderKL | AutoencoderKLTemporalDecoder:
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


class LatentTrainer(Trainer):
    """A trainer whose network works on latents of a frozen autoencoder (`config.vae`)."""

    def load_frozen_vae(self) -> tuple[int, int, int]:
        """Load the autoencoder; returns the `(h, w, c)` latent of one frame, checked against the data."""
        self.vae = load_vae(self.config.vae)
        _, H, W, C = self.item_shape
        try:
            return latent_frame_shape(self.vae, (H, W, C))
        except ValueError as error:
            raise ValueError(
                f"the vae {self.config.vae!r} does not fit the data ({self.describe_data()}): {error}"
            ) from None

    def move_frozen_to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.vae.to(device=device)
        if dtype != self.vae.dtype:
            self.vae.to(dtype=dtype)

    def split(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, T, H, W, C)` -> context `(B, T_in, ...)` and target `(B, T_out, ...)` frames."""
        t_in, t_out = self.config.data.context_length, self.config.data.target_length
        return frames[:, :t_in], frames[:, t_in : t_in + t_out]

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, sample: bool) -> torch.Tensor:
        """Frozen-VAE latents in float32: the posterior mean (context) or a posterior sample (target)."""
        return encode_sequence(self.vae, frames, sample_posterior=sample).float()
