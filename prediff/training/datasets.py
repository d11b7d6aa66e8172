"""The data a trainer reads: the training and validation splits of the data set that `config.data` describes
(a seeded split, optionally kept in memory) and the collation of items into batches."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from ..data.building import build_sequence_dataset, sequence_units
from .config import TrainingConfig

__all__ = ["build_datasets", "collate_frames"]


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
    )
    value_range = tuple(float(v) for v in full.value_range)
    units = sequence_units(d.dataset, full, d.path, d.img_type)
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
