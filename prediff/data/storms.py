"""Synthetic radar storms: the embedded default data set, generated from a seed with no download.

[`SyntheticStormDataset`] serves the sequences of [`generate_storm_sequence`] (see `storm_generator.py` for
what they imitate and how they are made) as scaled frames, optionally cached in an HDF5 or zarr file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.checks import check_index, check_positive_int, check_seed
from .statistics import IntensityStats, future_intensity_stats
from .storm_generator import VIL_UNITS, generate_storm_sequence

__all__ = ["SyntheticStormDataset"]


class SyntheticStormDataset(Dataset):
    """Synthetic radar precipitation sequences (VIL), the data set that needs no download.

    Items are dicts:

    * ``"frames"``: float32 tensor (seq_len, height, width, 1), VIL level / 255, so in [0, 1];
    * ``"index"``: the item index; ``"seed"``: the data set seed.

    Args:
        num_sequences (`int`): number of sequences.
        seq_len (`int`): frames per sequence.
        height (`int`, defaults to 128), width (`int`, defaults to 128): frame size in pixels (at least 16).
        seed (`int`, defaults to 0): sequence ``i`` depends only on ``(seed, i)``.
        transform (`Callable`, *optional*): applied to every item dict (e.g. :class:`RandomFlipRotate`).
        cache_path (`str` or `os.PathLike`, *optional*): an HDF5 (``.h5``) or zarr (``.zarr``) file. When it
            exists it is read instead of generating (its metadata must match these arguments); when it does
            not, every sequence is generated once and written there.
        progress (`bool`, defaults to True): show a progress bar while filling the cache.

    Examples:

    ```py
    >>> from prediff.data import SyntheticStormDataset
    >>> dataset = SyntheticStormDataset(num_sequences=100, seq_len=13, seed=0)
    >>> dataset[0]["frames"].shape
    torch.Size([13, 128, 128, 1])
    >>> mu, sigma = dataset.future_intensity_stats(context_length=7)
    ```
    """

    generator_name = "SyntheticStormDataset"
    value_range = (0.0, 255.0)
    units = VIL_UNITS

    def __init__(
        self,
        num_sequences: int,
        seq_len: int,
        height: int = 128,
        width: int = 128,
        seed: int = 0,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache_path: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self.num_sequences = check_positive_int("num_sequences", num_sequences)
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.height = check_positive_int("height", height)
        self.width = check_positive_int("width", width)
        if self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be at least 16 pixels, got {self.height}x{self.width}")
        self.seed = check_seed(seed)
        self.transform = transform
        self._stats: dict[int, IntensityStats] = {}
        self._cache = None
        if cache_path is not None:
            from .io import SequenceFile, write_sequences

            path = Path(cache_path)
            if not path.exists():
                write_sequences(
                    path,
                    (self.generate(i) for i in range(self.num_sequences)),
                    num_sequences=self.num_sequences,
                    frame_shape=(self.seq_len, self.height, self.width, 1),
                    dtype=np.uint8,
                    metadata=self.metadata(),
                    progress=progress,
                )
            self._cache = SequenceFile(path)
            self._cache.check_metadata(self.metadata())

    def metadata(self) -> dict[str, Any]:
        """What a written copy of this data set records (and what a cache must match)."""
        return {
            "generator": self.generator_name,
            "seed": self.seed,
            "num_sequences": self.num_sequences,
            "seq_len": self.seq_len,
            "height": self.height,
            "width": self.width,
            "units": self.units,
            "value_range": list(self.value_range),
        }

    def __len__(self) -> int:
        return self.num_sequences

    def generate(self, index: int) -> np.ndarray:
        """Sequence ``index`` as uint8 VIL levels, shape (seq_len, height, width, 1)."""
        index = check_index(index, self.num_sequences, "sequences")
        if self._cache is not None:
            return self._cache.read(index)
        return generate_storm_sequence(self.seed, index, self.seq_len, self.height, self.width)[..., None]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(index, self.num_sequences, "sequences")
        vil = self.generate(index)
        item = {
            "frames": torch.from_numpy(vil.astype(np.float32) / np.float32(255.0)),
            "index": int(index),
            "seed": self.seed,
        }
        return self.transform(item) if self.transform is not None else item

    def future_intensity_stats(
        self, context_length: int, max_sequences: int | None = None, progress: bool = False
    ) -> IntensityStats:
        """(mean, std) over sequences of the mean scaled intensity of frames ``context_length:``.

        This is the training distribution of the statistic that the anticipated-intensity knowledge control
        targets as ``mu + n * sigma``. Results are remembered per ``(context_length, max_sequences)``.
        """
        key = (context_length, max_sequences)
        if key not in self._stats:
            plain = _Untransformed(self)
            self._stats[key] = future_intensity_stats(plain, context_length, max_sequences, progress)
        return self._stats[key]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_sequences={self.num_sequences}, seq_len={self.seq_len}, "
            f"height={self.height}, width={self.width}, seed={self.seed})"
        )


class _Untransformed(Dataset):
    """View of a data set without its ``transform`` (statistics must not see augmentation)."""

    def __init__(self, dataset: SyntheticStormDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        vil = self.dataset.generate(index)
        return {"frames": torch.from_numpy(vil.astype(np.float32) / np.float32(255.0))}
