"""The data a trainer reads: the training and validation splits of the data set that `config.data` describes
(a seeded split, optionally kept in memory) and the collation of items into batches."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, Subset

from ..data.building import build_sequence_dataset, sequence_units
from .config import TrainingConfig

__all__ = ["build_datasets", "collate_batch", "collate_frames", "split_indices"]


class _InMemory(Dataset):
    """Every item's frames (and its `label_key` entry, if any) decoded once and kept as one tensor each."""

    def __init__(self, dataset: Dataset, label_key: str | None = None) -> None:
        from tqdm.auto import tqdm

        self.keys = ("frames",) if label_key is None else ("frames", label_key)
        items = [dataset[i] for i in tqdm(range(len(dataset)), desc="caching data", leave=False)]
        self.tensors = {
            key: torch.stack([torch.as_tensor(item_entry(item, key)) for item in items]) for key in self.keys
        }

    def __len__(self) -> int:
        return len(self.tensors["frames"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: self.tensors[key][index] for key in self.keys} | {"index": index}


def item_entry(item: dict[str, Any], key: str) -> Any:
    """`item[key]`, or a `KeyError` that says which data sets carry it."""
    if key not in item:
        raise KeyError(
            f"the data set's items carry no {key!r} (they have {sorted(item)}); training on {key!r} needs a data set "
            f"whose items hold it, e.g. data.dataset: nbody for 'energy'"
        )
    return item[key]


class DataScaling(NamedTuple):
    """How a data set's physical values map to the [0, 1] the networks see, and what grid and clock they are
    on; trainers record it in what they export.

    Attributes:
        value_range: the (transformed) values mapped to 0 and 1.
        units: what the physical values are, when known.
        value_transform: applied before `value_range` (None: linear).
        pixel_size_km, frame_interval_minutes: the grid spacing and time between frames, when a file records
            them (`prediff data radar` does).
    """

    value_range: tuple[float, float] = (0.0, 255.0)
    units: str | None = None
    value_transform: dict[str, Any] | None = None
    pixel_size_km: float | None = None
    frame_interval_minutes: float | None = None


def split_indices(n: int, val_fraction: float, split_seed: int = 0) -> tuple[list[int], list[int]]:
    """The training and validation items (sorted) of a data set of `n` items: `round(n * val_fraction)` of them
    (at least one when the fraction is positive and `n > 1`), drawn by a permutation seeded with `split_seed`."""
    num_val = int(round(n * val_fraction))
    if val_fraction > 0 and num_val == 0 and n > 1:
        num_val = 1
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return sorted(order[num_val:]), sorted(order[:num_val])


def build_datasets(config: TrainingConfig) -> tuple[Dataset, Dataset | None, DataScaling]:
    """The training and validation splits described by `config.data`, and how the data's values are scaled
    (see [`DataScaling`])."""
    d = config.data
    seq_len = d.window_length
    full = build_sequence_dataset(
        d.dataset,
        seq_len,
        d.path,
        num_sequences=d.num_sequences,
        height=d.height,
        width=d.width,
        seed=d.seed,
        stride=d.stride,
        img_type=d.img_type,
        start_date=d.start_date,
        end_date=d.end_date,
        key=d.key,
        value_range=d.value_range,
        value_transform=d.value_transform,
    )
    grid: dict[str, Any] = {}
    if d.dataset == "file":
        from ..data.io import SequenceFile

        recorded = SequenceFile(d.path).metadata
        grid = {key: recorded.get(key) for key in ("pixel_size_km", "frame_interval_minutes")}
    scaling = DataScaling(
        value_range=tuple(float(v) for v in full.value_range),
        units=sequence_units(d.dataset, full, d.path, d.img_type),
        value_transform=getattr(full, "value_transform", None),
        **grid,
    )
    n = len(full)
    if n == 0:
        raise ValueError(f"data set {d.dataset!r} ({d.path or 'generated'}) holds no window of seq_len={seq_len}")
    train_indices, val_indices = split_indices(n, d.val_fraction, d.split_seed)
    train: Dataset = Subset(full, train_indices)
    val: Dataset | None = Subset(full, val_indices) if val_indices else None
    if d.cache_in_memory:
        train = _InMemory(train, config.label_key)
        val = _InMemory(val, config.label_key) if val is not None else None
    return train, val, scaling


def collate_frames(items: list[dict[str, Any]]) -> torch.Tensor:
    """Stack the items' `"frames"` into `(B, T, H, W, C)`."""
    return torch.stack([item["frames"] for item in items])


def collate_batch(
    items: list[dict[str, Any]], label_key: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A training batch: the stacked frames `(B, T, H, W, C)` and the items' `label_key` entries stacked
    `(B, ...)` as float32 (None without a key)."""
    if label_key is None:
        return collate_frames(items), None
    labels = torch.stack([torch.as_tensor(item_entry(item, label_key)) for item in items]).float()
    return collate_frames(items), labels
