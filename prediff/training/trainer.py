"""The training loop every component shares, on Accelerate (one CPU, N GPUs or several machines).

[`Trainer`] owns what is the same for all components: data sets and their deterministic, sharded order;
the `Accelerator` (mixed precision, gradient accumulation, distributed data parallel); optimizers and
Diffusers learning-rate schedules; EMA; atomic checkpoints and exact resumption; the non-finite loss and
gradient guards; the progress bar; tensorboard logging; validation pictures; the export and the Hub upload.
A component's trainer (`train_vae.py`, `train_denoiser.py`, ...) adds its networks, its loss, its validation
and its exported folder.

Reproducibility: every random draw of micro-batch `m` on process `r` (noise, timesteps, posterior samples,
dropout, augmentation) comes from the global torch generator reseeded with `(seed, r, m)`, and the data order
is a function of `(seed, epoch)`. A run killed at any step and resumed from its last checkpoint therefore
repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.utils import give_plain_permissions
from .config import TrainingConfig
from .config_loading import config_to_dict, save_config, unknown_key_error
from .utils import (
    EXPORT_PREFIX,
    NonFiniteGradientError,
    NonFiniteLossError,
    ShardedBatchSampler,
    Throughput,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    micro_step_seed,
    move_into,
    read_training_state,
    remove_stale_temporaries,
    save_checkpoint,
)

__all__ = ["Trainer", "build_datasets", "collate_frames"]


# Validation batches draw their randomness from micro-step numbers above every training micro-step.
_VALIDATION_STREAM = 2**40


class _InMemory(Dataset):
    """Every item's frames decoded once and kept as one tensor."""

    def __init__(self, dataset: Dataset) -> None:
        from tqdm.auto import tqdm

        self.frames = torch.stack(
            [dataset[i]["frames"] for i in tqdm(range(len(dataset)), desc="caching data", leave=False)]
        )

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"frames": self.frames[index], "index": index}


def build_datasets(config: TrainingConfig) -> tuple[Dataset, Dataset | None, tuple[float, float], str | None]:
    """The training and validation splits described by `config.data`, the data's physical value range (the
    values of 0 and 1) and its units when they are known."""
    d = config.data
    seq_len = d.window_length
    if d.dataset == "storms":
        from ..data import SyntheticStormDataset

        full = SyntheticStormDataset(d.num_sequences, seq_len, height=d.height, width=d.width, seed=d.seed)
    elif d.dataset == "sevir":
        from ..data import SEVIRDataset

        full = SEVIRDataset(
            d.path,
            seq_len=seq_len,
            stride=d.stride or seq_len,
            img_type=d.img_type,
            start_date=d.start_date,
            end_date=d.end_date,
        )
    else:
        from ..data import ArraySequenceDataset

        full = ArraySequenceDataset.from_file(d.path, seq_len=seq_len, key=d.key, stride=d.stride)
    value_range = tuple(float(v) for v in full.value_range)
    units = getattr(full, "units", None)
    if d.dataset == "sevir" and d.img_type == "vil":
        from ..data.storms import VIL_UNITS

        units = VIL_UNITS
    elif d.dataset == "file":
        from ..data.io import SequenceFile

        units = SequenceFile(d.path).metadata.get("units")
    n = len(full)
    if n == 0:
        raise ValueError(f"data set {d.dataset!r} ({d.path or 'generated'}) holds no window of seq_len={seq_len}")
    num_val = int(round(n * d.val_fraction))
    if d.val_fraction > 0 and num_val == 0 and n > 1:
        num_val = 1
    order = torch.randperm(n, generator=torch.Generator().manual_seed(d.split_seed)).tolist()
    train: Dataset = Subset(full, sorted(order[num_val:]))
    val: Dataset | None = Subset(full, sorted(order[:num_val])) if num_val else None
    if d.cache_in_memory:
        train = _InMemory(train)
        val = _InMemory(val) if val is not None else None
    return train, val, value_range, units


def collate_frames(items: list[dict[str, Any]]) -> torch.Tensor:
    """Stack the items' `"frames"` into `(B, T, H, W, C)`."""
    return torch.stack([item["frames"] for item in items])


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


