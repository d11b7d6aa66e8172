"""`prediff train alignment`: the knowledge-alignment network U_phi of PreDiff.

The target frames are encoded by the frozen autoencoder (posterior sample), noised at a uniform random
timestep of the official DDPM schedule, and the network learns from `(z_t, t)` alone the statistic of the
clean target: for `statistic: avg_intensity` the mean over (H, W, C) of every target frame, in [0, 1] units
(linear in physical units, mm/h with a rain-rate value transform),
for `statistic: energy` every target frame's energy carried by the items (N-body), shape `(B, T_out, 1)`. Loss:
MSE. The result is the network's folder (`KnowledgeAlignmentModel.from_pretrained(output_dir)`), which `prediff
train denoiser --knowledge_model DIR` puts into the pipeline.

Optionally (`intensity_gain`, `clean_fraction`, `labels`, `robust_step`, `gradient_weight`; see
[`AlignmentTrainingConfig`]) the sequences are brightened or dimmed, a share of the rows is trained at timestep 0,
the labels are taken from the autoencoder's decoding, the clean rows are also moved along the network's own
input gradient and labelled by decoding (the places a learned control's Gauss-Newton steps go), and the
network's input gradient on them is pulled toward the gradient of the decoded statistic (the direction the
exact, analytic control steers along).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..knowledge import AnticipatedIntensityControl
from ..models.alignment import KnowledgeAlignmentModel
from ..models.autoencoder import decode_sequence
from ..pipelines import PreDiffPipeline
from ..pipelines.loading import load_forecast_pipeline
from ..schedulers import prediff_training_scheduler
from ..utils.units import to_intensity_unit
from .config import AlignmentTrainingConfig
from .latent import LatentTrainer

__all__ = ["AlignmentTrainer", "frame_statistic", "train_alignment"]


def frame_statistic(target: torch.Tensor, statistic: str = "avg_intensity") -> torch.Tensor:
    """A statistic of frames that an alignment network predicts: `(B, T, H, W, C)` -> `(B, T, 1)` (per-frame
    mean)."""
    if statistic != "avg_intensity":
        raise ValueError(
            f"statistic {statistic!r} is not computed from frames; the frame statistic is 'avg_intensity'"
        )
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
        model = self.initial_network(KnowledgeAlignmentModel, "knowledge_model")
        if model is None:
            model = KnowledgeAlignmentModel(**kwargs)
        elif (tuple(model.input_shape), model.config.out_channels) != (derived["input_shape"], 1):
            raise ValueError(
                f"init_weights {cfg.init_weights!r} holds an alignment network of input_shape "
                f"{tuple(model.input_shape)} and {model.config.out_channels} outputs; the data and autoencoder "
                f"need {derived['input_shape']} and 1"
            )
        self.configure_network(model)
        self.steered = None if cfg.steered_pipeline is None else self.load_steered_pipeline(derived["input_shape"])
        self.noise_scheduler = prediff_training_scheduler()
        self.train_modules = {"alignment": model}
        self.param_groups = {"alignment": (list(model.parameters()), cfg.learning_rate)}

    def load_steered_pipeline(self, target_shape: tuple[int, ...]) -> PreDiffPipeline:
        """The pipeline of `steered_pipeline`, checked to work in this run's latent space."""
        cfg = self.config
        pipe = load_forecast_pipeline(cfg.steered_pipeline)
        if not isinstance(pipe, PreDiffPipeline):
            raise ValueError(
                f"steered_pipeline {cfg.steered_pipeline!r} is a {type(pipe).__name__}, not a PreDiffPipeline"
            )
        d = cfg.data
        fits = tuple(pipe.context_shape) == (d.context_length, *self.item_shape[1:])
        fits = fits and tuple(pipe.unet.target_shape) == tuple(target_shape)
        if not fits or not math.isclose(pipe.scaling_factor, self.scaling_factor, rel_tol=1e-4):
            raise ValueError(
                f"steered_pipeline {cfg.steered_pipeline!r} takes contexts {tuple(pipe.context_shape)} and denoises "
                f"latents {tuple(pipe.unet.target_shape)} scaled by {pipe.scaling_factor:.6g}; this run has "
                f"{self.describe_data()}, latents {tuple(target_shape)} scaled by {self.scaling_factor:.6g}"
            )
        if (pipe.extrapolator is None) != (self.extrapolator is None):
            raise ValueError(
                f"steered_pipeline {cfg.steered_pipeline!r} and this run must both extrapolate (extrapolation) or "
                "both not: the network reads latents with the extrapolation's offset"
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def move_frozen_to(self, device: torch.device, dtype: torch.dtype) -> None:
        super().move_frozen_to(device, dtype)
        if self.steered is not None:
            self.steered.to(device)

    def steered_rows(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean estimates `(B, T_out, h, w, c)` (offset included) that the network read at timestep 0 while
        steering the steered pipeline's forecast of the contexts of `frames` `(B, T, H, W, C)` (see
        `steered_pipeline`), and their decoded statistic `(B, T_out, 1)`."""
        cfg = self.config
        context, target = (self.to_physical(part.float()) for part in self.split(frames))
        gain = torch.ones(frames.shape[0])
        if cfg.intensity_gain is not None:
            low, high = (math.log(g) for g in cfg.intensity_gain)
            gain = gain.uniform_(low, high).exp()
        targets = (target.mean(dim=(1, 2, 3, 4)).cpu() * gain).tolist()
        model = self.unwrap("alignment")
        read: list[torch.Tensor] = []

        def record(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if bool((args[1] == 0).all()):
                read.append(args[0].detach())

        was_training = model.training
        hook = model.register_forward_hook(record)
        generator = torch.Generator(device=frames.device).manual_seed(int(torch.randint(0, 2**62, ()).item()))
        try:
            model.eval()
            self.steered(
                context,
                num_inference_steps=cfg.steered_steps,
                generator=generator,
                knowledge_controls=AnticipatedIntensityControl(target=targets, method="learned", model=model),
                output_type="latent",
            )
        finally:
            hook.remove()
            model.train(was_training)
        latents = torch.cat(read)
        latents = latents[torch.randperm(latents.shape[0], device=latents.device)[: frames.shape[0]]]
        return latents, self.decoded_statistic(latents)

    def ema_model(self) -> torch.nn.Module:
        return self.unwrap("alignment")

    def _loss(
        self, frames: torch.Tensor, model: torch.nn.Module, labels: torch.Tensor | None = None, augment: bool = False
    ) -> torch.Tensor:
        cfg = self.config
        steered = self.steered_rows(frames) if augment and self.steered is not None else None
        if augment and cfg.intensity_gain is not None:
            frames = self.brighten(frames)
        _, latents, offset = self.diffusion_latents(frames)
        label = self.target_statistic(frames, latents + offset, labels)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
        )
        if augment and cfg.clean_fraction > 0:
            clean = torch.rand(latents.shape[0], device=latents.device) < cfg.clean_fraction
            timesteps = torch.where(clean, torch.zeros_like(timesteps), timesteps)
        # The network sees what the pipeline's controls see: the noisy diffusion latents plus their offset.
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps) + offset
        if steered is not None:
            noisy = torch.cat([noisy, steered[0]])
            label = torch.cat([label, steered[1]])
            timesteps = torch.cat([timesteps, torch.zeros_like(timesteps[: steered[0].shape[0]])])
        if augment and cfg.robust_step > 0 and bool((timesteps == 0).any()):
            moved, moved_label = self.gradient_steps(noisy[timesteps == 0], label[timesteps == 0])
            noisy = torch.cat([noisy, moved])
            label = torch.cat([label, moved_label])
            timesteps = torch.cat([timesteps, torch.zeros_like(timesteps[: moved.shape[0]])])
        matching = augment and cfg.gradient_weight > 0 and bool((timesteps == 0).any())
        noisy = noisy.detach().requires_grad_(matching)
        prediction = model(noisy, timesteps).sample
        loss = F.mse_loss(prediction.float(), label)
        if matching:
            clean = timesteps == 0
            (grad,) = torch.autograd.grad(prediction[clean].float().sum(), noisy, create_graph=True)
            expected = self.decoded_gradient(noisy[clean])
            mismatch = (grad[clean] - expected).flatten(1).pow(2).sum(1) / expected.flatten(1).pow(2).sum(1)
            loss = loss + cfg.gradient_weight * mismatch.clamp_max(1e4).mean()
        return loss

    def target_statistic(
        self, frames: torch.Tensor, latents: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """What the network learns for a batch, `(B, T_out, 1)`: the items' energies of the target frames (from
        `labels`, `(B, T)`), the statistic of the decoded target `latents` (`labels: decoded`) or of the target
        frames."""
        cfg = self.config
        if cfg.statistic == "energy":
            if labels is None:
                raise ValueError("statistic 'energy' needs the items' energies, which this batch does not carry")
            return labels[:, -latents.shape[1] :, None].float()
        if cfg.labels == "decoded":
            return self.decoded_statistic(latents)
        return self.statistic_of(self.split(frames)[1])

    def brighten(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames `(B, T, H, W, C)` in [0, 1] times a per-sequence gain, log-uniform in `intensity_gain`,
        clipped to [0, 1]."""
        low, high = (math.log(g) for g in self.config.intensity_gain)
        gain = torch.empty(frames.shape[0], device=frames.device).uniform_(low, high).exp()
        return (frames * gain.view(-1, *[1] * (frames.ndim - 1)).to(frames.dtype)).clamp(0, 1)

    def gradient_steps(self, latents: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents `(n, T_out, h, w, c)` (offset included) moved along the network's input gradient by a
        signed step of root mean square uniform in `[-robust_step, robust_step]`, and their labels `(n, T_out,
        1)`: `label` plus the change of the per-frame statistic of the decoded latents (with `labels: decoded`,
        `label` is that statistic already, so the new label is the statistic of the moved latents)."""
        model = self.unwrap("alignment")
        timesteps = torch.zeros(latents.shape[0], dtype=torch.long, device=latents.device)
        with torch.enable_grad():
            probe = latents.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(probe, timesteps).sample.float().sum(), probe)
        rms = grad.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
        size = torch.empty(latents.shape[0], device=latents.device).uniform_(-1, 1) * self.config.robust_step
        moved = latents + (size / rms).view(-1, *[1] * (latents.ndim - 1)) * grad
        moved = moved.detach()
        if self.config.labels == "decoded":
            return moved, self.decoded_statistic(moved)
        return moved, label + self.decoded_statistic(moved) - self.decoded_statistic(latents)

    def decoded_gradient(self, latents: torch.Tensor) -> torch.Tensor:
        """The gradient of the decoded statistic (summed over the frames) with respect to the latents `(n, T_out,
        h, w, c)`, the direction the analytic control steers along; detached."""
        with torch.enable_grad():
            probe = latents.detach().requires_grad_(True)
            frames = decode_sequence(self.vae, probe / self.scaling_factor).float()
            (grad,) = torch.autograd.grad(self.statistic_of(frames).sum(), probe)
        return grad

    @torch.no_grad()
    def decoded_statistic(self, latents: torch.Tensor) -> torch.Tensor:
        """The statistic `(B, T_out, 1)` of the autoencoder's decoding of (scaled) latents `(B, T_out, h, w,
        c)`, offset included."""
        frames = decode_sequence(self.vae, latents / self.scaling_factor).float()
        return self.statistic_of(frames)

    def statistic_of(self, frames: torch.Tensor) -> torch.Tensor:
        """[`frame_statistic`] of frames `(B, T, H, W, C)` in [0, 1], on the scale of the intensity control:
        linear in physical units (with a value transform, frames go back to them first)."""
        if self.scaling.value_transform is not None:
            frames = to_intensity_unit(self.to_physical(frames), self.value_range, self.scaling.value_transform)
        return frame_statistic(frames, self.config.statistic)

    def compute_losses(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return {"alignment": self._loss(frames, self.train_modules["alignment"], labels, augment=True)}, {}

    def validation_losses(self, frames: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"mse": self._loss(frames, self.unwrap("alignment"), labels)}

    def export(self, folder: Path) -> Any:
        model = self.unwrap("alignment")
        model.save_pretrained(folder, safe_serialization=True)
        return model


def train_alignment(config: AlignmentTrainingConfig, **kwargs: Any) -> Path:
    """Train the alignment network described by `config`; returns the output folder."""
    return AlignmentTrainer(config, **kwargs).train()
