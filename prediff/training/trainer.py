"""The training loop every component shares, on Accelerate (one CPU, N GPUs or several machines).

[`Trainer`] runs what is the same for all components: the `Accelerator` (mixed precision, gradient accumulation,
distributed data parallel), the deterministic, sharded data order, optimizers and Diffusers learning-rate
schedules, EMA, the progress bar and tensorboard logging. It builds on modules with one job each: the data
splits (`datasets.py`), the networks' arguments (`presets.py`), checkpoints and exact resumption
(`checkpointing.py`), the non-finite loss and gradient guards (`guards.py`), validation pictures (`pictures.py`)
and the export (`exporting.py`). A component's trainer (`train_vae.py`, `train_denoiser.py`, ...) adds its
networks, its loss, its validation and its exported folder.

Reproducibility: every random draw of micro-batch `m` on process `r` (noise, timesteps, posterior samples,
dropout, augmentation) comes from the global torch generator reseeded with `(seed, r, m)`, and the data order
is a function of `(seed, epoch)`. A run killed at any step and resumed from its last checkpoint therefore
repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..utils.units import to_physical
from .checkpointing import TrainerCheckpoints, remove_checkpoint, remove_stale_temporaries
from .config import TrainingConfig
from .config_loading import config_to_dict, save_config
from .datasets import DataScaling, build_datasets, collate_batch, collate_frames
from .exporting import export_into
from .guards import check_finite_loss, clip_and_check_gradients
from .pictures import ValidationPictures
from .presets import merge_model_kwargs
from .utils import ShardedBatchSampler, Throughput, micro_step_seed

__all__ = ["Trainer"]


# Validation batches draw their randomness from micro-step numbers above every training micro-step.
_VALIDATION_STREAM = 2**40


def _flatten_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten_config(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class Trainer(TrainerCheckpoints, ValidationPictures):
    """Base of the component trainers.

    Args:
        config: the validated configuration.
        train_dataset, val_dataset: data sets to use instead of those described by `config.data` (items are
            dicts with `"frames"` `(T, H, W, C)` in [0, 1]).
        scaling: how the explicit data sets' values map to [0, 1] (default: VIL levels 0-255, linear), recorded
            in exported pipelines (see [`~prediff.training.datasets.DataScaling`]).

    Subclasses set `kind` and implement `build`, `compute_losses`, `validation_losses`, `export` and
    optionally `samples_per_item`.
    """

    kind = "model"

    def __init__(
        self,
        config: TrainingConfig,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        scaling: DataScaling | None = None,
    ) -> None:
        config.validate()
        if config.init_weights is not None and self.kind not in ("vae", "denoiser", "alignment"):
            raise ValueError(
                f"init_weights is supported by `prediff train vae`, `denoiser` and `alignment`, not {self.kind!r}"
            )
        self.config = config
        if train_dataset is None:
            self.train_dataset, self.val_dataset, self.scaling = build_datasets(config)
        else:
            self.train_dataset, self.val_dataset = train_dataset, val_dataset
            self.scaling = scaling if scaling is not None else DataScaling()
        self.value_range = tuple(float(v) for v in self.scaling.value_range)
        self.units = self.scaling.units
        if len(self.train_dataset) == 0:
            raise ValueError("the training split is empty; lower data.val_fraction or add data")
        frames = self.train_dataset[0]["frames"]
        if frames.ndim != 4:
            raise ValueError(f"items must hold frames of shape (T, H, W, C), got shape {tuple(frames.shape)}")
        #: `(T, H, W, C)` of one item.
        self.item_shape = tuple(int(s) for s in frames.shape)
        if self.item_shape[0] < config.data.window_length:
            raise ValueError(
                f"items have {self.item_shape[0]} frames, fewer than data.seq_len = {config.data.window_length}"
            )
        if config.data.augment and self.item_shape[1] != self.item_shape[2]:
            raise ValueError(
                f"data.augment rotates frames by quarter turns and needs square frames, got "
                f"{self.item_shape[1]}x{self.item_shape[2]}"
            )
        self.output_dir = Path(config.output_dir)
        self.accelerator: Any = None
        self.tensorboard = False
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.lr_schedulers: dict[str, Any] = {}
        self.ema: Any = None
        self.global_step = 0
        self.last_logs: dict[str, float] = {}
        self.checkpoint_dir: Path | None = None
        # Networks are built here (on the CPU, same seed on every process) so that configuration errors and
        # shapes that do not fit the data surface before any training starts.
        torch.manual_seed(config.seed)
        self.build()

    # ------------------------------------------------------------------ hooks for subclasses

    def initial_network(self, cls: type, subfolder: str) -> torch.nn.Module | None:
        """The network of `config.init_weights` (fine-tuning), trainable; None without it."""
        if self.config.init_weights is None:
            return None
        from ..pretrained import SHIPPED_PIPELINES, shipped_pipeline_path
        from .latent import load_pretrained_component

        source = self.config.init_weights
        if source in SHIPPED_PIPELINES and not Path(source).exists():
            source = shipped_pipeline_path(source)
        return load_pretrained_component(cls, source, subfolder).requires_grad_(True).train()

    def to_physical(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames in [0, 1] -> the data's physical units (the inverse of the data set's scaling)."""
        return to_physical(frames, self.value_range, self.scaling.value_transform)

    def pipeline_scaling(self) -> dict[str, Any]:
        """The data's scaling, grid and clock as pipeline constructor arguments, so that an exported pipeline
        takes and gives the data's physical units."""
        return {
            "value_range": self.value_range,
            "value_transform": self.scaling.value_transform,
            "units": self.units,
            "pixel_size_km": self.scaling.pixel_size_km,
            "frame_interval_minutes": self.scaling.frame_interval_minutes,
        }

    def build(self) -> None:
        """Create the networks; set `self.train_modules` (name -> module trained through DDP),
        `self.checkpoint_models` (name -> module saved in checkpoints), `self.param_groups` (optimizer name ->
        (parameters, learning rate)) and `self.ema_model` (the module averaged with `use_ema`, or None)."""
        raise NotImplementedError

    def compute_losses(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One micro-batch `(B, T, H, W, C)` (and the items' `config.label_key` entries, when the config names
        one) -> (optimizer name -> loss, logs)."""
        raise NotImplementedError

    def validation_losses(self, frames: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def export(self, folder: Path) -> Any:
        """Save the trained result into the empty `folder`; return the saved object (for `push_to_hub`)."""
        raise NotImplementedError

    def samples_per_item(self) -> int:
        return 1

    def move_frozen_to(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move frozen networks (e.g. the autoencoder of latent trainers) to the device."""

    # ------------------------------------------------------------------ shared helpers

    @property
    def device(self) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else torch.device("cpu")

    @property
    def weight_dtype(self) -> torch.dtype:
        mp = self.config.mixed_precision
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mp, torch.float32)

    def autocast(self) -> Any:
        """Accelerate's mixed-precision context during a run; nothing before it (evaluation of a fresh
        network)."""
        return self.accelerator.autocast() if self.accelerator is not None else contextlib.nullcontext()

    def unwrap(self, name: str) -> torch.nn.Module:
        module = self.train_modules[name]
        return self.accelerator.unwrap_model(module) if self.accelerator is not None else module

    def check_model_kwargs(self, cls: Any, kwargs: dict[str, Any], derived: dict[str, Any]) -> dict[str, Any]:
        """Merge the `model` section (optionally a `preset`) with values derived from the data; unknown
        constructor arguments and shapes that contradict the data raise `ValueError`."""
        return merge_model_kwargs(cls, kwargs, derived, self.describe_data())

    def configure_network(self, model: torch.nn.Module) -> None:
        """Apply the configuration's `attention_backend`, `gradient_checkpointing` and `compile` to a freshly
        built cuboid-attention network."""
        cfg = self.config
        if cfg.attention_backend:
            model.set_attention_backend(cfg.attention_backend)
        if cfg.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        if cfg.compile:
            model.compile()

    def describe_data(self) -> str:
        d = self.config.data
        T, H, W, C = self.item_shape
        return f"data.context_length={d.context_length}, data.target_length={d.target_length}, frames {H}x{W}x{C}"

    def describe_training(self) -> str:
        """What the exported result was trained on, for its model card."""
        d = self.config.data
        source = f" ({d.path})" if d.path else f" (num_sequences={d.num_sequences}, seed={d.seed})"
        return (
            f"data.dataset={d.dataset!r}{source}; {d.context_length} context + {d.target_length} target frames; "
            f"{self.global_step} steps"
        )

    def split(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, T, H, W, C)` -> context `(B, T_in, ...)` and target `(B, T_out, ...)` frames."""
        t_in, t_out = self.config.data.context_length, self.config.data.target_length
        return frames[:, :t_in], frames[:, t_in : t_in + t_out]

    def seed_micro_step(self, micro_step: int) -> None:
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        torch.manual_seed(micro_step_seed(self.config.seed, rank, micro_step))

    def augment(self, frames: torch.Tensor) -> torch.Tensor:
        """Random flips / quarter turns per item (identical on all its frames), from the seeded generator."""
        if not self.config.data.augment:
            return frames
        from ..data.augment import flip_rotate

        draws = torch.rand(frames.shape[0], 2)
        turns = torch.randint(0, 4, (frames.shape[0],))
        return torch.stack(
            [flip_rotate(f, bool(d[0] < 0.5), bool(d[1] < 0.5), int(k)) for f, d, k in zip(frames, draws, turns)]
        )

    # ------------------------------------------------------------------ the run

    def _make_accelerator(self) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, is_tensorboard_available

        cfg = self.config
        log_with = None
        if cfg.report_to == "tensorboard":
            if is_tensorboard_available():
                log_with = "tensorboard"
            else:
                warnings.warn(
                    'tensorboard logging is skipped: tensorboard is not installed (pip install "prediff[train]")',
                    stacklevel=2,
                )
        project = ProjectConfiguration(
            project_dir=str(self.output_dir), logging_dir=str(self.output_dir / cfg.logging_dir)
        )
        accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with=log_with,
            project_config=project,
        )
        self.tensorboard = log_with is not None and accelerator.is_main_process
        return accelerator

    def _data_loader(
        self, start_batch: int
    ) -> tuple[ShardedBatchSampler, Iterator[tuple[torch.Tensor, torch.Tensor | None]]]:
        acc = self.accelerator
        sampler = ShardedBatchSampler(
            len(self.train_dataset),
            self.config.train_batch_size,
            num_replicas=acc.num_processes,
            rank=acc.process_index,
            seed=self.config.seed,
            start_batch=start_batch,
        )
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=functools.partial(collate_batch, label_key=self.config.label_key),
            num_workers=self.config.data.num_workers,
            pin_memory=acc.device.type == "cuda",
            persistent_workers=self.config.data.num_workers > 0,
        )
        return sampler, iter(loader)

    def _max_steps(self, sampler: ShardedBatchSampler) -> int:
        cfg = self.config
        if cfg.max_train_steps is not None:
            return cfg.max_train_steps
        return cfg.num_train_epochs * math.ceil(sampler.batches_per_epoch / cfg.gradient_accumulation_steps)

    def _make_optimizers(self, max_steps: int) -> None:
        from diffusers.optimization import get_scheduler

        cfg = self.config
        total_batch = cfg.train_batch_size * cfg.gradient_accumulation_steps * self.accelerator.num_processes
        for name, (params, lr) in self.param_groups.items():
            lr = lr * total_batch if cfg.scale_lr else lr
            opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
            optimizer = opt_cls(
                params,
                lr=lr,
                betas=(cfg.adam_beta1, cfg.adam_beta2),
                weight_decay=cfg.adam_weight_decay,
                eps=cfg.adam_epsilon,
            )
            self.optimizers[name] = optimizer
            # Stepped once per optimizer step by this loop (not prepared: Accelerate would step it once per
            # process), so warmup and length are in optimizer steps whatever the number of processes.
            self.lr_schedulers[name] = get_scheduler(
                cfg.lr_scheduler,
                optimizer,
                num_warmup_steps=cfg.lr_warmup_steps,
                num_training_steps=max_steps,
                num_cycles=cfg.lr_num_cycles,
                power=cfg.lr_power,
            )

    def _on_main_process(self, action: Callable[[], Any], what: str) -> Any:
        """Run `action` on the main process only and return its result there (None elsewhere).

        Every process then learns whether it succeeded, through a collective that also serves as the barrier:
        if it raised, the main process raises its error and the others stop with one naming `what`, instead of
        waiting forever at a barrier the main process never reaches.
        """
        acc = self.accelerator
        result, failure = None, None
        if acc.is_main_process:
            try:
                result = action()
            except Exception as error:
                failure = error
        failed = torch.tensor([float(failure is not None)], device=acc.device)
        if acc.num_processes > 1:
            failed = acc.reduce(failed, reduction="sum")
        if failure is not None:
            raise failure
        if failed.item() > 0:
            raise RuntimeError(f"the main process failed while {what} (its error says why); this process stops too")
        return result

    def _check_finite(self, losses: dict[str, torch.Tensor], micro_step: int) -> float:
        """Sum the losses across processes; stop every process if any is NaN or infinite."""
        return check_finite_loss(self.accelerator, losses, self.global_step + 1, micro_step, self._where_to_resume)

    def _clip_and_check_gradients(self, micro_step: int) -> dict[str, float]:
        """Before an optimizer step: the global gradient norm of every optimizer's parameters, clipped to
        `max_grad_norm` when it is set. Stops every process, before any optimizer steps, if a norm is NaN or
        infinite. Returns the norms (name -> norm before clipping)."""
        cfg = self.config
        return clip_and_check_gradients(
            self.accelerator,
            self.optimizers,
            cfg.max_grad_norm,
            cfg.mixed_precision,
            self.global_step + 1,
            micro_step,
            self._where_to_resume,
        )

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """Validation loss over `num_validation_batches` (fixed draws, the same at every call) and pictures;
        main process only. Before `train()` it evaluates the freshly built networks on the CPU."""
        cfg = self.config
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return {}
        modules = [self.unwrap(n) for n in self.train_modules]
        training = [m.training for m in modules]
        for m in modules:
            m.eval()
        ema_ctx = self._ema_weights() if self.ema is not None else contextlib.nullcontext()
        logs: dict[str, float] = {}
        try:
            with ema_ctx:
                collate = functools.partial(collate_batch, label_key=cfg.label_key)
                loader = DataLoader(self.val_dataset, batch_size=cfg.train_batch_size, collate_fn=collate)
                sums: dict[str, float] = {}
                count = 0
                for i, (frames, labels) in enumerate(loader):
                    if i >= cfg.num_validation_batches:
                        break
                    torch.manual_seed(micro_step_seed(cfg.seed, 0, _VALIDATION_STREAM + i))
                    labels = None if labels is None else labels.to(self.device)
                    with self.autocast():
                        values = self.validation_losses(frames.to(self.device), labels)
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                logs = {f"val/{k}": v / max(count, 1) for k, v in sums.items()}
                n = min(cfg.num_validation_samples, len(self.val_dataset))
                if n:
                    torch.manual_seed(micro_step_seed(cfg.seed, 0, _VALIDATION_STREAM - 1))
                    frames = collate_frames([self.val_dataset[i] for i in range(n)]).to(self.device)
                    extra = self.validation_forecasts(frames, step)
                    logs.update({f"val/{k}": float(v) for k, v in (extra or {}).items()})
        finally:
            for m, t in zip(modules, training):
                m.train(t)
        return logs

    def validation_forecasts(self, frames: torch.Tensor, step: int) -> dict[str, float] | None:
        """Forecast / reconstruct a few validation items, log pictures, return extra metrics."""
        return None

    @contextlib.contextmanager
    def _ema_weights(self) -> Iterator[None]:
        params = list(self.ema_model().parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def ema_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def train(self) -> Path:
        """Run the training; returns `output_dir`, which then holds the exported result."""
        cfg = self.config
        acc = self._make_accelerator()
        self.accelerator = acc
        if cfg.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # What can only be checked with the number of processes (the global batch) or on disk (the checkpoint
        # to resume from) is checked before anything is written.
        sampler_probe = ShardedBatchSampler(
            len(self.train_dataset), cfg.train_batch_size, acc.num_processes, acc.process_index, cfg.seed
        )
        resume_path = self._checkpoint_to_resume()
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.output_dir)
            if cfg.overwrite:
                for checkpoint in self._other_runs_checkpoints(resume_path):
                    remove_checkpoint(checkpoint)
            save_config(cfg, self.output_dir / "training_config.yaml")
        acc.wait_for_everyone()

        names = list(self.train_modules)
        for name in names:
            module = self.train_modules[name]
            module.train()
        self.move_frozen_to(acc.device, self.weight_dtype)
        max_steps = self._max_steps(sampler_probe)
        self._make_optimizers(max_steps)
        prepared = acc.prepare(*[self.train_modules[n] for n in names], *self.optimizers.values())
        if not isinstance(prepared, (list, tuple)):
            prepared = [prepared]
        for i, name in enumerate(names):
            self.train_modules[name] = prepared[i]
        for j, name in enumerate(list(self.optimizers)):
            self.optimizers[name] = prepared[len(names) + j]
        if cfg.use_ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.ema_model().parameters(), decay=cfg.ema_decay)
            self.ema.to(acc.device)

        start_micro = self._resume(resume_path)
        self.sampler, batches = self._data_loader(start_micro)
        acc.init_trackers(f"prediff-{self.kind}", config=_flatten_config(config_to_dict(cfg)))

        from tqdm.auto import tqdm

        accum = cfg.gradient_accumulation_steps
        samples_per_step = cfg.train_batch_size * accum * acc.num_processes * self.samples_per_item()
        bar = tqdm(
            total=max_steps,
            initial=self.global_step,
            desc=f"train {self.kind}",
            disable=not acc.is_local_main_process,
            dynamic_ncols=True,
        )
        speed = Throughput()
        speed.update(0)
        micro = start_micro
        modules = [self.train_modules[n] for n in names]
        running = 0.0
        while self.global_step < max_steps:
            frames, labels = next(batches)
            self.seed_micro_step(micro)
            frames = self.augment(frames).to(acc.device, non_blocking=True)
            labels = None if labels is None else labels.to(acc.device, non_blocking=True)
            with acc.accumulate(*modules):
                losses, logs = self.compute_losses(frames, labels)
                loss_value = self._check_finite(losses, micro)
                acc.backward(sum(losses.values()))
                if acc.sync_gradients:
                    grad_norms = self._clip_and_check_gradients(micro)
                for opt in self.optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            micro += 1
            running += loss_value / accum
            if not acc.sync_gradients:
                continue
            self.global_step += 1
            for name, opt in self.optimizers.items():
                if not getattr(opt, "step_was_skipped", False):
                    self.lr_schedulers[name].step()
            if self.ema is not None:
                self.ema.step(self.ema_model().parameters())
            speed.update(samples_per_step)
            lr = next(iter(self.lr_schedulers.values())).get_last_lr()[0]
            step_logs = {"train/loss": running, "train/lr": lr}
            step_logs.update({f"train/{k}": float(v) for k, v in logs.items()})
            step_logs.update({f"train/grad_norm_{name}": norm for name, norm in grad_norms.items()})
            running = 0.0
            self.last_logs = step_logs
            acc.log(step_logs, step=self.global_step)
            bar.update(1)
            bar.set_postfix(loss=f"{step_logs['train/loss']:.4g}", lr=f"{lr:.2e}", samples_s=f"{speed.value:.1f}")
            if self.global_step % cfg.checkpointing_steps == 0 or self.global_step == max_steps:
                self.save_checkpoint(micro)
            if cfg.validation_steps and self.global_step % cfg.validation_steps == 0 and self.global_step < max_steps:
                self._validate_and_log()
        bar.close()
        self.samples_per_second = speed.value
        self._validate_and_log()
        self._on_main_process(self._export, "exporting the trained result")
        del modules, prepared
        self._release_wrappers()
        acc.end_training()
        return self.output_dir

    def _release_wrappers(self) -> None:
        """Drop the DDP wrappers (the trained modules stay, unwrapped) before the process group is destroyed.

        A DDP reducer holds the process group. If a reducer is the last holder, the group is destroyed when the
        reducer is freed at interpreter exit, with the GIL held; a gloo worker thread still freeing a finished
        collective's tensors then waits for the GIL while holding the lock the destructor waits for, and the
        process hangs (pytorch/pytorch#56297; one 2-process CPU run in 8 here). Freed first, the group dies in
        `end_training`'s `destroy_process_group`, which releases the GIL.
        """
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        self.train_modules = {name: self.unwrap(name) for name in self.train_modules}
        acc.free_memory()
        gc.collect()  # the wrappers may sit in reference cycles

    def _validate_and_log(self) -> None:
        self._on_main_process(self._validate_and_log_on_main, f"validating at step {self.global_step}")

    def _validate_and_log_on_main(self) -> None:
        acc = self.accelerator
        logs = self.validate(self.global_step)
        if logs:
            acc.log(logs, step=self.global_step)
            self.last_logs.update(logs)
            acc.print(f"step {self.global_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(logs.items())))

    def _export(self) -> None:
        def write(folder: Path) -> Any:
            with self._ema_weights() if self.ema is not None else contextlib.nullcontext():
                return self.export(folder)

        saved = export_into(self.output_dir, write)
        self.accelerator.print(f"saved the trained {self.kind} to {self.output_dir}")
        if self.config.push_to_hub:
            url = saved.push_to_hub(self.config.hub_model_id, private=self.config.hub_private)
            self.accelerator.print(f"uploaded to {url}")
