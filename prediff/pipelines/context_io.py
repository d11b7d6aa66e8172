"""Reading a user's context sequence from a file, and checking it against a pipeline's value range.

Context files (read by [`read_context`]):

- `.npy`: an array `(T, H, W)`, `(T, H, W, C)` or `(B, T, H, W, C)` (read without pickle);
- HDF5 (`.h5`, `.hdf5`): the dataset `key` (default: `frames`, or the file's only dataset), same shapes;
- zarr (`.zarr`): an xarray store (a variable with a time dimension) or a plain zarr array / group member;
- netCDF (`.nc`, `.nc4`): an xarray variable with a time dimension.

An xarray variable is reordered to `(sample, time, y, x, channel)` from its dimension names: the time
dimension is called `time` (or `t`, `frame`, `step`, ...) or carries datetimes, the spatial ones `y`/`x` (or
`lat`/`lon`, `row`/`col`, ...) or are the last two left, a `channel`/`band` dimension becomes the channel
axis and any remaining one the sample axis. `dims` names them explicitly when the names say nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONTEXT_SUFFIXES",
    "HDF5_SUFFIXES",
    "NETCDF_SUFFIXES",
    "NPY_SUFFIXES",
    "ZARR_SUFFIXES",
    "ContextInput",
    "check_context_values",
    "read_context",
]

NPY_SUFFIXES = (".npy",)
HDF5_SUFFIXES = (".h5", ".hdf5")
ZARR_SUFFIXES = (".zarr",)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
CONTEXT_SUFFIXES = NPY_SUFFIXES + HDF5_SUFFIXES + ZARR_SUFFIXES + NETCDF_SUFFIXES

TIME_NAMES = ("time", "t", "times", "frame", "frames", "step", "steps", "valid_time", "datetime", "date")
Y_NAMES = ("y", "lat", "latitude", "row", "rows", "north_south", "south_north", "height", "h", "ny")
X_NAMES = ("x", "lon", "longitude", "col", "cols", "column", "west_east", "east_west", "width", "w", "nx")
CHANNEL_NAMES = ("channel", "channels", "c", "band", "bands", "variable", "level", "levels")


@dataclass
class ContextInput:
    """A context read from a file.

    Attributes:
        frames: `(B, T, H, W, C)` float32 values as stored (physical units).
        source: the file read.
        variable: the array / variable name inside the file, if any.
        time: the time coordinate `(T,)` when the file has one (datetimes or numbers), else None.
        y, x: spatial coordinates `(H,)`, `(W,)` when the file has them.
        dims: the dimension names of the input, in `(sample, time, y, x, channel)` order.
        attrs: attributes of the input variable (units, ...).
    """

    frames: np.ndarray
    source: Path
    variable: str | None = None
    time: np.ndarray | None = None
    y: np.ndarray | None = None
    x: np.ndarray | None = None
    dims: tuple[str, str, str, str, str] = ("sample", "time", "y", "x", "channel")
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def time_step(self) -> np.timedelta64 | None:
        """The constant step of a datetime time coordinate, else None."""
        if self.time is None or len(self.time) < 2 or not np.issubdtype(self.time.dtype, np.datetime64):
            return None
        steps = np.diff(self.time)
        return steps[0] if (steps == steps[0]).all() and steps[0] > np.timedelta64(0, "s") else None


def _to_five_dims(array: np.ndarray, source: str) -> np.ndarray:
    if array.ndim == 3:
        return array[None, ..., None]
    if array.ndim == 4:
        return array[None]
    if array.ndim == 5:
        return array
    raise ValueError(
        f"context in {source} must have shape (T, H, W), (T, H, W, C) or (B, T, H, W, C), "
        f"got shape {tuple(array.shape)}"
    )


def _pick_dim(dims: list[str], names: tuple[str, ...]) -> str | None:
    for dim in dims:
        if dim.lower() in names:
            return dim
    return None


def _xarray_context(data: Any, source: str, variable: str | None, dims: tuple[str, ...] | None) -> ContextInput:
    """A `ContextInput` from an xarray Dataset, choosing and reordering the variable; only that variable is read,
    after its dtype and size have been checked from the file's metadata."""
    from ..data.readers import check_array_metadata

    if variable is None:
        candidates = [name for name, var in data.data_vars.items() if var.ndim >= 3]
        if len(candidates) != 1:
            raise ValueError(
                f"{source} holds {len(candidates)} variables with 3 or more dimensions "
                f"({sorted(map(str, candidates))}); choose one with --variable"
            )
        variable = str(candidates[0])
    if variable not in data.data_vars:
        raise ValueError(f"{source} has no variable {variable!r}; it holds {sorted(map(str, data.data_vars))}")
    var = data[variable]
    all_dims = [str(d) for d in var.dims]
    if dims is not None:
        dims = tuple(dims)
        unknown = [d for d in dims if d not in all_dims]
        if unknown or len(dims) not in (3, 4, 5) or len(set(dims)) != len(dims):
            raise ValueError(
                f"dims must name 3 to 5 distinct dimensions of {variable!r} {tuple(all_dims)} in the order "
                f"(sample, time, y, x, channel) (sample and channel optional), got {dims}"
            )
        if len(dims) != len(all_dims):
            raise ValueError(f"dims must name every dimension of {variable!r} {tuple(all_dims)}, got {dims}")
        if len(dims) == 5:
            sample, time, y, x, channel = dims
        elif len(dims) == 3:
            sample, channel = None, None
            time, y, x = dims
        else:
            # 4 names: (time, y, x, channel) unless the first is a sample dimension before time.
            if _pick_dim([dims[0]], TIME_NAMES) is None and _pick_dim([dims[1]], TIME_NAMES) is not None:
                sample, time, y, x = dims
                channel = None
            else:
                time, y, x, channel = dims
                sample = None
    else:
        time = _pick_dim(all_dims, TIME_NAMES)
        if time is None:
            datetimes = [d for d in all_dims if d in var.coords and np.issubdtype(var[d].dtype, np.datetime64)]
            time = datetimes[0] if datetimes else None
        if time is None:
            raise ValueError(
                f"variable {variable!r} in {source} has no time dimension among {tuple(all_dims)} ("
                f"expected one named like {TIME_NAMES[:4]} or holding datetimes); "
                "name the dimensions with --dims"
            )
        rest = [d for d in all_dims if d != time]
        y = _pick_dim(rest, Y_NAMES)
        x = _pick_dim(rest, X_NAMES)
        if y is None or x is None:
            unnamed = [d for d in rest if d not in (y, x) and _pick_dim([d], CHANNEL_NAMES) is None]
            if len(unnamed) < 2 - (y is not None) - (x is not None):
                raise ValueError(f"cannot tell the spatial dimensions of {variable!r} {tuple(all_dims)}; use --dims")
            if y is None and x is None:
                y, x = unnamed[-2], unnamed[-1]
            elif y is None:
                y = [d for d in unnamed if d != x][-1]
            else:
                x = [d for d in unnamed if d != y][-1]
        rest = [d for d in rest if d not in (y, x)]
        channel = _pick_dim(rest, CHANNEL_NAMES)
        rest = [d for d in rest if d != channel]
        if len(rest) > 1:
            raise ValueError(
                f"variable {variable!r} in {source} has dimensions {tuple(all_dims)}: besides time, y, x "
                f"({time}, {y}, {x}) and a channel there may be one sample dimension, found {tuple(rest)}; "
                "select or name them with --dims"
            )
        sample = rest[0] if rest else None
    order = [d for d in (sample, time, y, x, channel) if d is not None]
    check_array_metadata(f"{source}:{variable}", var.dtype, var.shape)
    values = _read_values(lambda: var.transpose(*order).values, f"{source}:{variable}")
    if sample is None:
        values = values[None]
    if channel is None:
        values = values[..., None]

    def coord(dim: str) -> np.ndarray | None:
        return np.asarray(var[dim].values) if dim in var.coords else None

    attrs = {str(k): v for k, v in var.attrs.items()}
    return ContextInput(
        frames=values,
        source=Path(source),
        variable=variable,
        time=coord(time),
        y=coord(y),
        x=coord(x),
        dims=(sample or "sample", time, y, x, channel or "channel"),
        attrs=attrs,
    )


