"""What every training loop shares: atomic checkpoints (save, rotate, find, resume) without pickle,
reproducible data order and random draws, the errors of the non-finite loss and gradient guards and throughput
measurement.

A checkpoint is a folder `checkpoint-{step}` holding safetensors weights and JSON state:

- `{name}/` for networks (`save_pretrained`, loadable on their own), `{name}.safetensors` for other modules;
- `{name}.optimizer.safetensors` + `.json`: the optimizer state (tensors and the rest);
- `{name}.lr_scheduler.json`, `ema.safetensors` + `ema.json`, `grad_scaler.json`;
- `training_state.json`, written last: step, data position, seed and the configuration.

It is written into a hidden temporary folder next to it, flushed to the disk and moved into place with
`os.replace` (`prediff.utils.files.atomic_output`), so a crash or a power cut while saving leaves every earlier
checkpoint intact and never leaves a half-written `checkpoint-{step}`; it gets the permissions of a plain `mkdir`
under the umask. Loading reads only safetensors and JSON, so it never executes code.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Sampler

from ..utils import files
from ..utils.files import atomic_output, file_read_error, fsync_tree

__all__ = [
    "CHECKPOINT_PREFIX",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "ShardedBatchSampler",
    "Throughput",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "micro_step_seed",
    "read_training_state",
    "rotate_checkpoints",
    "save_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped without saving, earlier checkpoints are intact."""


class NonFiniteGradientError(NonFiniteLossError):
    """The gradients became NaN or infinite although the loss was finite; training stopped before the optimizer
    step and without saving, earlier checkpoints are intact."""


# ---------------------------------------------------------------------------------------------- files


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


#: Hidden folders of an export in progress (`.export.*.tmp`) and of the export it replaces (`.export.*.old`);
#: a run killed meanwhile leaves them for the next run to remove ([`remove_stale_temporaries`]).
EXPORT_PREFIX = ".export."
#: The files an export publishes last (see [`~prediff.utils.files.move_into`]): a reader finds either none or
#: the new configuration with the new weights, never a mix of two exports.
EXPORT_LAST = ("model_index.json", "config.json")


def move_into(src: Path, dst: Path) -> None:
    """Temporary, until the trainer calls [`~prediff.utils.files.move_into`] with `EXPORT_PREFIX` and
    `EXPORT_LAST` itself."""
    files.move_into(src, dst, EXPORT_PREFIX, last=EXPORT_LAST)


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
    """Remove the hidden folders a run killed while saving leaves behind: temporary checkpoints
    (`.checkpoint-*.tmp`), checkpoints being replaced (`.checkpoint-*.old`) and exports (`.export.*`)."""
    root = Path(output_dir)
    if root.is_dir():
        for entry in root.iterdir():
            ours = entry.name.startswith((f".{CHECKPOINT_PREFIX}", EXPORT_PREFIX))
            if ours and entry.name.endswith((".tmp", ".old")) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)


def rotate_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond `total_limit`; returns the removed folders."""
    if total_limit is None:
        return []
    found = list_checkpoints(output_dir)
    removed = found[: max(len(found) - total_limit, 0)]
    for path in removed:
        shutil.rmtree(path)
    return removed


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


# ---------------------------------------------------------------------------------------------- data order


def micro_step_seed(seed: int, rank: int, micro_step: int) -> int:
    """A 63-bit seed for every (run seed, process, micro-batch): every random draw of a micro-batch (noise,
    timesteps, dropout, augmentation) is a function of these three, so a resumed run repeats them exactly
    and every process draws differently."""
    state = np.random.SeedSequence([seed, rank, micro_step]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class ShardedBatchSampler(Sampler[list[int]]):
    """Endless batches of item indices for one process, a pure function of (seed, epoch, position).

    Every epoch is a permutation of the items drawn from `seed` and the epoch number; it is cut into global
    batches of `batch_size * num_replicas` items (an incomplete last batch is dropped) and process `rank`
    takes its `batch_size` slice of each. Starting at `start_batch` (a global micro-batch count) resumes
    exactly where an uninterrupted run would be, without reading the skipped data.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        start_batch: int = 0,
    ) -> None:
        global_batch = batch_size * num_replicas
        if num_items < global_batch:
            raise ValueError(
                f"the training split has {num_items} items, fewer than one global batch of "
                f"train_batch_size * num_processes = {batch_size} * {num_replicas} = {global_batch}; "
                f"use more data (e.g. data.num_sequences) or a smaller train_batch_size"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.num_items, self.batch_size = num_items, batch_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.start_batch = start_batch
        self.batches_per_epoch = num_items // global_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        return torch.randperm(self.num_items, generator=generator)

    def position(self, batch: int) -> tuple[int, int]:
        """(epoch, batch inside the epoch) of global micro-batch number `batch`."""
        return divmod(batch, self.batches_per_epoch)

    def indices(self, batch: int) -> list[int]:
        """This process's item indices of global micro-batch number `batch`."""
        epoch, inner = self.position(batch)
        start = (inner * self.num_replicas + self.rank) * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        epoch, order = -1, None
        while True:
            e, inner = self.position(batch)
            if e != epoch:
                epoch, order = e, self.epoch_order(e)
            start = (inner * self.num_replicas + self.rank) * self.batch_size
            yield order[start : start + self.batch_size].tolist()
            batch += 1


# ---------------------------------------------------------------------------------------------- speed


class Throughput:
    """Samples per second over a sliding window of recent steps (the first step, which compiles and warms
    caches, is left out)."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.times: list[float] = []
        self.samples: list[int] = []

    def update(self, samples: int) -> None:
        self.times.append(time.perf_counter())
        self.samples.append(samples)
        if len(self.times) > self.window + 1:
            self.times.pop(0)
            self.samples.pop(0)

    @property
    def value(self) -> float:
        if len(self.times) < 2:
            return float("nan")
        return sum(self.samples[1:]) / max(self.times[-1] - self.times[0], 1e-9)
