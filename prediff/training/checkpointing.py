"""Checkpoints of a training run, in one place: the folder format (atomic, without pickle) and the trainer's use
of it (when it writes one, what it puts in it, which one it resumes from and how).

A checkpoint is a folder `checkpoint-{step}` holding safetensors weights and JSON state:

- `{name}/` for networks (`save_pretrained`, loadable on their own), `{name}.safetensors` for other modules;
- `{name}.optimizer.safetensors` + `.json`: the optimizer state (tensors and the rest);
- `{name}.lr_scheduler.json`, `ema.safetensors` + `ema.json`, `grad_scaler.json`;
- `training_state.json`, written last: step, data position, seed and the configuration.

It is written into a hidden temporary folder next to it, flushed to the disk and moved into place with
`os.replace` (`prediff.utils.files.atomic_output`), so a crash or a power cut while saving leaves every earlier
checkpoint intact and never leaves a half-written `checkpoint-{step}`; it gets the permissions of a plain `mkdir`
under the umask. A checkpoint rotated away is renamed out of sight before its files are deleted, so `latest` only
ever finds complete ones (tests/training/test_kill_resume.py kills a run in the middle of each of these writes).
Loading reads only safetensors and JSON, so it never executes code.

[`TrainerCheckpoints`] writes one from the main process alone every `checkpointing_steps` optimizer steps. Before a
run writes anything, the checkpoint to resume from is checked to exist, be complete, come from the same command
and hold every state the run needs; a new run refuses to start among the checkpoints of another one unless
`overwrite` deletes them. A resumed run continues at the exact micro-batch where its checkpoint was taken.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..utils.faults import fault_point
from ..utils.files import atomic_output, file_read_error, fsync_tree, move_aside
from .config_loading import config_to_dict
from .exporting import EXPORT_PREFIX, finish_interrupted_exports

__all__ = [
    "CHECKPOINT_PREFIX",
    "TrainerCheckpoints",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_state",
    "read_training_state",
    "remove_checkpoint",
    "remove_stale_temporaries",
    "rotate_checkpoints",
    "save_checkpoint",
    "save_state",
]

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


# ---------------------------------------------------------------------------------------------- files


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- state dicts


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a `{"__tensor__": key}` marker, collecting them."""
    if isinstance(obj, torch.Tensor):
        key = prefix.strip(".")
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # Tensors are named by their path of keys, e.g. "state.3.exp_avg" or "shadow_params.0".
        return {
            "__dict__": [
                [_split_tensors(k, f"{prefix}.key{i}", tensors), _split_tensors(v, f"{prefix}.{k}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, (list, tuple)):
        items = [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, (np.integer, np.floating)):
        return _split_tensors(obj.item(), prefix, tensors)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix.strip('.')})")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join_tensors(k, tensors): _join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        raise ValueError(f"unexpected entry {obj!r} in a checkpoint")
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save_state(folder: Path, name: str, state: Any) -> None:
    """Store a nested state (optimizer, EMA, ...) as `{name}.safetensors` (its tensors) + `{name}.json`."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _split_tensors(state, "", tensors)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    _write_json(folder / f"{name}.json", structure)


def load_state(folder: Path, name: str, device: torch.device | str = "cpu") -> Any:
    file = folder / f"{name}.safetensors"
    tensors = _load_safetensors(file, device) if file.is_file() else {}
    return _join_tensors(_read_json(folder / f"{name}.json"), tensors)


def _load_safetensors(file: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of `file`; a truncated or corrupted file raises a `ValueError` naming it (safetensors' own
    error names neither the file nor its format)."""
    try:
        return load_file(str(file), device=str(device))
    except Exception as error:
        raise file_read_error(file, "safetensors", error) from None


def _module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir` (those with a training state file), oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.is_dir() and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def find_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str) -> Path | None:
    """The checkpoint to resume from: "latest" (None when there is none yet) or an explicit folder (which must
    exist and be complete)."""
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from_checkpoint)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / path
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder")
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"resume_from_checkpoint {str(path)!r} is incomplete (no {STATE_FILE}); it was interrupted while "
            f"being written"
        )
    return path


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The `training_state.json` of checkpoint `path`: step, kind, data position, seed and configuration."""
    return _read_json(Path(path) / STATE_FILE)


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """Clean up after a run killed while writing: finish an export it was publishing
    ([`finish_interrupted_exports`]), then remove the hidden folders left behind: temporary checkpoints
    (`.checkpoint-*.tmp`), checkpoints being replaced or rotated away (`.checkpoint-*.old`) and exports
    (`.export.*`)."""
    root = Path(output_dir)
    if root.is_dir():
        finish_interrupted_exports(root)
        for entry in root.iterdir():
            ours = entry.name.startswith((f".{CHECKPOINT_PREFIX}", EXPORT_PREFIX))
            if ours and entry.name.endswith((".tmp", ".old")) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)


def rotate_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond `total_limit` ([`remove_checkpoint`]); returns the removed folders."""
    if total_limit is None:
        return []
    found = list_checkpoints(output_dir)
    removed = found[: max(len(found) - total_limit, 0)]
    for path in removed:
        remove_checkpoint(path)
    return removed


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete checkpoint folder `path`, first renamed to a hidden `.checkpoint-*.old` folder: deleting its files
    one by one takes a while, and a kill meanwhile must not leave a `checkpoint-{step}` missing some of them
    that `latest` could pick."""
    path = Path(path)
    shutil.rmtree(move_aside([path], path.parent, f".{path.name}."))


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    models: dict[str, torch.nn.Module],
    states: dict[str, Any],
    training_state: dict[str, Any],
    total_limit: int | None = None,
) -> Path:
    """Write `checkpoint-{step}` atomically and rotate old ones.

    Args:
        output_dir: the run folder.
        step: the optimizer step reached.
        models: networks (saved with `save_pretrained` when they have it, else as a safetensors state dict).
        states: other nested states with tensors (optimizers, EMA, ...), each saved with [`save_state`]; plain
            JSON-able values (learning-rate scheduler, grad scaler) go to `{name}.json`.
        training_state: JSON-able progress information; written last, it marks the checkpoint complete.
        total_limit: keep at most this many checkpoints.

    Returns:
        The checkpoint folder.
    """
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    # Built in `.checkpoint-{step}.*.tmp` (what `remove_stale_temporaries` removes after a crash).
    with atomic_output(final, overwrite=True, directory=True) as tmp:
        for name, module in models.items():
            if hasattr(module, "save_pretrained"):
                module.save_pretrained(tmp / name, safe_serialization=True)
            else:
                save_file(_module_state(module), str(tmp / f"{name}.safetensors"))
        for name, state in states.items():
            save_state(tmp, name, state)
        fault_point("checkpoint-save", step)
        _write_json(tmp / STATE_FILE, {**training_state, "step": step})
        fsync_tree(tmp)
    # The rename itself lives in the folder's entries: flushed too, it survives a power cut.
    fsync_tree(root, recursive=False)
    rotate_checkpoints(root, total_limit)
    return final


def load_checkpoint(
    path: str | os.PathLike,
    models: dict[str, torch.nn.Module],
    state_names: list[str],
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the networks of a checkpoint in place and return `(states, training_state)`."""
    path = Path(path)
    for name, module in models.items():
        folder = path / name
        if folder.is_dir():
            weights = sorted(folder.glob("*.safetensors"))
            if not weights:
                raise FileNotFoundError(f"checkpoint {path} has no safetensors weights in {folder}")
            state: dict[str, torch.Tensor] = {}
            for file in weights:
                state.update(_load_safetensors(file))
        else:
            file = path / f"{name}.safetensors"
            if not file.is_file():
                raise FileNotFoundError(f"checkpoint {path} lacks {name!r} ({file} or {folder}/)")
            state = _load_safetensors(file)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as error:
            # PyTorch lists every missing, unexpected and mis-shaped tensor over many lines.
            reason = " ".join(line.strip() for line in str(error).splitlines()[1:4])
            raise ValueError(f"the {name!r} weights of checkpoint {path} do not fit the network: {reason}") from None
    states = {name: load_state(path, name, device) for name in state_names if (path / f"{name}.json").is_file()}
    return states, read_training_state(path)


# ---------------------------------------------------------------------------------------------- trainer


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
