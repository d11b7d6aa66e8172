"""Building a data set of fixed-length windows from a description of where its sequences come from.

`prediff train` describes its data with a `DataConfig` (`data.dataset`, `data.path`, ...), `prediff evaluate` with
its flags; both build the data set here, from one of `SEQUENCE_SOURCES`: the synthetic storms or the N-body
digits (generated from a seed, no download), a SEVIR / SEVIR-LR folder, or a file of sequences (HDF5 / zarr,
e.g. written by `prediff data generate`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = ["SEQUENCE_SOURCES", "build_sequence_dataset", "sequence_units"]

#: Where the sequences of a data set can come from.
SEQUENCE_SOURCES = ("storms", "nbody", "sevir", "file")


def build_sequence_dataset(
    source: str,
    seq_len: int,
    path: str | os.PathLike | None = None,
    *,
    num_sequences: int = 512,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
    stride: int | None = None,
    img_type: str = "vil",
    start_date: str | None = None,
    end_date: str | None = None,
    key: str = "frames",
    value_range: tuple[float, float] | None = None,
    value_transform: dict | None = None,
) -> Dataset:
    """The data set of windows of `seq_len` frames from `source` (one of `SEQUENCE_SOURCES`).

    Args:
        source: "storms" ([`SyntheticStormDataset`]), "nbody" ([`NBodyDataset`], square frames of `height`
            pixels; its items also carry the per-frame energy), "sevir" ([`SEVIRDataset`] of the folder `path`)
            or "file" ([`ArraySequenceDataset`] of the array `key` of the file `path`).
        seq_len: frames per item.
        path: the SEVIR folder or the file (not used for the storms).
        num_sequences, height, width, seed: the generated data sets (number, frame size in pixels, generator
            seed).
        stride: step between windows inside a SEVIR event or a stored sequence (SEVIR: default `seq_len`; a file:
            its data set's default).
        img_type, start_date, end_date: the SEVIR image type and event time range.
        key: the array of a file.
        value_range, value_transform: a file's scaling to [0, 1], instead of what the file records (a file of
            rain rate in mm/h records neither).

    Raises:
        ValueError: an unknown `source`; the data sets' own errors for unusable arguments or files.
    """
    if source == "storms":
        from .storms import SyntheticStormDataset

        return SyntheticStormDataset(num_sequences, seq_len, height=height, width=width, seed=seed)
    if source == "nbody":
        from .nbody import NBodyDataset

        if height != width:
            raise ValueError(
                f"the N-body digits have square frames: height and width must agree, got {height}x{width}"
            )
        return NBodyDataset(num_sequences, seq_len, seed=seed, frame_size=height)
    if source == "sevir":
        from .sevir import SEVIRDataset

        return SEVIRDataset(
            path,
            seq_len=seq_len,
            stride=stride or seq_len,
            img_type=img_type,
            start_date=start_date,
            end_date=end_date,
        )
    if source == "file":
        from .arrays import ArraySequenceDataset

        scaling = {"value_range": tuple(value_range)} if value_range is not None else {}
        return ArraySequenceDataset.from_file(
            path, seq_len=seq_len, key=key, stride=stride, value_transform=value_transform, **scaling
        )
    raise ValueError(f"source must be one of {SEQUENCE_SOURCES}, got {source!r}")


def sequence_units(
    source: str, dataset: Dataset, path: str | os.PathLike | None = None, img_type: str = "vil"
) -> str | None:
    """What the physical values of a data set built by [`build_sequence_dataset`] are, when that is known: the
    data set's `units`, the VIL encoding for SEVIR VIL, or the units a sequence file records."""
    units = getattr(dataset, "units", None)
    if source == "sevir" and img_type == "vil":
        from .storm_generator import VIL_UNITS

        units = VIL_UNITS
    elif source == "file":
        from .io import SequenceFile

        units = SequenceFile(path).metadata.get("units")
    return units
