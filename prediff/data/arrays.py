"""Windows over any array of sequences (NumPy, HDF5, zarr, xarray), scaled to [0, 1] from a declared range
(through an optional value transform, e.g. rain rate in dB)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.checks import check_index, check_positive_int, check_value_range
from ..utils.units import check_value_transform
from .readers import check_array_metadata, open_hdf5, scale_to_unit


class _HDF5Source:
    """An HDF5 dataset remembered by file name and key, so that each process opens its own handle."""

    def __init__(self, filename: str, key: str) -> None:
        self.filename, self.key = filename, key
        self._pid: int | None = None
        self._file: Any = None

    def get(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            self._file = open_hdf5(self.filename)
            self._pid = os.getpid()
        return self._file[self.key]

    def __getstate__(self) -> dict[str, Any]:
        return {"filename": self.filename, "key": self.key, "_pid": None, "_file": None}


def _is_h5py_dataset(array: Any) -> bool:
    module = type(array).__module__
    return module.startswith("h5py") and type(array).__name__ == "Dataset"


def _is_xarray(array: Any) -> bool:
    return type(array).__module__.startswith("xarray") and type(array).__name__ == "DataArray"


class ArraySequenceDataset(Dataset):
    """Sliding windows of ``seq_len`` frames from an (N, T, H, W, C) array.

    ``array`` may be a NumPy array, an ``h5py.Dataset`` (reopened per process by file name, so it works with
    ``DataLoader(num_workers>0)``), a zarr array or an ``xarray.DataArray`` (its ``dims`` are reordered to
    ``dims`` when given). Only the requested window is read from disk.

    Items are dicts:

    * ``"frames"``: float32 tensor (seq_len, H, W, C) scaled from ``value_range`` to [0, 1];
    * ``"sequence"``: the index along N; ``"start"``: the first frame of the window along T.

    Args:
        array: the (N, T, H, W, C) data.
        seq_len (`int`): frames per window.
        value_range (`tuple[float, float]`): the range mapped to [0, 1] (e.g. (0, 255) for VIL), of the
            transformed values when there is a `value_transform` (e.g. (-15, 25) dB for rain rate).
        stride (`int`, defaults to ``seq_len``): step between window starts; each sequence gives
            ``1 + (T - seq_len) // stride`` windows.
        clip (`bool`, defaults to False): clip values outside ``value_range`` instead of raising
            ``ValueError``.
        dims (`Sequence[str]`, *optional*): for a DataArray, its dimension names in (N, T, H, W, C) order.
        transform (`Callable`, *optional*): applied to every item dict.
        value_transform (`dict`, *optional*): applied to the physical values before `value_range`, e.g.
            `{"kind": "db", "threshold": 0.1, "zerovalue": -15.0}` (see [`~prediff.utils.units`]).
    """

    def __init__(
        self,
        array: Any,
        seq_len: int,
        value_range: tuple[float, float],
        stride: int | None = None,
        clip: bool = False,
        dims: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        value_transform: dict[str, Any] | None = None,
    ) -> None:
        self.value_transform = check_value_transform(value_transform)
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.stride = check_positive_int("stride", self.seq_len if stride is None else stride)
        self.value_range = check_value_range(value_range)
        self.clip = bool(clip)
        self.transform = transform
        self._source: Any
        if _is_h5py_dataset(array):
            self._source = _HDF5Source(array.file.filename, array.name)
        elif _is_xarray(array):
            if dims is not None:
                missing = set(dims) ^ set(array.dims)
                if missing:
                    raise ValueError(f"dims must name the array's dimensions {array.dims}, got {tuple(dims)}")
                array = array.transpose(*dims)
            self._source = array
        elif isinstance(array, (np.ndarray, torch.Tensor)) or all(
            hasattr(array, attr) for attr in ("shape", "dtype", "__getitem__")
        ):
            self._source = array.numpy() if isinstance(array, torch.Tensor) else array
        else:
            raise ValueError(f"array must be a NumPy, h5py, zarr or xarray array, got {type(array).__name__}")
        data = self._array()
        shape = tuple(int(s) for s in data.shape)
        if len(shape) != 5:
            raise ValueError(
                f"array must have 5 dimensions (N, T, H, W, C), got shape {shape}; add a channel axis "
                f"(array[..., None]) for single-channel data"
            )
        n, t = shape[:2]
        if t < self.seq_len:
            raise ValueError(f"seq_len={self.seq_len} exceeds the array's sequence length T={t} (shape {shape})")
        where = f"{self._source.filename}:{self._source.key}" if isinstance(self._source, _HDF5Source) else "array"
        check_array_metadata(where, data.dtype, (self.seq_len, *shape[2:]))
        self.shape = shape
        self.windows_per_sequence = 1 + (t - self.seq_len) // self.stride
        self.num_sequences = n

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, seq_len: int | None = None, key: str = "frames", **kwargs: Any
    ) -> ArraySequenceDataset:
        """Open the array ``key`` of an HDF5 file or zarr store (e.g. written by ``prediff data generate``).

        ``seq_len`` defaults to the stored sequence length, ``value_range`` and ``value_transform`` to those
        recorded in the file's metadata (a file of rain rate in mm/h records none: give both).
        """
        from .io import SequenceFile

        stored = SequenceFile(Path(path))
        if key not in stored.fields:
            raise ValueError(f"{path} has no array {key!r}; it holds {stored.fields}")
        if "value_range" not in kwargs:
            if "value_range" not in stored.metadata:
                raise ValueError(f"{path} records no value_range; pass value_range=(low, high)")
            kwargs["value_range"] = tuple(stored.metadata["value_range"])
        if kwargs.get("value_transform") is None:
            kwargs["value_transform"] = stored.metadata.get("value_transform")
        array = stored.array(key)
        return cls(array, seq_len=seq_len or int(array.shape[1]), **kwargs)

    def _array(self) -> Any:
        return self._source.get() if isinstance(self._source, _HDF5Source) else self._source

    def __len__(self) -> int:
        return self.num_sequences * self.windows_per_sequence

    def locate(self, index: int) -> tuple[int, int]:
        """(sequence, first frame) of window ``index``."""
        index = check_index(index, len(self))
        sequence, window = divmod(int(index), self.windows_per_sequence)
        return sequence, window * self.stride

    def __getitem__(self, index: int) -> dict[str, Any]:
        sequence, start = self.locate(index)
        window = self._array()[sequence, start : start + self.seq_len]
        values = np.asarray(getattr(window, "values", window))
        where = f"window {index} (sequence {sequence})"
        frames = scale_to_unit(values, self.value_range, self.clip, where, self.value_transform)
        item = {
            "frames": torch.from_numpy(np.ascontiguousarray(frames)),
            "sequence": sequence,
            "start": start,
        }
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, seq_len={self.seq_len}, stride={self.stride}, "
            f"value_range={self.value_range}, value_transform={self.value_transform})"
        )