def read_context(
    path: str | os.PathLike,
    key: str | None = None,
    dims: tuple[str, ...] | None = None,
) -> ContextInput:
    """Read a context sequence from `.npy`, HDF5, zarr or netCDF.

    Args:
        path: the file (a folder for zarr).
        key: the HDF5 dataset / zarr array / xarray variable (default: `frames` or the only candidate).
        dims: for xarray inputs, the dimension names in `(sample, time, y, x, channel)` order (sample and
            channel optional) when they cannot be recognised by name.

    Returns:
        A [`ContextInput`] with `frames` `(B, T, H, W, C)` as float32, in the file's units.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file cannot be read, has an unknown suffix, holds no suitable array, or its array has
            another shape.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.exists():
        raise FileNotFoundError(f"context file {source!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in CONTEXT_SUFFIXES:
        raise ValueError(
            f"context file must end in one of {CONTEXT_SUFFIXES} (.npy, HDF5, zarr, netCDF), got {source!r}"
        )
    if suffix in NPY_SUFFIXES:
        from ..data.readers import check_array_metadata, load_npy

        array = load_npy(path)
        check_array_metadata(source, array.dtype, array.shape)
        context = ContextInput(frames=_to_five_dims(array, source), source=path)
    elif suffix in HDF5_SUFFIXES:
        context = _read_hdf5(path, key)
    elif suffix in NETCDF_SUFFIXES:
        from ..data.readers import open_netcdf

        with open_netcdf(path) as data:
            context = _xarray_context(data, source, key, dims)
    else:
        context = _read_zarr(path, key, dims)
    if context.frames.size == 0:
        raise ValueError(f"context in {source} is empty, shape {tuple(context.frames.shape)}")
    with np.errstate(over="ignore"):  # values beyond float32's range become infinite, refused below
        context.frames = np.ascontiguousarray(context.frames, dtype=np.float32)
    if np.isinf(context.frames).any():
        raise ValueError(f"context in {source} contains infinite values (or values beyond float32's, 3.4e38)")
    # NaN marks pixels outside a radar's domain; a sample without any pixel inside has nothing to forecast from.
    empty = np.isnan(context.frames).all(axis=(1, 2, 3, 4))
    if empty.any():
        raise ValueError(
            f"context in {source} is NaN everywhere in sample(s) {np.flatnonzero(empty).tolist()}: NaN marks pixels "
            "outside the radar domain, and these have none inside"
        )
    _check_recorded(context.attrs, source)
    return context


def _check_recorded(attrs: dict[str, Any], source: str) -> None:
    """Refuse what a file records about its frames, where the forecast uses it, when it is of the wrong kind:
    units that are not text (they become an attribute of the forecast file), a pixel size or frame interval that
    is not a positive number (checked against the pipeline's)."""
    units = attrs.get("units")
    if units is not None and not isinstance(units, str):
        raise ValueError(f"{source} records units {units!r}, which are not text")
    for key, unit in (("pixel_size_km", "km"), ("frame_interval_minutes", "minutes")):
        value = attrs.get(key)
        if value is None:
            continue
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if not (number and math.isfinite(value) and value > 0):
            raise ValueError(f"{source} records {key} = {value!r}, which is not a positive number of {unit}")


def _read_values(read: Callable[[], Any], where: str) -> np.ndarray:
    """`read()`, the values of an array whose metadata have been checked, with the error of damaged data (a
    chunk cut short, a changed byte) naming the array: decompressors and storage libraries raise many kinds."""
    from ..utils.files import file_read_error

    try:
        return np.asarray(read())
    except MemoryError:
        raise
    except Exception as error:
        raise file_read_error(where, "an array (damaged or unreadable data)", error) from None


def _choose_array(names: list[str], key: str | None, source: str, kind: str) -> str:
    """`key`, checked to be one of `names`; by default `frames`, or the file's only array."""
    if key is None:
        key = "frames" if "frames" in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise ValueError(f"{source} holds {len(names)} {kind}s {names}; choose one with --variable")
    if key not in names:
        raise ValueError(f"{source} has no {kind} {key!r}; it holds {names}")
    return key


def _read_hdf5(path: Path, key: str | None) -> ContextInput:
    from ..data.readers import check_array_metadata, import_optional, open_hdf5

    h5py = import_optional("h5py", "reading HDF5 context files")
    source = str(path)
    with open_hdf5(path) as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        key = _choose_array(sorted(names), key, source, "dataset")
        check_array_metadata(f"{source}:{key}", f[key].dtype, f[key].shape)
        array = _read_values(lambda: f[key][()], f"{source}:{key}")
        attrs = _sequence_file_metadata(f)
    return ContextInput(frames=_to_five_dims(array, f"{source}:{key}"), source=path, variable=key, attrs=attrs)


def _sequence_file_metadata(root: Any) -> dict[str, Any]:
    """What a sequence file written by `write_sequences` (e.g. `prediff data radar`) records: units, pixel size,
    frame interval, ...; empty for other files."""
    from ..data.io import METADATA_ATTR

    raw = root.attrs.get(METADATA_ATTR)
    try:
        metadata = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else {}
    except (TypeError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _read_zarr(path: Path, key: str | None, dims: tuple[str, ...] | None) -> ContextInput:
    from ..data.readers import zarr_warnings_silenced

    # The reader refuses a damaged store with one error; zarr's warnings about it would come first.
    with zarr_warnings_silenced():
        return _read_zarr_store(path, key, dims)


def _read_zarr_store(path: Path, key: str | None, dims: tuple[str, ...] | None) -> ContextInput:
    from ..data.readers import check_array_metadata, import_optional, open_zarr

    source = str(path)
    # Checks every array's metadata (object dtypes, pickle codecs) before xarray or zarr decodes anything.
    node = open_zarr(path)
    xr = import_optional("xarray", "reading zarr context files")
    data = None
    try:
        with warnings.catch_warnings():
            # A store without consolidated metadata is read all the same; that is not worth a warning here.
            warnings.simplefilter("ignore", RuntimeWarning)
            data = xr.open_zarr(path, consolidated=None)
    except (ValueError, KeyError, OSError, TypeError):
        data = None  # not written by xarray: read it as a plain zarr array / group below
    if data is not None:
        # xarray calls the dimensions of a store it did not write dim_0, dim_1, ...: that is plain zarr.
        named = [
            name
            for name, var in data.data_vars.items()
            if var.ndim >= 3 and not all(re.fullmatch(r"dim_\d+", str(d)) for d in var.dims)
        ]
        if named and (key is None or key in named):
            return _xarray_context(data, source, key, dims)
    attrs: dict[str, Any] = {}
    if hasattr(node, "array_keys"):
        key = _choose_array(sorted(node.array_keys()), key, source, "array")
        attrs = _sequence_file_metadata(node)
        node = node[key]
    where = source if key is None else f"{source}:{key}"
    check_array_metadata(where, node.dtype, node.shape)
    frames = _read_values(lambda: node[...], where)
    return ContextInput(frames=_to_five_dims(frames, where), source=path, variable=key, attrs=attrs)


def check_context_values(
    frames: np.ndarray, value_range: tuple[float, float], clip: bool = False, name: str = "context"
) -> np.ndarray:
    """Check that `frames` lie in the pipeline's declared `value_range` (its physical range).

    Returns `frames`, clipped when `clip` is set. Raises `ValueError` naming the range found and the range
    expected otherwise: a context in other units (e.g. [0, 1] for a 0-255 model) would give meaningless
    forecasts without any other sign.
    """
    from .pipeline_utils import range_outside

    lo, hi = (float(v) for v in value_range)
    found = range_outside(frames, (lo, hi))
    if found is not None and not clip:
        raise ValueError(
            f"{name} values span [{found[0]:g}, {found[1]:g}], outside the pipeline's value_range "
            f"[{lo:g}, {hi:g}] (its physical units); convert the input to those units, or pass --clip "
            "to clip it"
        )
    return np.clip(frames, lo, hi) if clip else frames


def check_grid_and_clock(
    context: ContextInput,
    pixel_size_km: float | None,
    frame_interval_minutes: float | None,
    interval_minutes: float | None = None,
) -> None:
    """Refuse a context recorded on another grid or clock than the pipeline was trained for.

    The context's pixel size is the one its file records (`pixel_size_km`, as `prediff data radar` writes);
    its frame interval is `interval_minutes` (the `--interval-minutes` given), else the one its file records,
    else the step of its time coordinate. What either side does not record is not checked.
    """
    recorded = context.attrs.get("pixel_size_km")
    if pixel_size_km is not None and recorded is not None:
        if not math.isclose(float(recorded), float(pixel_size_km), rel_tol=0.01):
            raise ValueError(
                f"{context.source} records {float(recorded):g} km pixels, the pipeline was trained on "
                f"{float(pixel_size_km):g} km pixels; average blocks of pixels first (e.g. prediff data radar "
                f"--pixel-size-km {float(pixel_size_km):g})"
            )
    minutes = interval_minutes if interval_minutes is not None else context.attrs.get("frame_interval_minutes")
    step = context.time_step
    if minutes is None and step is not None:
        minutes = float(step / np.timedelta64(1, "s")) / 60.0
    if frame_interval_minutes is not None and minutes is not None:
        if not math.isclose(float(minutes), float(frame_interval_minutes), rel_tol=0.01):
            raise ValueError(
                f"the frames of {context.source} are {float(minutes):g} minutes apart, the pipeline was trained on "
                f"{float(frame_interval_minutes):g} minutes; take every k-th frame first (e.g. prediff data radar "
                f"--interval-minutes {float(frame_interval_minutes):g})"
            )
