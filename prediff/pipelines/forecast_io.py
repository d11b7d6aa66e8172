"""Forecasting from files: load a saved pipeline, read a user's context sequence, write the ensemble.

Context files (read by [`read_context`]):

- `.npy`: an array `(T, H, W)`, `(T, H, W, C)` or `(B, T, H, W, C)` (read without pickle);
- HDF5 (`.h5`, `.hdf5`): the dataset `key` (default: `frames`, or the file's only dataset), same shapes;
- zarr (`.zarr`): an xarray store (a variable with a time dimension) or a plain zarr array / group member;
- netCDF (`.nc`, `.nc4`): an xarray variable with a time dimension.

An xarray variable is reordered to `(sample, time, y, x, channel)` from its dimension names: the time
dimension is called `time` (or `t`, `frame`, `step`, ...) or carries datetimes, the spatial ones `y`/`x` (or
`lat`/`lon`, `row`/`col`, ...) or are the last two left, a `channel`/`band` dimension becomes the channel
axis and any remaining one the sample axis. `dims` names them explicitly when the names say nothing.

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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .pipeline_earthformer import EarthformerPipeline
    from .pipeline_prediff import PreDiffPipeline

__all__ = [
    "CONTEXT_SUFFIXES",
    "FORECAST_SUFFIXES",
    "ContextInput",
    "check_context_values",
    "forecast_dataset",
    "load_forecast_pipeline",
    "read_context",
    "write_forecast",
    "write_pysteps_array",
]

NPY_SUFFIXES = (".npy",)
HDF5_SUFFIXES = (".h5", ".hdf5")
ZARR_SUFFIXES = (".zarr",)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
CONTEXT_SUFFIXES = NPY_SUFFIXES + HDF5_SUFFIXES + ZARR_SUFFIXES + NETCDF_SUFFIXES
FORECAST_SUFFIXES = NETCDF_SUFFIXES + ZARR_SUFFIXES

TIME_NAMES = ("time", "t", "times", "frame", "frames", "step", "steps", "valid_time", "datetime", "date")
Y_NAMES = ("y", "lat", "latitude", "row", "rows", "north_south", "south_north", "height", "h", "ny")
X_NAMES = ("x", "lon", "longitude", "col", "cols", "column", "west_east", "east_west", "width", "w", "nx")
CHANNEL_NAMES = ("channel", "channels", "c", "band", "bands", "variable", "level", "levels")

#: Components a saved pipeline needs, by pipeline class (optional ones may be recorded as null).
REQUIRED_COMPONENTS = {
    "PreDiffPipeline": ("vae", "unet", "scheduler"),
    "EarthformerPipeline": ("model",),
}


# ---------------------------------------------------------------------------------------------- pipelines


def _check_pipeline_folder(folder: Path) -> str:
    """The pipeline class recorded in `folder/model_index.json`, after checking every component is there."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"pipeline folder {str(folder)!r} has no model_index.json: not a saved PreDiffPipeline or "
            "EarthformerPipeline (save one with pipeline.save_pretrained(folder))"
        )
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {index_path}: {error}") from None
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if class_name not in REQUIRED_COMPONENTS:
        raise ValueError(
            f"{index_path} records _class_name={class_name!r}; expected one of {sorted(REQUIRED_COMPONENTS)}"
        )
    missing = []
    for name in REQUIRED_COMPONENTS[class_name]:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
            missing.append(f"{name} (not recorded in model_index.json)")
    for name, entry in index.items():
        is_component = isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str | None) for v in entry)
        if name.startswith("_") or not is_component or entry[1] is None:
            continue
        sub = folder / name
        is_scheduler = "Scheduler" in str(entry[1])
        config = sub / ("scheduler_config.json" if is_scheduler else "config.json")
        if not config.is_file():
            missing.append(f"{name}/{config.name}")
        elif not is_scheduler and not any(sub.glob("*.safetensors")) and not any(sub.glob("*.bin")):
            missing.append(f"{name}/*.safetensors (weights)")
    if missing:
        raise FileNotFoundError(f"pipeline folder {str(folder)!r} is incomplete: missing {', '.join(missing)}")
    return class_name


