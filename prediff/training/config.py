"""Training configurations: a dataclass per component, with its defaults and the checks of its values.

A configuration is a dataclass per component ([`VAETrainingConfig`], [`DenoiserTrainingConfig`],
[`AlignmentTrainingConfig`], [`EarthformerTrainingConfig`]) sharing the flags of Diffusers' training examples
(`mixed_precision`, `gradient_accumulation_steps`, `checkpointing_steps`, ...). Two sections are nested:

- `data` ([`DataConfig`]): which data set, its path, lengths, split and augmentation;
- `model`: a free mapping of the network's constructor arguments, with an optional `preset` whose entries
  the others replace. It is checked against the constructor's signature when the network is built.

`validate()` raises `ValueError` for an impossible value, naming the key, the expected and the received value,
and `FileNotFoundError` for a missing data path. Reading a configuration from YAML with `--key value`
overrides, and checking the types of its values, is the work of [`~prediff.training.config_loading`].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.checks import check_cap_radius, check_intensity_growth, check_value_range
from ..utils.units import check_value_transform

__all__ = [
    "CONFIG_CLASSES",
    "AlignmentTrainingConfig",
    "DataConfig",
    "DenoiserTrainingConfig",
    "DistillTrainingConfig",
    "EarthformerTrainingConfig",
    "TrainingConfig",
    "VAETrainingConfig",
]

DATASETS = ("storms", "nbody", "sevir", "file")
#: The data sets generated from a seed, which need no path.
GENERATED_DATASETS = ("storms", "nbody")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
REPORT_TO = ("tensorboard", "none")
OPTIMIZERS = ("adamw", "adam")


@dataclass
class DataConfig:
    """Where training sequences come from and how they are cut.

    Attributes:
        dataset: "storms" (synthetic radar storms, generated, no download), "nbody" (the N-body digits,
            generated; items carry each frame's energy), "sevir" (a SEVIR / SEVIR-LR root
            with CATALOG.csv and data/) or "file" (an HDF5 / zarr file written by `prediff data generate` or
            any (N, T, H, W, C) array file).
        path: the SEVIR root or the file; required unless the data set is generated ("storms", "nbody").
        context_length, target_length: frames given to the model and frames to forecast (T_in, T_out).
        seq_len: frames per item; default `context_length + target_length` (the VAE recipes use 1: frames are
            independent samples).
        stride: step between windows inside an event / array sequence (default `seq_len`).
        num_sequences, height, width, seed: the generated data sets (number, frame size in pixels, generator
            seed).
        img_type, start_date, end_date: SEVIR image type and event time range (`start < time <= end`).
        key: array name inside a "file" data set.
        value_range, value_transform: how a "file" data set's physical values map to [0, 1], instead of what the
            file records: the transform (e.g. `{kind: db, threshold: 0.1, zerovalue: -15}` for rain rate in
            mm/h, see `prediff.utils.units`), then `value_range` of the transformed values (e.g. `[-15, 25]`).
            Recorded in the exported pipeline.
        val_fraction: share of items held out for validation (the official split holds out 10 %).
        split_seed: seed of that split.
        augment: random flips and quarter turns of every training item (same on all its frames).
        cache_in_memory: decode / generate every item once and keep them in memory (small data sets).
        num_workers: DataLoader worker processes.
    """

    dataset: str = "storms"
    path: str | None = None
    context_length: int = 7
    target_length: int = 6
    seq_len: int | None = None
    stride: int | None = None
    num_sequences: int = 512
    height: int = 128
    width: int = 128
    seed: int = 0
    img_type: str = "vil"
    start_date: str | None = None
    end_date: str | None = None
    key: str = "frames"
    value_range: list[float] | None = None
    value_transform: dict | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    augment: bool = False
    cache_in_memory: bool = False
    num_workers: int = 0

    @property
    def window_length(self) -> int:
        return self.seq_len if self.seq_len is not None else self.context_length + self.target_length


@dataclass
class TrainingConfig:
    """Flags shared by every training command (names as in Diffusers' training examples).

    Attributes:
        output_dir: where checkpoints (`checkpoint-{step}`), logs (`logs/`), validation pictures
            (`validation/`) and the trained result go.
        seed: seed of the initial weights and of every random draw during training (noise, timesteps,
            dropout, augmentation, data order); a resumed run continues the same random sequence.
        data: see [`DataConfig`].
        model: constructor arguments of the trained network; `preset` names a published configuration.
        init_weights: fine-tune instead of starting from random weights: a saved network, or a folder holding
            it in the trained component's subfolder (`vae/`, `unet/` of a pipeline), or the name of a shipped
            pipeline (`prediff-storms-tiny`); its configuration replaces `model` (`prediff train vae`,
            `denoiser` and `alignment`, whose subfolder in a pipeline is `knowledge_model/`).
        train_batch_size: items per process and micro-batch.
        max_train_steps: optimizer steps; when null, `num_train_epochs` passes over the data.
        num_train_epochs: used only without `max_train_steps`.
        gradient_accumulation_steps: micro-batches per optimizer step.
        learning_rate, scale_lr: peak learning rate; with `scale_lr` it is multiplied by the total batch
            (`train_batch_size * gradient_accumulation_steps * num_processes`).
        lr_scheduler, lr_warmup_steps, lr_num_cycles, lr_power: Diffusers' `get_scheduler` arguments
            (warmup in optimizer steps).
        optimizer, adam_beta1, adam_beta2, adam_weight_decay, adam_epsilon: the optimizer.
        max_grad_norm: gradient clipping by global norm (null: none). The norm is checked before every
            optimizer step either way: a NaN or infinite one stops the run, keeping the last checkpoint.
        mixed_precision: "no", "fp16" or "bf16" (Accelerate's automatic mixed precision). On the CPU, bf16
            runs Conv3d through oneDNN, whose backward intermittently gives NaN gradients for small layers (the
            tiny alignment recipe stops within a few steps): use "no" there.
        allow_tf32: TF32 matmuls on Ampere and newer GPUs.
        gradient_checkpointing: recompute activations in backward to save memory.
        compile: `torch.compile` the trained network.
        attention_backend: "sdpa" (default of the networks) or "reference" for the cuboid-attention networks.
        checkpointing_steps: save a resumable checkpoint every this many optimizer steps.
        checkpoints_total_limit: keep at most this many checkpoints (oldest removed first).
        resume_from_checkpoint: a checkpoint folder or "latest" (the newest complete one in `output_dir`).
        overwrite: delete the checkpoints of another run in `output_dir` before starting; without it a run that
            does not resume from them refuses to start there (the two runs' checkpoints would mix).
        use_ema, ema_decay: exponential moving average of the weights (warm-up `(1+n)/(10+n)` as in the
            official code); the exported network holds the averaged weights.
        validation_steps: validate every this many steps (null: only at the end).
        num_validation_batches: batches of the validation split used for the validation loss.
        num_validation_samples: items drawn as pictures (and, for the denoiser, forecast).
        report_to: "tensorboard" (skipped with a warning when tensorboard is not installed) or "none".
        logging_dir: tensorboard folder, relative to `output_dir`.
        push_to_hub, hub_model_id, hub_private: upload the result to the Hugging Face Hub (the token comes
            from            `huggingface-cli login` or `HF_TOKEN`).
    """

    output_dir: str = "outputs/run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    init_weights: str | None = None
    train_batch_size: int = 2
    max_train_steps: int | None = None
    num_train_epochs: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    scale_lr: bool = False
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 0
    lr_num_cycles: int = 1
    lr_power: float = 1.0
    optimizer: str = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    allow_tf32: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False
    attention_backend: str | None = None
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    overwrite: bool = False
    use_ema: bool = False
    ema_decay: float = 0.9999
    validation_steps: int | None = None
    num_validation_batches: int = 4
    num_validation_samples: int = 2
    report_to: str = "tensorboard"
    logging_dir: str = "logs"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False

    @property
    def label_key(self) -> str | None:
        """The item entry, besides the frames, that training batches carry (None: the frames only)."""
        return None

    def validate(self) -> None:
        """Raise `ValueError` on impossible values (types were checked when the config was built)."""
        positive = [
            "train_batch_size",
            "num_train_epochs",
            "gradient_accumulation_steps",
            "checkpointing_steps",
            "num_validation_batches",
            "lr_num_cycles",
        ]
        for name in positive:
            _check(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        for name in ("max_train_steps", "checkpoints_total_limit", "validation_steps"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, "null or an integer >= 1", value)
        _check(
            self.num_validation_samples >= 0,
            "num_validation_samples",
            "an integer >= 0",
            self.num_validation_samples,
        )
        _check(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)
        _check(self.lr_warmup_steps >= 0, "lr_warmup_steps", "an integer >= 0", self.lr_warmup_steps)
        _check(
            self.mixed_precision in MIXED_PRECISION,
            "mixed_precision",
            f"one of {MIXED_PRECISION}",
            self.mixed_precision,
        )
        _check(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"one of {LR_SCHEDULERS}", self.lr_scheduler)
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        _check(self.report_to in REPORT_TO, "report_to", f"one of {REPORT_TO}", self.report_to)
        _check(0.0 <= self.ema_decay <= 1.0, "ema_decay", "a number in [0, 1]", self.ema_decay)
        _check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "max_grad_norm",
            "null or a positive number",
            self.max_grad_norm,
        )
        _check(
            self.attention_backend in (None, "sdpa", "reference", "xformers"),
            "attention_backend",
            "null, 'sdpa', 'reference' or 'xformers'",
            self.attention_backend,
        )
        _check(bool(str(self.output_dir)), "output_dir", "a folder path", self.output_dir)
        _check(
            not self.push_to_hub or bool(self.hub_model_id),
            "hub_model_id",
            "a repository id such as 'user/prediff-storms' when push_to_hub is true",
            self.hub_model_id,
        )
        d = self.data
        _check(d.dataset in DATASETS, "data.dataset", f"one of {DATASETS}", d.dataset)
        for name in ("context_length", "num_sequences", "height", "width", "num_sequences"):
            _check(getattr(d, name) >= 1, f"data.{name}", "an integer >= 1", getattr(d, name))
        _check(d.target_length >= 0, "data.target_length", "an integer >= 0", d.target_length)
        _check(d.seq_len is None or d.seq_len >= 1, "data.seq_len", "null or an integer >= 1", d.seq_len)
        _check(d.stride is None or d.stride >= 1, "data.stride", "null or an integer >= 1", d.stride)
        _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", "a number in [0, 1)", d.val_fraction)
        _check(d.num_workers >= 0, "data.num_workers", "an integer >= 0", d.num_workers)
        if d.dataset not in GENERATED_DATASETS:
            if not d.path:
                raise ValueError(f"data.path is required for data.dataset={d.dataset!r}, got {d.path!r}")
            if not Path(d.path).exists():
                raise FileNotFoundError(f"data.path {d.path!r} does not exist (data.dataset={d.dataset!r})")
        if self.init_weights is not None:
            from ..pretrained import SHIPPED_PIPELINES

            if self.init_weights not in SHIPPED_PIPELINES and not Path(self.init_weights).exists():
                raise FileNotFoundError(
                    f"init_weights {self.init_weights!r} is neither a folder nor a shipped pipeline "
                    f"({', '.join(SHIPPED_PIPELINES)})"
                )
        if (d.value_range is not None or d.value_transform is not None) and d.dataset != "file":
            raise ValueError(
                f"data.value_range and data.value_transform apply to data.dataset='file', not {d.dataset!r}"
            )
        if d.value_range is not None:
            check_value_range(d.value_range, "data.value_range")
        check_value_transform(d.value_transform)
        _check(isinstance(self.model, dict), "model", "a mapping of constructor arguments", self.model)


@dataclass
class VAETrainingConfig(TrainingConfig):
    """`prediff train vae`: frame autoencoder with L1 + KL + PatchGAN hinge loss (the official recipe).

    Attributes:
        kl_weight: weight of the KL term (official 1e-6); the KL is summed over latent elements and averaged
            over frames, like the reconstruction term.
        disc_start: optimizer step from which the adversarial terms are on (official 50001).
        disc_weight: factor on the adaptive weight `|grad rec| / (|grad adv| + 1e-4)` taken at the decoder's
            last convolution (official 0.5).
        disc_factor: factor on the adversarial losses once on (official 1.0).
        disc_num_layers, disc_channels: PatchGAN discriminator depth and width (official 3, 64).
        disc_learning_rate: discriminator learning rate (null: `learning_rate`).
        temporal_decoder: train Diffusers' `AutoencoderKLTemporalDecoder` instead of the frame-wise decoder.
    """

    learning_rate: float = 5e-6
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    adam_weight_decay: float = 0.0
    optimizer: str = "adam"
    kl_weight: float = 1e-6
    disc_start: int = 50001
    disc_weight: float = 0.5
    disc_factor: float = 1.0
    disc_num_layers: int = 3
    disc_channels: int = 64
    disc_learning_rate: float | None = None
    temporal_decoder: bool = False

    def validate(self) -> None:
        super().validate()
        _check(self.kl_weight >= 0, "kl_weight", "a number >= 0", self.kl_weight)
        _check(self.disc_start >= 0, "disc_start", "an integer >= 0", self.disc_start)
        _check(self.disc_num_layers >= 1, "disc_num_layers", "an integer >= 1", self.disc_num_layers)
        _check(self.disc_channels >= 1, "disc_channels", "an integer >= 1", self.disc_channels)
        _check(
            self.disc_learning_rate is None or self.disc_learning_rate > 0,
            "disc_learning_rate",
            "null or a positive number",
            self.disc_learning_rate,
        )


#: How the latent-space trainers scale the latents (see `_LatentTrainingConfig`).
LATENT_SCALINGS = ("vae", "std")


@dataclass
class _LatentTrainingConfig(TrainingConfig):
    """Attributes shared by the latent-space trainers (denoiser, alignment); both must use the same values for
    their networks to work together in one pipeline.

    Attributes:
        vae: the trained autoencoder folder (frozen).
        extrapolation: when given (`{}` for the defaults), the keyword arguments of a
            [`~prediff.models.MotionExtrapolator`]: the last context frame is advected along the context's motion,
            the denoiser is conditioned on the encoded context *and* the encoded extrapolation, and the diffusion
            models the latent residual `z_future - z_extrapolated`. Null: plain PreDiff (official).
        latent_scaling: "vae" keeps the autoencoder's `scaling_factor` (1.0 in the official presets); "std"
            sets it to one over the standard deviation of the diffusion targets (latents, or residuals with
            `extrapolation`) of the first `latent_scaling_items` training items, as LDM's `scale_by_std`.
        latent_scaling_items: items used by `latent_scaling: std`.
    """

    vae: str | None = None
    extrapolation: dict[str, Any] | None = None
    latent_scaling: str = "vae"
    latent_scaling_items: int = 64

    def validate(self) -> None:
        super().validate()
        _check(
            self.latent_scaling in LATENT_SCALINGS, "latent_scaling", f"one of {LATENT_SCALINGS}", self.latent_scaling
        )
        _check(self.latent_scaling_items >= 1, "latent_scaling_items", "an integer >= 1", self.latent_scaling_items)
        if not self.vae:
            raise ValueError(
                "vae is required: pass the trained autoencoder folder with --vae DIR "
                "(the output_dir of `prediff train vae`, or a pipeline folder with a vae/ subfolder)"
            )
        if not Path(self.vae).exists():
            raise FileNotFoundError(f"vae folder {self.vae!r} does not exist")
        _check(self.data.target_length >= 1, "data.target_length", "an integer >= 1", self.data.target_length)


@dataclass
class DenoiserTrainingConfig(_LatentTrainingConfig):
    """`prediff train denoiser`: the Earthformer-UNet on VAE latents (epsilon MSE, official DDPM schedule).

    Attributes:
        vae: the trained autoencoder folder (frozen during training).
        knowledge_model: an optional trained alignment network folder, included in the exported pipeline.
        learn_logvar: learn a log-variance per diffusion timestep and weight the loss by it (official:
            `loss / exp(logvar[t]) + logvar[t]`); it is not used when sampling.
        logvar_init: initial value of that log-variance.
        validation_scheduler, validation_inference_steps, num_ensemble_members: how validation forecasts are
            drawn; the exported pipeline uses `validation_scheduler` as its scheduler.
        max_intensity_growth: recorded in the exported pipeline: no member exceeds this multiple of the maximum
            of its context's last frame (see [`~prediff.PreDiffPipeline`]); None: no cap.
        intensity_cap_radius_km: recorded with it: each pixel's cap is the maximum within this distance (needs
            data that record their pixel size); None: the maximum of the whole frame.
    """

    knowledge_model: str | None = None
    learn_logvar: bool = True
    logvar_init: float = 0.0
    use_ema: bool = True
    validation_scheduler: str = "dpmsolver++"
    validation_inference_steps: int = 20
    num_ensemble_members: int = 2
    max_intensity_growth: float | None = None
    intensity_cap_radius_km: float | None = None

    def validate(self) -> None:
        super().validate()
        check_intensity_growth(self.max_intensity_growth)
        # The pixel size comes from the data; here only the number is checked (1 km stands for it).
        check_cap_radius(self.intensity_cap_radius_km, pixel_size_km=1.0)
        _check(
            self.intensity_cap_radius_km is None or self.max_intensity_growth is not None,
            "intensity_cap_radius_km",
            "null unless max_intensity_growth is set",
            self.intensity_cap_radius_km,
        )
        if self.knowledge_model is not None and not Path(self.knowledge_model).exists():
            raise FileNotFoundError(f"knowledge_model folder {self.knowledge_model!r} does not exist")
        _check(
            self.validation_inference_steps >= 1,
            "validation_inference_steps",
            "an integer >= 1",
            self.validation_inference_steps,
        )
        _check(
            self.num_ensemble_members >= 1,
            "num_ensemble_members",
            "an integer >= 1",
            self.num_ensemble_members,
        )


#: The losses between the student's and the target's consistency outputs (see `DistillTrainingConfig`).
DISTILL_LOSSES = ("l2", "huber")
#: What the student learns, and the scale its CRPS is taken on (see `DistillTrainingConfig`).
DISTILL_OBJECTIVES = ("consistency", "crps", "imitation")
#: What `student_decoder` may set: the widths and depth of the lighter decoder.
STUDENT_DECODER_KEYS = ("block_out_channels", "layers_per_block")
CRPS_SPACES = ("unit", "physical")


@dataclass
class DistillTrainingConfig(TrainingConfig):
    """`prediff train distill`: a few-step student of a trained PreDiff pipeline, by latent consistency
    distillation, by ensemble CRPS or by imitating a few-step teacher; the result is a `PreDiffPipeline` folder
    sampling with `LCMScheduler` in 1 to 4 steps.

    The student starts from the teacher's denoiser (or, with `student_model`, as a new, smaller network). With
    `objective: consistency` it learns the consistency function of the teacher's probability-flow ODE: for a sample
    noised to `t_n` on a grid of `num_ddim_timesteps` levels, its clean estimate must equal that of the target
    network (the EMA of the student, `ema_decay`) at the point that one DDIM step of the teacher reaches at
    `t_{n-1}`. With `objective: crps` it draws `crps_members` forecasts of every training sequence with the
    exported sampler in `crps_steps` steps, gradients through the whole chain and the decoder, and minimises their
    fair CRPS against the observed frames (`crps_space`): a proper score, so the optimum is a calibrated ensemble,
    not the mean. With `objective: imitation` the teacher must itself be a few-step student (an `LCMScheduler`
    pipeline on the same grid): the student learns the teacher's clean estimate at every level of the
    `imitation_steps`-step sampler, for the same noise and along the teacher's own trajectory, so the same noise
    gives nearly the same member and the ensemble keeps the teacher's spread. That is how a smaller student
    (`student_model`) and a lighter decoder (`student_decoder`) are made. The teacher's encoder, extrapolator,
    knowledge model and latent scaling are reused unchanged.

    Attributes:
        teacher: the teacher pipeline: a folder or the name of a shipped one.
        objective: "consistency", "crps" or "imitation".
        student_model: settings of the student's `EarthformerUNetModel` that differ from the teacher's (e.g.
            `{base_units: 12, num_heads: 1}`): the student is then a new, randomly initialised network of the
            teacher's configuration with these changes, not a copy of the teacher (empty: a copy).
        student_decoder: `{block_out_channels: [...], layers_per_block: n}` of a lighter decoder for the teacher's
            encoder (`objective: imitation` only), exported as Diffusers' `AsymmetricAutoencoderKL`: trained to
            reproduce the teacher's decoding of what the pipeline decodes, the teacher's forecast latents and the
            observed future's, extrapolation included (mean absolute difference, [0, 1] scale), so the latents and
            the encoder stay the teacher's (empty: the teacher's autoencoder).
        imitation_steps: sampler steps the student imitates the teacher over (`objective: imitation`), also the
            exported pipeline's `default_inference_steps`.
        crps_members: members drawn per training sequence (`objective: crps`), at least 2.
        crps_steps: sampler steps the CRPS is trained through (`objective: crps`), also the exported pipeline's
            `default_inference_steps`.
        crps_space: "unit", the networks' [0, 1] scale (dB for rain rate: every intensity counts alike), or
            "physical", the teacher's physical units (mm/h: heavy rain counts most, as in verification).
        crps_pool_sizes: the CRPS is averaged over these scales: 1 is per pixel, `k` the CRPS of the `k x k`
            maxima of members and observation (as `EnsembleCRPS` pools), which rewards a core forecast a few pixels
            off instead of hedging it away. Each must divide the frame size.
        crps_thresholds: for each threshold `u`, in the teacher's physical units (mm/h for rain rate), the loss
            adds the threshold-weighted CRPS of members and observation floored at `u` (the chaining function
            `max(x, u)`), which counts errors above `u` once more: a proper score that weighs heavy rain without
            rewarding a forecast for exceeding the threshold. On the scale of `crps_space`, per pixel.
        num_ddim_timesteps: levels of the ODE grid (1000 / this timesteps per teacher step); also the
            `original_inference_steps` of the exported `LCMScheduler`, whose 1 to 4 steps lie on this grid.
        timestep_scaling: of the boundary conditions `c_skip(t) = 0.25 / ((s t)^2 + 0.25)`,
            `c_out(t) = s t / sqrt((s t)^2 + 0.25)` (LCMScheduler's `timestep_scaling`).
        loss_type: "l2" or "huber" (pseudo-Huber `sqrt(d^2 + c^2) - c`, per latent element).
        latent_cache_items: encode the condition and the target (posterior mean) of this many training items
            once, before training, and train on them only (0: encode every batch, all items). Encoding and
            extrapolating cost as much as the three denoiser calls of a step on a CPU; `data.augment` then flips
            and turns the latents (the autoencoder is convolutional, so nearly what encoding turned frames gives).
        huber_c: `c` of the pseudo-Huber loss, in scaled latent units.
        validation_inference_steps, num_ensemble_members: how validation forecasts are drawn.
    """

    teacher: str = "prediff-storms-tiny"
    objective: str = "consistency"
    crps_members: int = 4
    crps_steps: int = 1
    crps_space: str = "unit"
    crps_pool_sizes: list[int] = field(default_factory=lambda: [1])
    crps_thresholds: list[float] = field(default_factory=list)
    student_model: dict[str, Any] = field(default_factory=dict)
    student_decoder: dict[str, Any] = field(default_factory=dict)
    imitation_steps: int = 2
    num_ddim_timesteps: int = 20
    timestep_scaling: float = 10.0
    loss_type: str = "huber"
    huber_c: float = 0.001
    latent_cache_items: int = 0
    learning_rate: float = 5e-5
    use_ema: bool = True
    ema_decay: float = 0.95
    validation_inference_steps: int = 2
    num_ensemble_members: int = 2

    def validate(self) -> None:
        super().validate()
        from ..pretrained import SHIPPED_PIPELINES

        if self.teacher not in SHIPPED_PIPELINES and not Path(self.teacher).exists():
            raise FileNotFoundError(
                f"teacher {self.teacher!r} is neither a folder nor a shipped pipeline ({', '.join(SHIPPED_PIPELINES)})"
            )
        _check(
            1 <= self.num_ddim_timesteps <= 1000 and 1000 % self.num_ddim_timesteps == 0,
            "num_ddim_timesteps",
            "a divisor of 1000",
            self.num_ddim_timesteps,
        )
        _check(self.timestep_scaling > 0, "timestep_scaling", "a positive number", self.timestep_scaling)
        _check(self.objective in DISTILL_OBJECTIVES, "objective", f"one of {DISTILL_OBJECTIVES}", self.objective)
        _check(self.crps_members >= 2, "crps_members", "an integer >= 2", self.crps_members)
        _check(self.crps_space in CRPS_SPACES, "crps_space", f"one of {CRPS_SPACES}", self.crps_space)
        _check(
            isinstance(self.crps_pool_sizes, (list, tuple))
            and len(self.crps_pool_sizes) > 0
            and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.crps_pool_sizes)
            and len(set(self.crps_pool_sizes)) == len(self.crps_pool_sizes),
            "crps_pool_sizes",
            "a non-empty list of distinct positive integers",
            self.crps_pool_sizes,
        )
        _check(
            isinstance(self.crps_thresholds, (list, tuple))
            and all(
                isinstance(u, (int, float)) and not isinstance(u, bool) and math.isfinite(u)
                for u in self.crps_thresholds
            )
            and len(set(self.crps_thresholds)) == len(self.crps_thresholds),
            "crps_thresholds",
            "a list of distinct finite numbers (physical units)",
            self.crps_thresholds,
        )
        if self.objective == "crps" and self.latent_cache_items:
            raise ValueError(
                "latent_cache_items: objective crps scores decoded frames against the observed ones, so it encodes "
                f"every batch; set latent_cache_items to 0, got {self.latent_cache_items}"
            )
        _check(self.loss_type in DISTILL_LOSSES, "loss_type", f"one of {DISTILL_LOSSES}", self.loss_type)
        _check(self.huber_c > 0, "huber_c", "a positive number", self.huber_c)
        _check(self.latent_cache_items >= 0, "latent_cache_items", "an integer >= 0", self.latent_cache_items)
        self._validate_student()
        for name in ("crps_steps", "imitation_steps", "validation_inference_steps"):  # on the distillation grid
            steps = getattr(self, name)
            _check(
                1 <= steps <= self.num_ddim_timesteps,
                name,
                f"an integer in [1, num_ddim_timesteps={self.num_ddim_timesteps}]",
                steps,
            )
        _check(self.num_ensemble_members >= 1, "num_ensemble_members", "an integer >= 1", self.num_ensemble_members)

    def _validate_student(self) -> None:
        """`student_model` names settings of the denoiser other than its shapes; `student_decoder` gives the widths
        (and at most the depth) of a decoder, for `objective: imitation` only."""
        import inspect

        from ..models.earthformer_unet import EarthformerUNetModel

        _check(isinstance(self.student_model, dict), "student_model", "a mapping", self.student_model)
        settings = set(inspect.signature(EarthformerUNetModel.__init__).parameters)
        settings -= {"self", "input_shape", "target_shape"}
        unknown = sorted(set(self.student_model) - settings)
        if unknown:
            raise ValueError(
                f"student_model: {unknown} are not settings of the student denoiser (its shapes are the teacher's); "
                f"expected some of {sorted(settings)}"
            )
        _check(isinstance(self.student_decoder, dict), "student_decoder", "a mapping", self.student_decoder)
        if not self.student_decoder:
            return
        if self.objective != "imitation":
            raise ValueError(
                "student_decoder: a lighter decoder is trained by objective imitation only, "
                f"got objective {self.objective!r}"
            )
        unknown = sorted(set(self.student_decoder) - set(STUDENT_DECODER_KEYS))
        widths = self.student_decoder.get("block_out_channels")
        if unknown or widths is None:
            raise ValueError(
                "student_decoder: expected block_out_channels and optionally layers_per_block, "
                f"got {sorted(self.student_decoder)}"
            )
        _check(
            isinstance(widths, (list, tuple))
            and len(widths) > 0
            and all(isinstance(w, int) and w >= 1 for w in widths),
            "student_decoder.block_out_channels",
            "a non-empty list of positive integers",
            widths,
        )
        depth = self.student_decoder.get("layers_per_block", 1)
        _check(isinstance(depth, int) and depth >= 0, "student_decoder.layers_per_block", "an integer >= 0", depth)


#: The statistics an alignment network can learn: the per-frame mean intensity (computed from the frames) or
#: the per-frame energy that the data set's items carry (the N-body digits).
ALIGNMENT_STATISTICS = ("avg_intensity", "energy")
#: What an alignment network learns: the statistic of the data or of its autoencoder decoding.
ALIGNMENT_LABELS = ("data", "decoded")


@dataclass
class AlignmentTrainingConfig(_LatentTrainingConfig):
    """`prediff train alignment`: the knowledge-alignment network U_phi.

    It learns, from the noisy target latent `z_t` at a random timestep, a statistic of the clean target:
    `statistic` "avg_intensity" is the per-frame mean over (H, W, C) in [0, 1] units (official); "energy" is the
    per-frame total energy the items of the N-body digits carry (`data.dataset: nbody`), for
    [`~prediff.knowledge.EnergyConservationControl`].

    Five options make the network dependable where knowledge controls lead it (all off by default, as in the
    official recipe):

    Attributes:
        vae: the trained autoencoder folder (frozen).
        statistic: "avg_intensity" or "energy".
        intensity_gain: `[low, high]`: every training sequence is multiplied by a gain drawn log-uniformly from
            that range (then clipped to [0, 1]), so that the intense storms a control steers toward are in the
            training distribution. Null: no gain.
        clean_fraction: the fraction of training rows drawn at timestep 0, the clean latents that the learned
            controls read by default (`network_input="clean"`); the rest get a uniform random timestep.
        labels: what the network learns: "data", the statistic of the target frames (official), or "decoded",
            the statistic of the autoencoder's decoding of the target latents: what a forecast made of those
            latents shows. A learned control steers the forecast, so "decoded" keeps the network from counting
            on intensities the autoencoder cannot render.
        robust_step: for the timestep-0 rows, also train on latents moved along the network's own input
            gradient by a random signed step of root mean square up to `robust_step` (in scaled latent units),
            labelled with the statistic plus the change the autoencoder's decoding of the step makes. A control's
            Gauss-Newton step follows exactly this gradient, so without it the network can be pushed to values
            the decoded forecast does not have. 0: off.
        gradient_weight: for the timestep-0 rows, the weight of a second loss: the squared difference between
            the network's input gradient and the gradient of the decoded statistic, relative to the latter's
            squared norm. A learned control steps along the network's gradient; matched, it moves the forecast
            the way the exact control does. 0: off.
        steered_pipeline: a saved or shipped `PreDiffPipeline` in the same latent space (its autoencoder and
            latent scaling are this run's) whose sampler supplies more timestep-0 rows: every training batch's
            contexts are forecast by it in `steered_steps` steps, one member each, steered by the network being
            trained (`AnticipatedIntensityControl`, method "learned") to the batch's observed mean intensity
            times a gain drawn log-uniformly from `intensity_gain` (1 without it); as many of the clean
            estimates the network read on the way as the batch has rows are drawn and labelled by decoding. A
            few-step sampler's clean estimates are not the autoencoder's encodings, and a control pushes them
            where the network over- or under-predicts; training there, with the network's own steering, removes
            that bias. Null: off. Fine-tune a trained network with `init_weights`.
        steered_steps: the steered pipeline's denoising steps (its own scheduler).
    """

    statistic: str = "avg_intensity"
    intensity_gain: list[float] | None = None
    clean_fraction: float = 0.0
    labels: str = "data"
    robust_step: float = 0.0
    gradient_weight: float = 0.0
    steered_pipeline: str | None = None
    steered_steps: int = 2

    @property
    def label_key(self) -> str | None:
        return "energy" if self.statistic == "energy" else None

    def validate(self) -> None:
        super().validate()
        _check(self.statistic in ALIGNMENT_STATISTICS, "statistic", f"one of {ALIGNMENT_STATISTICS}", self.statistic)
        if self.statistic == "energy":
            frame_only = {"intensity_gain": self.intensity_gain is not None, "labels": self.labels != "data"}
            frame_only |= {"robust_step": self.robust_step > 0, "gradient_weight": self.gradient_weight > 0}
            frame_only |= {"steered_pipeline": self.steered_pipeline is not None}
            used = [name for name, on in frame_only.items() if on]
            if used:
                raise ValueError(
                    f"{', '.join(used)} need a statistic computed from frames; statistic 'energy' comes from the "
                    "data set's items (leave them at their defaults)"
                )
        if self.intensity_gain is not None:
            gain = self.intensity_gain
            _check(
                isinstance(gain, (list, tuple)) and len(gain) == 2 and 0 < gain[0] <= gain[1],
                "intensity_gain",
                "null or [low, high] with 0 < low <= high",
                gain,
            )
        _check(0.0 <= self.clean_fraction <= 1.0, "clean_fraction", "a number in [0, 1]", self.clean_fraction)
        _check(self.labels in ALIGNMENT_LABELS, "labels", f"one of {ALIGNMENT_LABELS}", self.labels)
        _check(self.robust_step >= 0.0, "robust_step", "a number >= 0", self.robust_step)
        _check(self.gradient_weight >= 0.0, "gradient_weight", "a number >= 0", self.gradient_weight)
        _check(
            isinstance(self.steered_steps, int) and self.steered_steps >= 1,
            "steered_steps",
            "an integer >= 1",
            self.steered_steps,
        )


@dataclass
class EarthformerTrainingConfig(TrainingConfig):
    """`prediff train earthformer`: the deterministic Earthformer forecaster, MSE on [0, 1]-scaled frames; the
    result is an `EarthformerPipeline` folder."""

    adam_weight_decay: float = 0.0


CONFIG_CLASSES: dict[str, type[TrainingConfig]] = {
    "vae": VAETrainingConfig,
    "denoiser": DenoiserTrainingConfig,
    "alignment": AlignmentTrainingConfig,
    "earthformer": EarthformerTrainingConfig,
    "distill": DistillTrainingConfig,
}


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