class Trainer:
    """Base of the component trainers.

    Args:
        config: the validated configuration.
        train_dataset, val_dataset: data sets to use instead of those described by `config.data` (items are
            dicts with `"frames"` `(T, H, W, C)` in [0, 1]).
        value_range: physical values of 0 and 1 (with explicit data sets; default `(0, 255)`).
        units: what the physical values are (with explicit data sets; recorded in exported pipelines).

    Subclasses set `kind` and implement `build`, `compute_losses`, `validation_losses`, `export` and
    optionally `samples_per_item`.
    """

    kind = "model"

    def __init__(
        self,
        config: TrainingConfig,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        value_range: tuple[float, float] | None = None,
        units: str | None = None,
    ) -> None:
        config.validate()
        self.config = config
        if train_dataset is None:
            self.train_dataset, self.val_dataset, self.value_range, self.units = build_datasets(config)
        else:
            self.train_dataset, self.val_dataset = train_dataset, val_dataset
            self.value_range = tuple(value_range) if value_range is not None else (0.0, 255.0)
            self.units = units
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

    def build(self) -> None:
        """Create the networks; set `self.train_modules` (name -> module trained through DDP),
        `self.checkpoint_models` (name -> module saved in checkpoints), `self.param_groups` (optimizer name ->
        (parameters, learning rate)) and `self.ema_model` (the module averaged with `use_ema`, or None)."""
        raise NotImplementedError

    def compute_losses(self, frames: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One micro-batch `(B, T, H, W, C)` -> (optimizer name -> loss, logs)."""
        raise NotImplementedError

    def validation_losses(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
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
        import inspect

        kwargs = dict(kwargs)
        preset = kwargs.pop("preset", None)
        base: dict[str, Any] = {}
        if preset is not None:
            presets = getattr(cls, "presets", {})
            if preset not in presets:
                raise ValueError(
                    f"unknown model.preset {preset!r} for {cls.__name__}; expected one of {sorted(presets)}"
                )
            base = dict(presets[preset])
        params = inspect.signature(cls.__init__).parameters
        for key in kwargs:
            if key not in params or key == "self":
                known = ["preset", *(p for p in params if p not in ("self", "args", "kwargs"))]
                raise unknown_key_error("model.", key, known, owner=cls.__name__)
        merged = {**base, **kwargs}
        for key, value in derived.items():
            if key in merged and _as_tuple(merged[key]) != _as_tuple(value):
                raise ValueError(
                    f"model.{key} = {_as_tuple(merged[key])} does not fit the data, which gives {key} = "
                    f"{_as_tuple(value)} ({self.describe_data()})"
                )
            merged[key] = value
        return merged

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

    def picture_path(self, tag: str, step: int) -> Path:
        """Where the validation picture `tag` of `step` is written (PNG under `validation/`)."""
        folder = self.output_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{tag.replace('/', '_')}-{step:07d}.png"

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """Send a matplotlib figure (already written under `validation/`) to tensorboard when it is on."""
        if self.tensorboard:
            figure.canvas.draw()
            image = np.asarray(figure.canvas.buffer_rgba())[..., :3]
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image(tag, image, step, dataformats="HWC")

    def plotting_available(self) -> bool:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            if not getattr(self, "_warned_plot", False):
                warnings.warn(
                    'validation pictures are skipped: matplotlib is not installed (pip install "prediff[plot]")',
                    stacklevel=2,
                )
                self._warned_plot = True
            return False
        return True

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

    def _data_loader(self, start_batch: int) -> tuple[ShardedBatchSampler, Iterator[torch.Tensor]]:
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
            collate_fn=collate_frames,
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

    def _state_dicts(self) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for name, opt in self.optimizers.items():
            states[f"{name}.optimizer"] = opt.state_dict()
            states[f"{name}.lr_scheduler"] = {
                k: v for k, v in self.lr_schedulers[name].state_dict().items() if k != "lr_lambdas"
            }
        if self.ema is not None:
            states["ema"] = self.ema.state_dict()
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:
            states["grad_scaler"] = scaler.state_dict()
        return states

    def save_checkpoint(self, micro_step: int) -> Path | None:
        """Write `checkpoint-{step}` (main process only) and wait for every process; if the main process fails
        (a full disk), every process stops with an error."""
        return self._on_main_process(
            lambda: self._write_checkpoint(micro_step), f"saving checkpoint-{self.global_step}"
        )

    def _write_checkpoint(self, micro_step: int) -> Path:
        acc = self.accelerator
        epoch, inner = self.sampler.position(micro_step)
        training_state = {
            "kind": self.kind,
            "micro_step": micro_step,
            "epoch": epoch,
            "batch_in_epoch": inner,
            "seed": self.config.seed,
            "num_processes": acc.num_processes,
            "train_batch_size": self.config.train_batch_size,
            "gradient_accumulation_steps": self.config.gradient_accumulation_steps,
            "config": config_to_dict(self.config),
        }
        self.checkpoint_dir = save_checkpoint(
            self.output_dir,
            self.global_step,
            self.checkpoint_models(),
            self._state_dicts(),
            training_state,
            total_limit=self.config.checkpoints_total_limit,
        )
        return self.checkpoint_dir

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

    def _checkpoint_to_resume(self) -> Path | None:
        """The checkpoint named by `resume_from_checkpoint` (None: start a new run), checked against this run
        before anything is written: it must exist, be complete, come from this command and hold the optimizer
        states, and the EMA weights when `use_ema` is on. A new run must not start among the checkpoints of
        another run (rotation would delete its own newest checkpoint and `latest` would resume the other run)
        unless `overwrite` deletes them."""
        cfg = self.config
        path = find_checkpoint(self.output_dir, cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
        others = self._other_runs_checkpoints(path)
        if others and not cfg.overwrite:
            raise ValueError(
                f"output_dir {self.output_dir} holds the checkpoints of another run ({others[-1].name} and "
                f"{len(others) - 1} more); resume it with --resume_from_checkpoint latest, pass --overwrite to "
                "delete them, or choose another output_dir"
            )
        if path is None:
            if cfg.resume_from_checkpoint:
                self.accelerator.print(f"no checkpoint in {self.output_dir} yet; starting a new run")
            return None
        kind = read_training_state(path).get("kind")
        if kind != self.kind:
            raise ValueError(f"checkpoint {path} is from `train {kind}`, not `train {self.kind}`")
        states = [f"{name}.{state}.json" for name in self.param_groups for state in ("optimizer", "lr_scheduler")]
        missing = [name for name in states if not (path / name).is_file()]
        if missing:
            raise ValueError(
                f"checkpoint {path} cannot be resumed: it lacks {', '.join(missing)} (the optimizer state); "
                "its weights alone load with from_pretrained"
            )
        if cfg.use_ema and not (path / "ema.json").is_file():
            raise ValueError(f"use_ema is on but checkpoint {path} holds no EMA state")
        return path

    def _other_runs_checkpoints(self, resume_path: Path | None) -> list[Path]:
        """The checkpoints in `output_dir` unless the run resumes from one of them."""
        found = list_checkpoints(self.output_dir)
        if resume_path is not None and resume_path.resolve().parent == self.output_dir.resolve():
            return []
        return found

    def _resume(self, path: Path | None) -> int:
        """Load the checkpoint `path` (from `_checkpoint_to_resume`); returns the micro-step to continue from."""
        if path is None:
            return 0
        cfg, acc = self.config, self.accelerator
        names = [f"{n}.optimizer" for n in self.optimizers] + [f"{n}.lr_scheduler" for n in self.optimizers]
        names += ["ema", "grad_scaler"]
        states, tstate = load_checkpoint(path, self.checkpoint_models(), names)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(states[f"{name}.optimizer"])
            self.lr_schedulers[name].load_state_dict(
                {**states[f"{name}.lr_scheduler"], "lr_lambdas": [None] * len(opt.param_groups)}
            )
        if self.ema is not None:
            self.ema.load_state_dict(states["ema"])
            self.ema.to(self.device)
        scaler = getattr(acc, "scaler", None)
        if scaler is not None and "grad_scaler" in states:
            scaler.load_state_dict(states["grad_scaler"])
        same_batch = (
            tstate["num_processes"],
            tstate["train_batch_size"],
            tstate["gradient_accumulation_steps"],
        ) == (
            acc.num_processes,
            cfg.train_batch_size,
            cfg.gradient_accumulation_steps,
        )
        if not same_batch:
            warnings.warn(
                f"resuming {path} with a different (num_processes, train_batch_size, "
                f"gradient_accumulation_steps)"
                f" than it was saved with ({tstate['num_processes']}, {tstate['train_batch_size']}, "
                f"{tstate['gradient_accumulation_steps']}); the data order differs from the original run",
                stacklevel=2,
            )
        self.global_step = int(tstate["step"])
        acc.print(f"resumed from {path} at step {self.global_step}")
        return self.global_step * cfg.gradient_accumulation_steps

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        return {name: self.unwrap(name) for name in self.train_modules}

    def _where_to_resume(self) -> str:
        """The end of a stop message: which checkpoint is kept and how to go on from it."""
        last = list_checkpoints(self.output_dir)
        if last:
            return f"the last good checkpoint is {last[-1]}; resume with --resume_from_checkpoint latest"
        return "no checkpoint was saved yet; start again"

    def _check_finite(self, losses: dict[str, torch.Tensor], micro_step: int) -> float:
        """Sum the losses across processes; stop every process if any is NaN or infinite."""
        acc = self.accelerator
        total = sum(loss.detach().float() for loss in losses.values())
        bad = (~torch.isfinite(total)).float()
        stats = torch.stack([torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0), bad])
        if acc.num_processes > 1:
            stats = acc.reduce(stats, reduction="sum")
        if stats[1].item() > 0:
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLossError(
                f"the loss became NaN or infinite at step {self.global_step + 1} (micro-batch {micro_step}, "
                f"losses on process {acc.process_index}: {values}); training stopped without saving. "
                f"{self._where_to_resume()}, e.g. with a lower learning_rate, max_grad_norm or mixed_precision "
                f"'no', and check the data for NaN values"
            )
        return float(stats[0].item()) / acc.num_processes

    def _clip_and_check_gradients(self, micro_step: int) -> dict[str, float]:
        """Before an optimizer step: the global gradient norm of every optimizer's parameters, clipped to
        `max_grad_norm` when it is set. Stops every process, before any optimizer steps, if a norm is NaN or
        infinite. Returns the norms (name -> norm before clipping)."""
        from accelerate.utils import DistributedType

        acc, cfg = self.accelerator, self.config
        scaler = getattr(acc, "scaler", None)
        # Accelerate measures and clips sharded gradients as a whole (FSDP, DeepSpeed; under DeepSpeed its own
        # step clips, to the config's gradient_clipping). With fp16 under DDP the gradients still carry the
        # loss scale, which the grad scaler divides out in each optimizer's step; they cannot be unscaled here
        # (its update() after the first optimizer's step would unscale the second one twice), so the bound and
        # the norm are scaled instead, which is the same clip.
        by_accelerate = scaler is None or acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        clip = acc.clip_grad_norm_ if by_accelerate else torch.nn.utils.clip_grad_norm_
        scale = 1.0 if by_accelerate else scaler.get_scale()
        # Without max_grad_norm the bound is infinite: the call only measures the norm.
        max_norm = cfg.max_grad_norm * scale if cfg.max_grad_norm is not None else math.inf
        values = {}
        for name, opt in self.optimizers.items():
            params = [p for group in opt.param_groups for p in group["params"]]
            norm = clip(params, max_norm)
            # DeepSpeed knows the norm only after its step, where it also skips non-finite gradients itself.
            if norm is not None:
                values[name] = float(norm) / scale
        bad = torch.tensor([float(not all(math.isfinite(v) for v in values.values()))], device=acc.device)
        if acc.num_processes > 1:
            bad = acc.reduce(bad, reduction="sum")
        # fp16's gradient scaler expects overflows: it skips that step itself and lowers the loss scale.
        if bad.item() > 0 and scaler is None:
            cause = ""
            if acc.device.type == "cpu" and cfg.mixed_precision == "bf16":
                cause = (
                    "mixed_precision 'bf16' on the CPU is the likely cause: PyTorch's oneDNN bf16 Conv3d backward "
                    "intermittently returns NaN weight gradients for small layers (the tiny alignment recipe hits "
                    "it within a few steps); on the CPU use mixed_precision 'no'. "
                )
            raise NonFiniteGradientError(
                f"the gradients became NaN or infinite at step {self.global_step + 1} (micro-batch "
                f"{micro_step}, gradient norms on process {acc.process_index}: {values}) although the loss was "
                f"finite; training stopped before the optimizer step, without saving. {cause}"
                f"{self._where_to_resume()}, e.g. with a lower learning_rate or mixed_precision 'no'"
            )
        return values

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
                loader = DataLoader(self.val_dataset, batch_size=cfg.train_batch_size, collate_fn=collate_frames)
                sums: dict[str, float] = {}
                count = 0
                for i, frames in enumerate(loader):
                    if i >= cfg.num_validation_batches:
                        break
                    torch.manual_seed(micro_step_seed(cfg.seed, 0, _VALIDATION_STREAM + i))
                    with self.autocast():
                        values = self.validation_losses(frames.to(self.device))
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
                    shutil.rmtree(checkpoint)
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
            frames = next(batches)
            self.seed_micro_step(micro)
            frames = self.augment(frames).to(acc.device, non_blocking=True)
            with acc.accumulate(*modules):
                losses, logs = self.compute_losses(frames)
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
        acc.end_training()
        return self.output_dir

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
        tmp = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX, suffix=".tmp", dir=self.output_dir))
        try:
            ema_ctx = self._ema_weights() if self.ema is not None else contextlib.nullcontext()
            with ema_ctx:
                saved = self.export(tmp)
            give_plain_permissions(tmp)
            move_into(tmp, self.output_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.accelerator.print(f"saved the trained {self.kind} to {self.output_dir}")
        if self.config.push_to_hub:
            url = saved.push_to_hub(self.config.hub_model_id, private=self.config.hub_private)
            self.accelerator.print(f"uploaded to {url}")


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