def load_forecast_pipeline(
    pipeline: str | os.PathLike,
    device: str | None = None,
    value_range: tuple[float, float] | None = None,
) -> PreDiffPipeline | EarthformerPipeline:
    """Load a saved [`PreDiffPipeline`] or [`EarthformerPipeline`] from a folder, a Hub repository id (cached
    copies work offline) or the name of a pipeline shipped with the package (`prediff-storms-tiny`).

    A folder holding only a saved [`EarthformerModel`] (its `config.json`) is wrapped in an
    `EarthformerPipeline` with `value_range` (default 0-255).

    Args:
        pipeline: folder, repository id or shipped name.
        device: move the pipeline there (e.g. "cpu", "cuda").
        value_range: physical range of a bare `EarthformerModel` (ignored for saved pipelines).

    Raises:
        FileNotFoundError: nothing found there, or a component is missing from the folder.
        ValueError: the folder holds something else.
    """
    from .pipeline_earthformer import EarthformerPipeline
    from .pipeline_prediff import PreDiffPipeline

    name = os.fspath(pipeline)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        shipped = _shipped_folder(name)
        if shipped is not None:
            folder = shipped
    if folder.is_dir():
        if not (folder / "model_index.json").is_file() and (folder / "config.json").is_file():
            loaded: Any = _bare_earthformer(folder, value_range)
        else:
            class_name = _check_pipeline_folder(folder)
            cls = PreDiffPipeline if class_name == "PreDiffPipeline" else EarthformerPipeline
            loaded = cls.from_pretrained(folder)
    else:
        if folder.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
            raise FileNotFoundError(f"pipeline {name!r} is not a folder holding a saved pipeline")
        loaded = _from_hub(name, PreDiffPipeline, EarthformerPipeline)
    if device is not None:
        loaded = loaded.to(device)
    return loaded


def _shipped_folder(name: str) -> Path | None:
    try:
        from ..pretrained import SHIPPED_PIPELINES, shipped_pipeline_path
    except ImportError:
        return None
    return shipped_pipeline_path(name) if name in SHIPPED_PIPELINES else None


def _bare_earthformer(folder: Path, value_range: tuple[float, float] | None) -> EarthformerPipeline:
    from ..models.earthformer import EarthformerModel
    from .pipeline_earthformer import EarthformerPipeline

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {folder / 'config.json'}: {error}") from None
    if config.get("_class_name") != "EarthformerModel":
        raise ValueError(
            f"{folder} holds a {config.get('_class_name')!r} model; expected a saved pipeline "
            "(model_index.json) or an EarthformerModel"
        )
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"EarthformerModel folder {str(folder)!r} has no safetensors weights")
    model = EarthformerModel.from_pretrained(folder, use_safetensors=True).eval()
    return EarthformerPipeline(model, value_range=value_range or (0.0, 255.0))


def _from_hub(repo_id: str, *classes: type) -> Any:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["model_index.json"]))
    except Exception as error:  # the hub raises many kinds (offline, unknown repo, invalid id)
        raise FileNotFoundError(
            f"pipeline {repo_id!r} is neither a local folder nor a Hub repository that can be reached or is "
            f"cached ({type(error).__name__}: {error})"
        ) from None
    class_name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    for cls in classes:
        if cls.__name__ == class_name:
            return cls.from_pretrained(repo_id)
    raise ValueError(f"Hub repository {repo_id!r} holds a {class_name!r}, not a prediff pipeline")


# ---------------------------------------------------------------------------------------------- reading


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
    from ..data.utils import check_array_metadata

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
    values = var.transpose(*order).values
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
        from ..data.utils import check_array_metadata, load_npy

        array = load_npy(path)
        check_array_metadata(source, array.dtype, array.shape)
        context = ContextInput(frames=_to_five_dims(array, source), source=path)
    elif suffix in HDF5_SUFFIXES:
        context = _read_hdf5(path, key)
    elif suffix in NETCDF_SUFFIXES:
        from ..data.utils import open_netcdf

        with open_netcdf(path) as data:
            context = _xarray_context(data, source, key, dims)
    else:
        context = _read_zarr(path, key, dims)
    if context.frames.size == 0:
        raise ValueError(f"context in {source} is empty, shape {tuple(context.frames.shape)}")
    context.frames = np.ascontiguousarray(context.frames, dtype=np.float32)
    if not np.isfinite(context.frames).all():
        raise ValueError(f"context in {source} contains NaN or infinite values (missing data must be filled)")
    return context


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
    from ..data.utils import check_array_metadata, import_optional, open_hdf5

    h5py = import_optional("h5py", "reading HDF5 context files")
    source = str(path)
    with open_hdf5(path) as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        key = _choose_array(sorted(names), key, source, "dataset")
        check_array_metadata(f"{source}:{key}", f[key].dtype, f[key].shape)
        array = f[key][()]
    return ContextInput(frames=_to_five_dims(array, f"{source}:{key}"), source=path, variable=key)


