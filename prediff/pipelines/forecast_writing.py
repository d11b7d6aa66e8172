"""Writing an ensemble forecast: an xarray Dataset as netCDF or zarr, or the pysteps array layout as `.npy`.

Forecasts are written (by [`forecast_dataset`] and [`write_forecast`]) as netCDF or zarr with the variable
`forecast` of dims `(member, time, y, x)` (`sample` first when several contexts were given, `channel` last
when there are several channels), the `context` it started from, and attributes giving the units, the
scaling, the lead times, the model and the seed; [`write_pysteps_array`] writes the pysteps layout
`(members, time, y, x)` as `.npy`. Every output is written to a temporary file in the same folder and then
moved into place, and an existing output is replaced only when asked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .context_io import NETCDF_SUFFIXES, ZARR_SUFFIXES, ContextInput

__all__ = ["FORECAST_SUFFIXES", "forecast_dataset", "write_forecast", "write_pysteps_array"]

FORECAST_SUFFIXES = NETCDF_SUFFIXES + ZARR_SUFFIXES


def forecast_dataset(
    ensemble: np.ndarray,
    context: ContextInput | np.ndarray,
    attrs: dict[str, Any] | None = None,
    interval_minutes: float | None = None,
    units: str | None = None,
) -> Any:
    """The forecast as an `xarray.Dataset`.

    Args:
        ensemble: `(B, M, T_out, H, W, C)` in physical units.
        context: what it started from (a [`ContextInput`] keeps the file's time and space coordinates), or
            the context frames `(B, T_in, H, W, C)`.
        attrs: global attributes (model, seed, scaling, ...); values must be strings, numbers or lists of
            numbers.
        interval_minutes: minutes between frames, for the `lead_time_minutes` coordinate (taken from a
            datetime time coordinate when the context has one).
        units: units attribute of the variables.

    Returns:
        A Dataset with `forecast` of dims `([sample,] member, time, y, x[, channel])`: `sample` only when
        `B > 1`, `channel` only when `C > 1`; `time` is the lead time in frames (1 to T_out). Coordinates
        `lead_time_minutes` and `valid_time` are added when the frame interval / the context times are known.
    """
    from ..data.readers import import_optional

    xr = import_optional("xarray", "writing forecasts as netCDF or zarr")
    if isinstance(context, np.ndarray):
        context = ContextInput(frames=context, source=Path(""))
    b, m, t_out, h, w, c = ensemble.shape
    frames = context.frames
    if frames.shape[0] != b or frames.shape[2:] != (h, w, c):
        raise ValueError(
            f"context shape {tuple(frames.shape)} does not match the ensemble shape {tuple(ensemble.shape)}"
        )
    t_in = frames.shape[1]
    forecast_dims = ["sample", "member", "time", "y", "x", "channel"]
    context_dims = ["sample", "context_time", "y", "x", "channel"]
    forecast_values, context_values = ensemble.astype(np.float32), frames.astype(np.float32)
    if c == 1:
        forecast_values, context_values = forecast_values[..., 0], context_values[..., 0]
        forecast_dims.pop(), context_dims.pop()
    if b == 1:
        forecast_values, context_values = forecast_values[0], context_values[0]
        forecast_dims.pop(0), context_dims.pop(0)

    coords: dict[str, Any] = {
        "member": np.arange(m, dtype=np.int32),
        "time": (
            "time",
            np.arange(1, t_out + 1, dtype=np.int32),
            {"long_name": "lead time", "units": "frames"},
        ),
        "context_time": (
            "context_time",
            np.arange(-(t_in - 1), 1, dtype=np.int32),
            {"long_name": "context frame relative to the last observation", "units": "frames"},
        ),
    }
    step = context.time_step
    if step is not None:
        interval_minutes = float(step / np.timedelta64(1, "s")) / 60.0
        coords["valid_time"] = ("time", context.time[-1] + step * np.arange(1, t_out + 1))
        coords["context_time"] = ("context_time", np.asarray(context.time), {"long_name": "observation time"})
    if interval_minutes is not None:
        coords["lead_time_minutes"] = (
            "time",
            np.arange(1, t_out + 1) * float(interval_minutes),
            {"units": "min"},
        )
    if context.y is not None and len(context.y) == h:
        coords["y"] = np.asarray(context.y)
    if context.x is not None and len(context.x) == w:
        coords["x"] = np.asarray(context.x)
    var_attrs = {"units": units} if units else {}
    data = xr.Dataset(
        {
            "forecast": (forecast_dims, forecast_values, {"long_name": "ensemble forecast", **var_attrs}),
            "context": (context_dims, context_values, {"long_name": "observed context", **var_attrs}),
        },
        coords=coords,
        attrs=_clean_attrs(attrs or {}),
    )
    return data


def _clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """netCDF attributes are strings, numbers or flat numeric lists: convert or serialise the rest."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (str, int, float, np.integer, np.floating)):
            out[key] = value
        elif isinstance(value, (list, tuple, np.ndarray)) and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value
        ):
            out[key] = [float(v) if isinstance(v, (float, np.floating)) else int(v) for v in value]
        else:
            out[key] = json.dumps(value, default=str)
    return out


def _check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")


def write_forecast(dataset: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a forecast Dataset as netCDF (`.nc`) or zarr (`.zarr`), atomically.

    Raises `FileExistsError` when `path` exists and `overwrite` is False, `ValueError` for another suffix.
    """
    from ..utils.files import atomic_output

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORECAST_SUFFIXES:
        raise ValueError(f"forecast output must end in one of {FORECAST_SUFFIXES} (netCDF or zarr), got {str(path)!r}")
    _check_writable(path, overwrite)
    if suffix in ZARR_SUFFIXES:
        with atomic_output(path, overwrite=overwrite, directory=True) as tmp:
            dataset.to_zarr(tmp, mode="w")
    else:
        encoding = {name: {"zlib": True, "complevel": 4} for name in dataset.data_vars}
        with atomic_output(path, overwrite=overwrite) as tmp:
            dataset.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return path


def write_pysteps_array(ensemble: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the ensemble in pysteps' layout as `.npy`, atomically.

    Args:
        ensemble: `(B, M, T_out, H, W, C)`.
        path: a `.npy` file.

    The array is `(members, time, y, x)` as pysteps' nowcasts and verification expect; a sample axis is put
    first when `B > 1` and a channel axis last when `C > 1` (pysteps works on one field at a time).
    """
    from ..utils.files import atomic_output

    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"the pysteps array must be written to a .npy file, got {str(path)!r}")
    _check_writable(path, overwrite)
    array = np.asarray(ensemble, dtype=np.float32)
    if array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape[0] == 1:
        array = array[0]
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return path
