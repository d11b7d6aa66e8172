"""Checkpoints of a training run: when the trainer writes them, what it puts in them (networks, optimizer,
learning-rate schedule, EMA and grad-scaler states, data position), which one it resumes from and how.

A checkpoint is written by the main process alone, atomically, every `checkpointing_steps` optimizer steps. Before a
run writes anything, the checkpoint to resume from is checked to exist, be complete, come from the same command
and hold every state the run needs; a new run refuses to start among the checkpoints of another one unless
`overwrite` deletes them. A resumed run continues at the exact micro-batch where its checkpoint was taken.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from .config_loading import config_to_dict
from .utils import find_checkpoint, list_checkpoints, load_checkpoint, read_training_state, save_checkpoint

__all__ = ["TrainerCheckpoints"]


class TrainerCheckpoints:
    """The checkpoints of a [`Trainer`], which provides the attributes annotated here, `unwrap` and
    `_on_main_process`."""

    kind: str
    config: Any
    output_dir: Path
    accelerator: Any
    optimizers: dict[str, torch.optim.Optimizer]
    lr_schedulers: dict[str, Any]
    param_groups: dict[str, Any]
    ema: Any
    global_step: int
    checkpoint_dir: Path | None
    sampler: Any
    train_modules: dict[str, torch.nn.Module]

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        """The networks a checkpoint holds, by name (default: every trained module, unwrapped)."""
        return {name: self.unwrap(name) for name in self.train_modules}

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

    def _where_to_resume(self) -> str:
        """The end of a stop message: which checkpoint is kept and how to go on from it."""
        last = list_checkpoints(self.output_dir)
        if last:
            return f"the last good checkpoint is {last[-1]}; resume with --resume_from_checkpoint latest"
        return "no checkpoint was saved yet; start again"