def _read_zarr(path: Path, key: str | None, dims: tuple[str, ...] | None) -> ContextInput:
    from ..data.utils import check_array_metadata, import_optional, open_zarr

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
    if hasattr(node, "array_keys"):
        key = _choose_array(sorted(node.array_keys()), key, source, "array")
        node = node[key]
    where = source if key is None else f"{source}:{key}"
    check_array_metadata(where, node.dtype, node.shape)
    return ContextInput(frames=_to_five_dims(node[...], where), source=path, variable=key)


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


# ---------------------------------------------------------------------------------------------- writing


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
    from ..data.utils import import_optional

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
    from ..data.utils import atomic_output

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
    from ..data.utils import atomic_output

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


# ---------------------------------------------------------------------------------------------- knowledge


#: File of a pipeline folder recording the training distribution of the future mean intensity (physical
#: units).
INTENSITY_STATS_FILE = "future_intensity.json"


def pipeline_intensity_stats(pipeline: Any) -> tuple[float, float] | None:
    """`(mean, std)` of the future mean intensity over the pipeline's training data, in physical units, read
    from `future_intensity.json` in the folder the pipeline was loaded from; None when it has none."""
    name = pipeline.config.get("_name_or_path") if hasattr(pipeline, "config") else None
    if not name:
        return None
    path = Path(name) / INTENSITY_STATS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return float(record["mean"]), float(record["std"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} must hold numbers 'mean' and 'std' (physical units): {error}") from None


def intensity_target(
    pipeline: Any,
    target: float | None = None,
    n_sigma: float | None = None,
    mean: float | None = None,
    std: float | None = None,
) -> tuple[float, str]:
    """The anticipated mean intensity (physical units) for the anticipated-intensity control, and where it
    came from.

    Either `target` itself, or `mean + n_sigma * std` with `mean`/`std` given or read from the pipeline's
    `future_intensity.json` ([`pipeline_intensity_stats`]).
    """
    if target is not None:
        if n_sigma is not None:
            raise ValueError(f"give either a target or n_sigma, not both (target={target}, n_sigma={n_sigma})")
        if not np.isfinite(target):
            raise ValueError(f"target must be a finite number, got {target}")
        return float(target), "target given"
    if n_sigma is None:
        raise ValueError("the intensity control needs a target: give --target VALUE or --n-sigma N")
    if (mean is None) != (std is None):
        raise ValueError(f"give both --intensity-mean and --intensity-std, got mean={mean}, std={std}")
    source = "given mean and std"
    if mean is None:
        stats = pipeline_intensity_stats(pipeline)
        if stats is None:
            raise ValueError(
                "n_sigma needs the training distribution of the future mean intensity: the pipeline folder "
                f"has no {INTENSITY_STATS_FILE}; give --intensity-mean and --intensity-std (physical units)"
            )
        mean, std = stats
        source = f"{INTENSITY_STATS_FILE} of the pipeline"
    if not std >= 0:
        raise ValueError(f"the intensity std must be >= 0, got {std}")
    return float(mean + n_sigma * std), f"mu + {n_sigma:g} sigma (mu={mean:.4g}, sigma={std:.4g}; {source})"


def member_generators(seed: int, sample_ids: Any, members: int) -> list:
    """One `torch.Generator` per (sample, member), ordered as the pipeline's rows (sample, then member).

    Each is seeded from `(seed, sample_id, member)` alone, so a forecast does not depend on which other
    samples share its batch: evaluating in batches of 1 or of 16 gives the same ensembles.
    """
    import torch

    generators = []
    for sample in sample_ids:
        for member in range(members):
            state = np.random.SeedSequence([int(seed), int(sample), member]).generate_state(2, dtype=np.uint32)
            generators.append(torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1))
    return generators


def launched_processes() -> Any:
    """The `accelerate.PartialState` of the processes `accelerate launch` started (a single process when run
    plainly), with every process a CPU rank of a gloo group under `ACCELERATE_USE_CPU=true`, as in
    `accelerate.Accelerator`."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
