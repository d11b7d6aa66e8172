"""`prediff train distill`: a 1-to-4-step student of a trained PreDiff pipeline, by latent consistency distillation.

The teacher's denoiser is good with 20 steps of SDE-DPM-Solver++; every step is one denoiser call, which is
nearly all of a forecast's time. The student is a copy of the teacher's Earthformer-UNet trained so that its
*consistency function*

    f(z_t, t) = c_skip(t) z_t + c_out(t) x0(z_t, t),   x0(z_t, t) = (z_t - sqrt(1 - a_t) eps(z_t, t)) / sqrt(a_t)

(`a_t` the cumulative alpha of the training schedule) gives the same clean latent anywhere along one trajectory
of the teacher's probability-flow ODE. Each training row draws a level `t_n` of a grid of `num_ddim_timesteps`
levels (`t_n = n k - 1`, `k = 1000 / num_ddim_timesteps`), noises the target latents to it, and moves the
student's `f(z_{t_n}, t_n)` toward the target network's `f(z_{t_{n-1}}, t_{n-1})`, where `z_{t_{n-1}}` is one DDIM
step of the teacher from `z_{t_n}` and the target network is the exponential moving average of the student
(`ema_decay`; its weights are the exported ones). At `t = 0`, `c_skip = 1` and `c_out = 0`: the boundary
condition that anchors the chain to the data.

Sampling with Diffusers' `LCMScheduler` (the "lcm" preset) maps fresh noise to `f` at t=999 and, with more
steps, noises that estimate again to the next level of the grid and maps it anew. Every member starts from its
own noise and gets fresh noise at every step, so the ensemble stays an ensemble.

With `objective: crps` the student is instead trained as the sampler it will be: every training sequence gets
`crps_members` forecasts drawn exactly as `LCMScheduler` draws them in `crps_steps` steps (fresh noise, the
consistency function at each level, fresh noise between levels), decoded through the frozen autoencoder and the
extrapolation, and the loss is their fair CRPS against the observed frames, in the [0, 1] scale or in physical
units (`crps_space`),

    CRPS = mean_i |x_i - y| - sum_{i != j} |x_i - x_j| / (2 M (M - 1)),

differentiated through the whole chain. The CRPS is a proper score: it is lowest for an ensemble drawn from the
true conditional distribution, so the members must differ as much as the outcome is uncertain; a student that
returned the mean would pay the spread term. The teacher is then only the starting point.

With `objective: imitation` the teacher is itself a few-step student (an `LCMScheduler` pipeline) and the
student learns to be the same sampler at a lower price: every training row starts from fresh noise, the teacher's
`imitation_steps`-step trajectory is drawn (its estimate at each level, noised afresh to the next), and at every
level the student's estimate for the teacher's input must equal the teacher's. The same noise then gives nearly
the same member, so the ensemble keeps the teacher's spread and skill. This is how a smaller student is trained
(`student_model`, a new network, not a copy), together with a lighter decoder (`student_decoder`): Diffusers'
`AsymmetricAutoencoderKL` with the teacher's encoder, trained to decode what the pipeline decodes (the teacher's
forecast latents and the observed future's, the extrapolation's latents added) as the teacher's decoder does.

The teacher's autoencoder (or its encoder, with a lighter decoder), extrapolator, knowledge-alignment network and
latent scaling are reused as they are; the result is a `PreDiffPipeline` folder with the student and an
`LCMScheduler`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call
from torch.utils.data import Dataset

from ..metrics.categorical import max_pool_frames
from ..metrics.probabilistic import crps_ensemble_tensor, max_pool_ensemble
from ..models.autoencoder import decode_sequence, with_lighter_decoder
from ..models.earthformer_unet import EarthformerUNetModel
from ..pipelines import PreDiffPipeline
from ..schedulers import prediff_scheduler, prediff_training_scheduler
from .config import DistillTrainingConfig
from .train_denoiser import DenoiserTrainer

__all__ = [
    "DistillTrainer",
    "boundary_condition_scalings",
    "consistency_output",
    "ddim_solver_step",
    "distillation_timesteps",
    "train_distill",
]

#: `sigma_data` of the boundary conditions (LCMScheduler's constant).
SIGMA_DATA = 0.5


def distillation_timesteps(num_ddim_timesteps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The ODE grid `t_n = n k - 1`, `n = 1..N`, `k = num_train_timesteps // N`, shape `(N,)`: the levels
    `LCMScheduler(original_inference_steps=N)` samples on (t=999 first)."""
    k = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1) * k - 1


