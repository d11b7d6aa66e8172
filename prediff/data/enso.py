"""ICAR-ENSO (the Tianchi 2021 ENSO challenge data) as used by Earthformer.

Files: ``CMIP_train.nc`` (variable ``sst``, dims ``year`` x ``month`` (36) x ``lat`` (24) x ``lon`` (72),
monthly sea-surface temperature anomalies in degrees C) and ``CMIP_label.nc`` (variable ``nino``, dims
``year`` x ``month``, the Nino3.4 index). Each year-record holds 36 months starting at its year, so
consecutive records of a model overlap by 24 months; the first 2,265 records are CMIP6 (15 models x 151
years), the rest CMIP5 (17 models x 140 years). Earthformer keeps longitudes 95-330 (48 columns), unfolds
every model's records into one monthly series (``years * 12 + 24`` months), and takes windows of 12 input
and 14 target months. The Nino3.4 index is the 3-month running mean of the SST anomaly averaged over the
Nino3.4 box (rows 10:13, columns 19:30 of the 24 x 48 grid). Split: training on CMIP6 and all but the last two
CMIP5 models, validation on the second-to-last CMIP5 model, test on the last.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.checks import check_index, check_positive_int, check_value_range
from ..utils.units import to_physical
from .readers import check_array_metadata, open_netcdf, scale_to_unit

#: Earthformer's SST scaling range (the extremes of CMIP5 and CMIP6), degrees C.
ENSO_SST_RANGE = (-16.549121856689453, 10.198975563049316)
NINO_WINDOW = 3
LONGITUDE_RANGE = (95.0, 330.0)
MONTHS_PER_RECORD = 36


def unfold_records(records: np.ndarray) -> np.ndarray:
    """One model's overlapping 36-month year-records (Y, 36, ...) -> its monthly series (Y * 12 + 24, ...).

    Record ``y`` covers months ``12 y .. 12 y + 35``: the series is the first 12 months of every record
    followed by the last 24 months of the final one (the same series as Earthformer's ``fold``).
    """
    if records.ndim < 2 or records.shape[1] != MONTHS_PER_RECORD:
        raise ValueError(f"records must be (years, 36, ...), got shape {records.shape}")
    return np.concatenate([records[:, :12].reshape(-1, *records.shape[2:]), records[-1, 12:]], axis=0)


class ENSODataset(Dataset):
    """ICAR-ENSO windows: 12 input and 14 target months of SST anomalies on the 24 x 48 tropical Pacific grid.

    Items are dicts:

    * ``"frames"``: float32 tensor (in_len + out_len, 24, 48, 1), SST scaled from ``value_range`` to [0, 1];
    * ``"nino"``: float32 (out_len - 2,), the label Nino3.4 index at target months ``in_len ..`` (one value
      per complete 3-month running-mean window, as in Earthformer);
    * ``"source"`` ("CMIP6" or "CMIP5"), ``"model"`` (model index inside its source), ``"start"`` (first month
      in the model's series), ``"index"``.

    Args:
        root (`str` or `os.PathLike`): folder holding ``CMIP_train.nc`` and ``CMIP_label.nc``.
        split (`str`, defaults to "train"): "train", "val", "test" or "all" (see the module docstring).
        in_len (`int`, defaults to 12), out_len (`int`, defaults to 14): months of context and target.
        stride (`int`, *optional*): months between window starts; Earthformer's 10 for training and 11
            otherwise.
        value_range (`tuple`, defaults to ``ENSO_SST_RANGE``): degrees C mapped to [0, 1].
        clip (`bool`, defaults to False): clip values outside ``value_range`` instead of raising
            ``ValueError``.
        cmip6_models, cmip6_years, cmip5_models, cmip5_years (`int`): the record layout (15 x 151 and 17 x 140
            in the published files).
        transform (`Callable`, *optional*): applied to every item dict.

    The selected models' monthly series are held in memory (about 130 MB for the training split).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        in_len: int = 12,
        out_len: int = 14,
        stride: int | None = None,
        value_range: tuple[float, float] = ENSO_SST_RANGE,
        clip: bool = False,
        cmip6_models: int = 15,
        cmip6_years: int = 151,
        cmip5_models: int = 17,
        cmip5_years: int = 140,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"split must be one of 'train', 'val', 'test', 'all', got {split!r}")
        self.root, self.split = Path(root), split
        self.in_len = check_positive_int("in_len", in_len)
        self.out_len = check_positive_int("out_len", out_len)
        if self.out_len < NINO_WINDOW:
            raise ValueError(f"out_len must be at least {NINO_WINDOW} (one Nino3.4 window), got {out_len}")
        self.stride = check_positive_int("stride", stride if stride is not None else (10 if split == "train" else 11))
        self.value_range = check_value_range(value_range)
        self.clip = bool(clip)
        self.transform = transform
        layout = {
            "CMIP6": (
                check_positive_int("cmip6_models", cmip6_models),
                check_positive_int("cmip6_years", cmip6_years),
            ),
            "CMIP5": (
                check_positive_int("cmip5_models", cmip5_models),
                check_positive_int("cmip5_years", cmip5_years),
            ),
        }
        if cmip5_models < 3 and split != "all":
            raise ValueError(
                f"the train/val/test split needs at least 3 CMIP5 models, got cmip5_models={cmip5_models}"
            )

        paths = {name: self.root / f"CMIP_{name}.nc" for name in ("train", "label")}
        for path in paths.values():
            if not path.exists():
                raise FileNotFoundError(f"ICAR-ENSO file {path} does not exist")
        with open_netcdf(paths["train"]) as train_file, open_netcdf(paths["label"]) as label_file:
            sst = self._variable(train_file, "sst", ("year", "month", "lat", "lon"), paths["train"])
            nino = self._variable(label_file, "nino", ("year", "month"), paths["label"])
            lon = sst["lon"].values
            sst = sst.isel(lon=np.flatnonzero((lon >= LONGITUDE_RANGE[0]) & (lon <= LONGITUDE_RANGE[1])))
            expected = sum(m * y for m, y in layout.values())
            for name, var, path in (("sst", sst, paths["train"]), ("nino", nino, paths["label"])):
                if var.sizes["year"] != expected:
                    raise ValueError(
                        f"{path}:{name} has {var.sizes['year']} year-records, expected {expected} "
                        f"(cmip6 {layout['CMIP6'][0]} x {layout['CMIP6'][1]} + cmip5 {layout['CMIP5'][0]} x "
                        f"{layout['CMIP5'][1]})"
                    )
                if var.sizes["month"] != MONTHS_PER_RECORD:
                    raise ValueError(f"{path}:{name} has {var.sizes['month']} months per record, expected 36")
            if (sst.sizes["lat"], sst.sizes["lon"]) != (24, 48):
                raise ValueError(
                    f"{paths['train']}:sst must have 24 latitudes and 48 longitudes in [95, 330] after "
                    f"selection, "
                    f"got {sst.sizes['lat']} x {sst.sizes['lon']}"
                )
            # One model's records are read at a time.
            most_years = max(years for _, years in layout.values())
            check_array_metadata(f"{paths['train']}:sst", sst.dtype, (most_years, *sst.shape[1:]))
            check_array_metadata(f"{paths['label']}:nino", nino.dtype, (most_years, *nino.shape[1:]))
            self._series: list[np.ndarray] = []
            self._nino: list[np.ndarray] = []
            self._models: list[tuple[str, int]] = []
            offset = 0
            for source, (models, years) in layout.items():
                for model in range(models):
                    if self._selected(source, model, models):
                        records = slice(offset + model * years, offset + (model + 1) * years)
                        series = unfold_records(sst.isel(year=records).values.astype(np.float32))
                        if not np.isfinite(series).all():
                            raise ValueError(f"{paths['train']}: sst of {source} model {model} holds NaN values")
                        self._series.append(series)
                        self._nino.append(unfold_records(nino.isel(year=records).values.astype(np.float32)))
                        self._models.append((source, model))
                offset += models * years
        window = self.in_len + self.out_len
        self._windows = []
        for slot, series in enumerate(self._series):
            if len(series) < window:
                raise ValueError(f"model series of {len(series)} months is shorter than in_len + out_len = {window}")
            for start in range(0, len(series) - window + 1, self.stride):
                self._windows.append((slot, start))

    @staticmethod
    def _variable(dataset: Any, name: str, dims: tuple[str, ...], path: Path) -> Any:
        if name not in dataset:
            raise ValueError(f"{path} has no variable {name!r}; it holds {sorted(dataset.data_vars)}")
        var = dataset[name]
        if set(var.dims) != set(dims):
            raise ValueError(f"{path}:{name} must have dims {dims}, got {var.dims}")
        return var.transpose(*dims)

    def _selected(self, source: str, model: int, models: int) -> bool:
        if self.split == "all":
            return True
        if source == "CMIP6":
            return self.split == "train"
        return {"train": model < models - 2, "val": model == models - 2, "test": model == models - 1}[self.split]

    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = check_index(index, len(self))
        slot, start = self._windows[index]
        source, model = self._models[slot]
        stop = start + self.in_len + self.out_len
        frames = scale_to_unit(
            self._series[slot][start:stop, :, :, None],
            self.value_range,
            self.clip,
            f"{source} model {model}, months {start}..{stop - 1}",
        )
        nino = self._nino[slot][start + self.in_len : stop - NINO_WINDOW + 1]
        item = {
            "frames": torch.from_numpy(frames),
            "nino": torch.from_numpy(nino.copy()),
            "source": source,
            "model": model,
            "start": start,
            "index": int(index),
        }
        return self.transform(item) if self.transform is not None else item

    def unscale(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Scaled frames back to degrees C."""
        return to_physical(frames, self.value_range)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, windows={len(self)})"