def boundary_condition_scalings(
    timesteps: torch.Tensor, timestep_scaling: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(c_skip, c_out)` of integer timesteps `(B,)`, as `LCMScheduler.get_scalings_for_boundary_condition_discrete`
    computes them for one timestep: `c_skip(0) = 1`, `c_out(0) = 0`, and `c_skip` vanishes quickly above."""
    scaled = timesteps.double() * timestep_scaling
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2).sqrt()
    return c_skip.float(), c_out.float()


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`(B,)` -> `(B, 1, ..., 1)` broadcastable against `like`, on its device and dtype."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def predicted_clean(
    sample: torch.Tensor, noise_pred: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The clean estimate `x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)` of an epsilon prediction, per row."""
    alpha = _per_row(alphas_cumprod[timesteps.cpu()], sample)
    return (sample - (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()


def consistency_output(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    timestep_scaling: float = 10.0,
) -> torch.Tensor:
    """The consistency function `c_skip(t) z_t + c_out(t) x0(z_t, t)` of the module docstring, `(B, ...)`: what
    `LCMScheduler.step` returns as its `denoised` output for the same noise prediction."""
    c_skip, c_out = boundary_condition_scalings(timesteps, timestep_scaling)
    x0 = predicted_clean(sample, noise_pred, alphas_cumprod, timesteps)
    return _per_row(c_skip, sample) * sample + _per_row(c_out, sample) * x0


def renoise(estimate: torch.Tensor, alphas_cumprod: torch.Tensor, timestep: int, noise: torch.Tensor) -> torch.Tensor:
    """`LCMScheduler.step`'s next sample: the clean estimate `(B, ...)` noised afresh, with `noise`, to `timestep`."""
    alpha = float(alphas_cumprod[timestep])
    return alpha**0.5 * estimate + (1 - alpha) ** 0.5 * noise


def ddim_solver_step(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    prev_timesteps: torch.Tensor,
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) of every row from `timesteps` to `prev_timesteps`:
    `sqrt(a_prev) x0 + sqrt(1 - a_prev) eps`, as `DDIMScheduler.step` takes it."""
    x0 = predicted_clean(sample, noise_pred, alphas_cumprod, timesteps)
    alpha_prev = _per_row(alphas_cumprod[prev_timesteps.cpu()], sample)
    return alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * noise_pred


def distillation_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float) -> torch.Tensor:
    """Mean over elements of the squared difference ("l2") or of the pseudo-Huber `sqrt(d^2 + c^2) - c` ("huber"),
    which grows linearly for large differences, so rare far-off targets do not dominate."""
    diff = prediction.float() - target.float()
    if loss_type == "l2":
        return diff.pow(2).mean()
    return ((diff.pow(2) + huber_c**2).sqrt() - huber_c).mean()


class LatentItems(Dataset):
    """Cached latents as a data set of `{"frames": (T_cond + T_out, h, w, c)}` items."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"frames": self.latents[index]}


class _DecoderForTraining(torch.nn.Module):
    """The lighter autoencoder's decoding of scaled latents `(B, T, h, w, c)` to `(B, T, H, W, C)` frames in [0, 1],
    as `forward` (what data-parallel training synchronises)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_sequence(self.vae, latents / self.vae.config.scaling_factor).float()


class DistillTrainer(DenoiserTrainer):
    """Distils the teacher pipeline's denoiser into a few-step student (see the module docstring)."""

    kind = "distill"
    config: DistillTrainingConfig

    def build(self) -> None:
        from ..pipelines.loading import load_forecast_pipeline

        cfg = self.config
        teacher = load_forecast_pipeline(cfg.teacher)
        if not isinstance(teacher, PreDiffPipeline):
            raise ValueError(
                f"teacher {cfg.teacher!r} is a {type(teacher).__name__}; distillation needs a PreDiffPipeline"
            )
        self.teacher_pipeline = teacher
        if tuple(teacher.context_shape) != (cfg.data.context_length, *self.item_shape[1:]) or (
            teacher.forecast_shape[0] != cfg.data.target_length
        ):
            raise ValueError(
                f"the teacher takes contexts {tuple(teacher.context_shape)} and forecasts "
                f"{tuple(teacher.forecast_shape)}, but the data give {self.describe_data()}"
            )
        # The frozen parts are the teacher's: the same latents, scaling and condition as it was trained on.
        self.vae = teacher.vae.requires_grad_(False).eval()
        self.extrapolator = teacher.extrapolator
        self.knowledge_model = teacher.knowledge_model
        self.teacher = teacher.unet.requires_grad_(False).eval()
        if cfg.objective == "imitation":
            self.check_few_step_teacher()
        student = self.new_student().requires_grad_(True).train()
        self.configure_network(student)
        self.noise_scheduler = prediff_training_scheduler()
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.float()
        self.grid = distillation_timesteps(cfg.num_ddim_timesteps, self.noise_scheduler.config.num_train_timesteps)
        self.solver_stride = int(self.grid[0]) + 1
        self.train_modules = {"student": student}
        self.param_groups = {"student": (list(student.parameters()), cfg.learning_rate)}
        if cfg.student_decoder:
            decoder = _DecoderForTraining(with_lighter_decoder(self.vae, **cfg.student_decoder).train())
            self.train_modules["decoder"] = decoder
            self.param_groups["decoder"] = ([p for p in decoder.parameters() if p.requires_grad], cfg.learning_rate)
        self.cached = cfg.latent_cache_items > 0
        if self.cached:
            self.train_dataset = self.cache_latents(cfg.latent_cache_items)

    def new_student(self) -> EarthformerUNetModel:
        """A copy of the teacher's denoiser, or with `student_model` a new network of the teacher's configuration
        with those settings changed."""
        if not self.config.student_model:
            return copy.deepcopy(self.teacher)
        settings = {k: v for k, v in self.teacher.config.items() if not k.startswith("_")}
        try:
            return EarthformerUNetModel(**{**settings, **self.config.student_model})
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"student_model {self.config.student_model}: no denoiser can be built with these settings ({error})"
            ) from None

    def check_few_step_teacher(self) -> None:
        """Imitation copies the teacher's sampler: it must be `LCMScheduler` on this run's grid and boundary
        scalings."""
        cfg = self.config
        scheduler = self.teacher_pipeline.scheduler
        expected = {"original_inference_steps": cfg.num_ddim_timesteps, "timestep_scaling": cfg.timestep_scaling}
        found = {k: scheduler.config.get(k) for k in expected}
        if type(scheduler).__name__ != "LCMScheduler" or found != expected:
            raise ValueError(
                f"objective imitation needs a few-step teacher sampling with LCMScheduler {expected} (the output of "
                f"a consistency or crps distillation); {cfg.teacher!r} samples with {type(scheduler).__name__} "
                f"{found}"
            )

    @torch.no_grad()
    def cache_latents(self, count: int) -> LatentItems:
        """The condition and target latents of the first `count` training items, each stored as one `(T_cond +
        T_out, h, w, c)` "frames" tensor, so that the shared loop batches and augments them like frames."""
        count = min(count, len(self.train_dataset))
        batch = self.config.train_batch_size
        rows = []
        for start in range(0, count, batch):
            frames = torch.stack([self.train_dataset[i]["frames"] for i in range(start, min(start + batch, count))])
            latents = self.diffusion_latents(frames.float(), sample_target=False)
            rows.append(torch.cat([latents.condition, latents.target], dim=1))
        return LatentItems(torch.cat(rows))

    def move_frozen_to(self, device: torch.device, dtype: torch.dtype) -> None:
        super().move_frozen_to(device, dtype)
        self.teacher.to(device=device)

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        models = {"unet": self.unwrap("student")}
        if "decoder" in self.train_modules:
            models["vae"] = self.unwrap("decoder").vae
        return models

    def ema_model(self) -> torch.nn.Module:
        return self.unwrap("student")

    def _target_network(self, sample: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The target network's noise prediction: the student with its EMA weights (the student itself without
        `use_ema`), without touching the student's own weights."""
        student = self.unwrap("student")
        if self.ema is None:
            return student(sample, timesteps, context).sample
        names = [name for name, _ in student.named_parameters()]
        weights = dict(zip(names, self.ema.shadow_params))
        return functional_call(student, weights, (sample, timesteps, context)).sample

    def _losses(
        self, frames: torch.Tensor, module: torch.nn.Module, cached: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The distillation loss and the clean-estimate MSE of a batch of frames `(B, T, H, W, C)`, or with
        `cached`, of cached latents `(B, T_cond + T_out, h, w, c)` (see `cache_latents`)."""
        cfg = self.config
        if cached:
            T_out = cfg.data.target_length
            context_latents, latents = frames[:, :-T_out], frames[:, -T_out:]
        else:
            context_latents, latents, _ = self.diffusion_latents(frames)
        device = latents.device
        noise = torch.randn_like(latents)
        index = torch.randint(0, cfg.num_ddim_timesteps, (latents.shape[0],))
        start = self.grid[index]
        prev = (start - self.solver_stride).clamp(min=0)
        alphas = self.alphas_cumprod
        noisy = self.noise_scheduler.add_noise(latents, noise, start.to(device))
        student_eps = module(noisy, start.to(device), context_latents).sample.float()
        prediction = consistency_output(noisy, student_eps, alphas, start, cfg.timestep_scaling)
        with torch.no_grad(), self.autocast():
            teacher_eps = self.teacher(noisy, start.to(device), context_latents).sample.float()
            solved = ddim_solver_step(noisy, teacher_eps, alphas, start, prev)
            target_eps = self._target_network(solved, prev.to(device), context_latents).float()
            target = consistency_output(solved, target_eps, alphas, prev, cfg.timestep_scaling)
        loss = distillation_loss(prediction, target, cfg.loss_type, cfg.huber_c)
        # How far the student's clean estimate is from the data, for the logs (not optimised).
        mse = (prediction.detach() - latents).pow(2).mean()
        return loss, mse

    def _imitation_losses(
        self, frames: torch.Tensor, student: torch.nn.Module, decoder: torch.nn.Module | None, cached: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The student's miss of the teacher's estimate, averaged over the levels of the teacher's
        `imitation_steps`-step trajectory from fresh noise, and with a lighter decoder its mean absolute difference
        from the teacher's decoding of the teacher's forecast ([0, 1] scale); frames `(B, T, H, W, C)`, or with
        `cached`, cached latents (see `cache_latents`)."""
        cfg = self.config
        if cached:
            condition, observed = frames[:, : -cfg.data.target_length], frames[:, -cfg.data.target_length :]
        else:
            condition, observed, _ = self.diffusion_latents(frames)
        sampler = self.scheduler()
        sampler.set_timesteps(cfg.imitation_steps)
        levels = [int(t) for t in sampler.timesteps]
        alphas = self.alphas_cumprod
        sample = torch.randn((condition.shape[0], *self.teacher.target_shape), device=condition.device)
        losses = []
        for i, level in enumerate(levels):
            timesteps = torch.full((sample.shape[0],), level, dtype=torch.long)
            with torch.no_grad(), self.autocast():
                teacher_eps = self.teacher(sample, timesteps.to(sample.device), condition).sample.float()
                target = consistency_output(sample, teacher_eps, alphas, timesteps, cfg.timestep_scaling)
            student_eps = student(sample, timesteps.to(sample.device), condition).sample.float()
            prediction = consistency_output(sample, student_eps, alphas, timesteps, cfg.timestep_scaling)
            losses.append(distillation_loss(prediction, target, cfg.loss_type, cfg.huber_c))
            if i + 1 < len(levels):
                sample = renoise(target, alphas, levels[i + 1], torch.randn_like(target))
        result = {"student": torch.stack(losses).mean()}
        logs = {"x0_mse": (prediction.detach() - target).pow(2).mean()}
        if decoder is not None:
            # The pipeline decodes the denoiser's residual plus the extrapolation's latents, not the residual alone;
            # the observed futures join the teacher's forecasts so that the decoder also meets the sharp, intense
            # cores that an ensemble member smooths.
            forecast = torch.cat([target, observed]) + self.forecast_offset(condition).repeat(2, 1, 1, 1, 1)
            with torch.no_grad():
                reference = self.teacher_pipeline.decode_unit(forecast.to(self.vae.dtype)).float()
            result["decoder"] = (decoder(forecast) - reference).abs().mean()
            logs["decoder_mae"] = result["decoder"].detach()
        return result, logs

    def crps_forecast(self, frames: torch.Tensor, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """`crps_members` forecasts of every sequence of frames `(B, T, H, W, C)` in [0, 1], drawn as the exported
        sampler draws them in `crps_steps` steps and differentiable in `module`'s weights, and the observed
        targets: `(B, M, T_out, H, W, C)` and `(B, T_out, H, W, C)`, both in the [0, 1] scale, unclamped."""
        cfg = self.config
        teacher = self.teacher_pipeline
        members = cfg.crps_members
        context, target = self.split(frames)
        with torch.no_grad():
            condition = teacher.encode_frames(context)
            extrapolation = None
            if teacher.extrapolator is not None:
                extrapolation = teacher.prepare_extrapolation(context.float())
                condition = torch.cat([condition, extrapolation.latents], dim=1)
                extrapolation = extrapolation.repeat_interleave(members)
        condition = condition.repeat_interleave(members, dim=0)
        rows = condition.shape[0]
        sampler = self.scheduler()
        sampler.set_timesteps(cfg.crps_steps)
        levels = [int(t) for t in sampler.timesteps]
        alphas = self.alphas_cumprod
        # All noise first, one draw per step in the sampler's order, so that the network's own use of the random
        # stream (dropout) cannot change it: the same seed gives the pipeline's forecast.
        noises = [torch.randn((rows, *self.teacher.target_shape), device=condition.device) for _ in levels]
        sample = noises[0]
        for i, level in enumerate(levels):
            timesteps = torch.full((rows,), level, dtype=torch.long)
            noise_pred = module(sample, timesteps.to(sample.device), condition).sample.float()
            denoised = consistency_output(sample, noise_pred, alphas, timesteps, cfg.timestep_scaling)
            if i + 1 < len(levels):
                sample = renoise(denoised, alphas, levels[i + 1], noises[i + 1])
        forecast = teacher.decode_forecast_unit(denoised.to(self.vae.dtype), extrapolation).float()
        return forecast.reshape(target.shape[0], members, *target.shape[1:]), target.float()

    def _crps_losses(self, frames: torch.Tensor, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The fair CRPS of `crps_forecast` on the scale of `crps_space`, averaged over `crps_pool_sizes`, plus the
        threshold-weighted CRPS at each of `crps_thresholds`, and the mean absolute error of the ensemble mean (for
        the logs)."""
        forecast, target = self.crps_forecast(frames, module)
        thresholds = torch.tensor(self.config.crps_thresholds, dtype=torch.float32, device=forecast.device)
        if self.config.crps_space == "physical":
            # Clamped to [0, 1] first, as the pipeline's forecast is: above 1 the inverse of a dB transform grows
            # without bound, and one wild member would swamp the loss.
            to_physical = self.teacher_pipeline.scale_to_physical
            forecast, target = to_physical(forecast.clamp(0.0, 1.0)), to_physical(target)
        else:
            thresholds = self.teacher_pipeline.scale_to_unit(thresholds)
        height, width = target.shape[-3:-1]
        for k in self.config.crps_pool_sizes:
            if height % k or width % k:
                raise ValueError(f"crps_pool_sizes: {k} does not divide the frames' size {height}x{width}")
        # Max-pooled scales reward a core forecast a few pixels off, which the per-pixel CRPS hedges away.
        crps = torch.stack(
            [
                crps_ensemble_tensor(max_pool_ensemble(forecast, k), max_pool_frames(target, k), fair=True).mean()
                for k in self.config.crps_pool_sizes
            ]
        ).mean()
        for u in thresholds:
            crps = crps + crps_ensemble_tensor(forecast.clamp(min=u), target.clamp(min=u), fair=True).mean()
        return crps, (forecast.detach().mean(dim=1) - target).abs().mean()

    def compute_losses(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if self.config.objective == "crps":
            crps, mean_error = self._crps_losses(frames, self.train_modules["student"])
            return {"student": crps}, {"mean_mae": mean_error}
        if self.config.objective == "imitation":
            decoder = self.train_modules.get("decoder")
            return self._imitation_losses(frames, self.train_modules["student"], decoder, cached=self.cached)
        loss, mse = self._losses(frames, self.train_modules["student"], cached=self.cached)
        return {"student": loss}, {"x0_mse": mse}

    def validation_losses(self, frames: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.config.objective == "crps":
            crps, mean_error = self._crps_losses(frames, self.unwrap("student"))
            return {"loss": crps, "mean_mae": mean_error}
        if self.config.objective == "imitation":
            decoder = self.unwrap("decoder") if "decoder" in self.train_modules else None
            losses, logs = self._imitation_losses(frames, self.unwrap("student"), decoder)
            return {"loss": sum(losses.values()), **logs}
        loss, mse = self._losses(frames, self.unwrap("student"))
        return {"loss": loss, "x0_mse": mse}

    def scheduler(self) -> Any:
        """The exported sampler: `LCMScheduler` on the distillation grid."""
        cfg = self.config
        return prediff_scheduler(
            "lcm", original_inference_steps=cfg.num_ddim_timesteps, timestep_scaling=cfg.timestep_scaling
        )

    def pipeline(self, unet: EarthformerUNetModel | None = None, export: bool = False) -> PreDiffPipeline:
        """A `PreDiffPipeline` of the student with the teacher's other components (`export`: float32 copies)."""
        teacher = self.teacher_pipeline
        vae = self.unwrap("decoder").vae if "decoder" in self.train_modules else self.vae
        vae = copy.deepcopy(vae).float().eval() if export else vae
        scheduler = self.scheduler()
        # A CRPS or imitation student is trained for its own step count only; a consistency student for 1 to 4.
        steps = {"crps": self.config.crps_steps, "imitation": self.config.imitation_steps}.get(self.config.objective)
        steps = {type(scheduler).__name__: steps} if steps else None
        return PreDiffPipeline(
            vae=vae,
            unet=unet if unet is not None else self.unwrap("student"),
            scheduler=scheduler,
            knowledge_model=self.knowledge_model,
            extrapolator=self.extrapolator,
            value_range=teacher.value_range,
            units=teacher.config.get("units"),
            training_data=f"{teacher.config.get('training_data')}; distilled from {self.config.teacher!r} with "
            f"{self.describe_training()}",
            value_transform=teacher.value_transform,
            pixel_size_km=teacher.pixel_size_km,
            frame_interval_minutes=teacher.frame_interval_minutes,
            max_intensity_growth=teacher.max_intensity_growth,
            intensity_cap_radius_km=teacher.intensity_cap_radius_km,
            default_inference_steps=steps,
        )


def train_distill(config: DistillTrainingConfig, **kwargs: Any) -> Path:
    """Distil `config.teacher` into a few-step student; returns the output folder, a `PreDiffPipeline` folder."""
    return DistillTrainer(config, **kwargs).train()
