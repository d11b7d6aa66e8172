"""Writing generated data sets to HDF5 or zarr, reading them back lazily, and summarising data files.

A written data set is one group holding one array per item field, all indexed by sequence along the first axis
(``frames`` is (N, T, H, W, C)), and the generator's metadata as attributes (``generator``, ``seed``,
``units``, ``value_range``, ...; the full set also as the JSON attribute ``prediff_metadata``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_output
from ..utils.memory import check_fits_in_memory
from .readers import (
    check_array_metadata,
    import_optional,
    load_npy,
    load_npz,
    open_hdf5,
    open_netcdf,
    open_zarr,
)

HDF5_SUFFIXES = (".h5", ".hdf5")
ZARR_SUFFIXES = (".zarr",)
METADATA_ATTR = "prediff_metadata"


def storage_format(path: str | os.PathLike) -> str:
    """``"hdf5"`` or ``"zarr"`` from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in ZARR_SUFFIXES:
        return "zarr"
    raise ValueError(
        f"output path must end in one of {HDF5_SUFFIXES + ZARR_SUFFIXES} (HDF5 or zarr), got {os.fspath(path)!r}"
    )


def _flat_attrs(metadata: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {METADATA_ATTR: json.dumps(dict(metadata), sort_keys=True)}
    for key, value in metadata.items():
        if isinstance(value, (str, int, float, bool)):
            attrs[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            attrs[key] = list(value)
    return attrs


def write_sequences(
    path: str | os.PathLike,
    items: Iterable[Mapping[str, np.ndarray] | np.ndarray],
    num_sequences: int,
    frame_shape: tuple[int, ...],
    dtype: Any = np.uint8,
    metadata: Mapping[str, Any] | None = None,
    fields: Mapping[str, tuple[tuple[int, ...], Any]] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    chunk_sequences: int = 16,
) -> Path:
    """Stream ``num_sequences`` items into an HDF5 (``.h5``) or zarr (``.zarr``) data set, atomically.

    Args:
        path: output file (HDF5) or folder (zarr); the suffix picks the format.
        items: yields either the frames array or a dict with ``"frames"`` and one array per entry of
            ``fields``.
        num_sequences: how many items ``items`` yields.
        frame_shape: shape of one item's frames, e.g. (T, H, W, C).
        dtype: stored dtype of the frames.
        metadata: generator, seed, units, value_range, ... stored as attributes.
        fields: extra per-item arrays ``name -> (shape, dtype)`` (e.g. N-body positions).
        overwrite: replace an existing output (otherwise ``FileExistsError``).
        progress: show a progress bar.
        chunk_sequences: items buffered in memory between writes.
    """
    from tqdm.auto import tqdm

    fmt = storage_format(path)
    specs = {"frames": (tuple(frame_shape), np.dtype(dtype))}
    for name, (shape, field_dtype) in (fields or {}).items():
        specs[name] = (tuple(shape), np.dtype(field_dtype))
    attrs = _flat_attrs(metadata or {})
    bar = tqdm(total=num_sequences, desc=f"writing {Path(path).name}", disable=not progress)

    def fill(arrays: Mapping[str, Any]) -> None:
        buffers = {name: np.empty((chunk_sequences, *shape), dtype=dt) for name, (shape, dt) in specs.items()}
        start = count = 0
        for item in items:
            if start + count == num_sequences:
                raise ValueError(f"items yielded more than num_sequences={num_sequences} sequences")
            record = item if isinstance(item, Mapping) else {"frames": item}
            for name, (shape, _) in specs.items():
                if name not in record:
                    raise ValueError(f"item {start + count} lacks the field {name!r}")
                value = np.asarray(record[name])
                if value.shape != shape:
                    raise ValueError(f"item {start + count} field {name!r} has shape {value.shape}, expected {shape}")
                buffers[name][count] = value
            count += 1
            if count == chunk_sequences:
                for name in specs:
                    arrays[name][start : start + count] = buffers[name][:count]
                start += count
                bar.update(count)
                count = 0
        if count:
            for name in specs:
                arrays[name][start : start + count] = buffers[name][:count]
            start += count
            bar.update(count)
        if start != num_sequences:
            raise ValueError(f"items yielded {start} sequences, expected num_sequences={num_sequences}")

    try:
        if fmt == "hdf5":
            h5py = import_optional("h5py", "writing HDF5 files")
            with atomic_output(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
                arrays = {
                    name: f.create_dataset(name, shape=(num_sequences, *shape), dtype=dt, chunks=(1, *shape))
                    for name, (shape, dt) in specs.items()
                }
                fill(arrays)
                f.attrs.update(attrs)
        else:
            zarr = import_optional("zarr", "writing zarr stores")
            with atomic_output(path, overwrite=overwrite, directory=True) as tmp:
                group = zarr.open_group(str(tmp), mode="w")
                create = getattr(group, "create_array", None) or group.create_dataset
                arrays = {
                    name: create(name, shape=(num_sequences, *shape), dtype=dt, chunks=(1, *shape))
                    for name, (shape, dt) in specs.items()
                }
                fill(arrays)
                group.attrs.update(attrs)
    finally:
        bar.close()
    return Path(path)


class SequenceFile:
    """A data set written by :func:`write_sequences`, opened lazily (once per process, so picklable).

    Every array must hold integers or floats, and one item of each (``array[index]``) must fit in memory;
    both are checked from the file's metadata when it is opened.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"data set {self.path} does not exist")
        self.format = storage_format(self.path)
        self._pid: int | None = None
        self._root: Any = None
        root = self._open()
        if "frames" not in root:
            raise ValueError(f"{self.path} holds no 'frames' array (found {sorted(root.keys())})")
        arrays = self._arrays(root)
        for name, array in arrays.items():
            check_array_metadata(f"{self.path}:{name}", array.dtype, array.shape[1:])
        self.shape = tuple(root["frames"].shape)
        self.fields = sorted(arrays)
        self.metadata = self._read_metadata(root)

    def _open(self) -> Any:
        if self._root is None or self._pid != os.getpid():
            self._root = open_hdf5(self.path) if self.format == "hdf5" else _open_zarr_group(self.path)
            self._pid = os.getpid()
        return self._root

    def _arrays(self, root: Any) -> dict[str, Any]:
        """The arrays at the top of the file (HDF5 datasets or zarr arrays), by name."""
        if self.format == "zarr":
            return {name: root[name] for name in root.array_keys()}
        h5py = import_optional("h5py", "reading HDF5 files")
        return {name: item for name, item in root.items() if isinstance(item, h5py.Dataset)}

    @staticmethod
    def _read_metadata(root: Any) -> dict[str, Any]:
        raw = root.attrs.get(METADATA_ATTR)
        if raw is None:
            return {}
        if isinstance(raw, bytes):
            raw = raw.decode()
        return json.loads(raw)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index: int, name: str = "frames") -> np.ndarray:
        return np.asarray(self._open()[name][index])

    def array(self, name: str = "frames") -> Any:
        """The stored array ``name`` (an h5py Dataset or zarr Array), sliced lazily."""
        return self._open()[name]

    def check_metadata(self, expected: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` listing every entry of ``expected`` that the file records differently."""
        found = self.metadata
        wrong = [
            f"{key}: file has {found.get(key)!r}, expected {value!r}"
            for key, value in expected.items()
            if found.get(key) != (list(value) if isinstance(value, tuple) else value)
        ]
        if wrong:
            raise ValueError(f"{self.path} was written with other settings: " + "; ".join(wrong))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_root"] = None
        state["_pid"] = None
        return state


def _open_zarr_group(path: Path) -> Any:
    """A zarr group opened for reading (its arrays checked by [`open_zarr`]), or a ``ValueError`` naming it."""
    node = open_zarr(path)
    if not hasattr(node, "array_keys"):
        raise ValueError(f"{path} is a single zarr array; expected a zarr group of arrays")
    return node


def _value_range(array: Any, where: str, max_elements_per_read: int = 1 << 24) -> tuple[float, float] | None:
    """min and max of an array-like (h5py, zarr, xarray or numpy), read in slabs along the first axis."""
    if array.size == 0 or not np.issubdtype(np.dtype(array.dtype), np.number):
        return None
    if array.ndim == 0:
        value = float(np.asarray(array[...]))
        return value, value
    check_fits_in_memory(where, array.shape[1:], array.dtype)
    per_row = max(1, int(np.prod(array.shape[1:])))
    step = max(1, max_elements_per_read // per_row)
    low, high = np.inf, -np.inf
    for start in range(0, array.shape[0], step):
        block = np.asarray(array[start : start + step])
        low = min(low, float(np.nanmin(block)))
        high = max(high, float(np.nanmax(block)))
    return low, high


def _describe(name: str, array: Any, where: str) -> str:
    rng = _value_range(array, where)
    span = f"  range [{rng[0]:g}, {rng[1]:g}]" if rng is not None else ""
    return f"  {name}: shape {tuple(array.shape)}  dtype {array.dtype}{span}"


def inspect_path(path: str | os.PathLike) -> str:
    """A text summary of a data file: arrays with shapes, dtypes and value ranges, metadata and counts.

    Understands HDF5 files, zarr stores, netCDF files (ICAR-ENSO), ``.npy`` arrays (such as a context for
    ``prediff forecast``), ``.npz`` archives and SEVIR / SEVIR-LR roots (folders holding ``CATALOG.csv``).
    """
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"{target} does not exist")
    suffix = target.suffix.lower()
    lines = [f"{target}"]
    if target.is_dir() and (target / "CATALOG.csv").exists():
        from .sevir import describe_sevir_root

        lines += describe_sevir_root(target)
    elif suffix in HDF5_SUFFIXES:
        h5py = import_optional("h5py", "reading HDF5 files")
        with open_hdf5(target) as f:
            lines.append("format: HDF5")
            datasets: list[tuple[str, Any]] = []
            f.visititems(lambda name, obj: datasets.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
            lines += [_describe(name, obj, f"{target}:{name}") for name, obj in datasets]
            lines += _describe_attrs(f.attrs)
    elif suffix in ZARR_SUFFIXES:
        node = open_zarr(target)
        lines.append("format: zarr")
        if hasattr(node, "array_keys"):
            lines += [_describe(name, node[name], f"{target}:{name}") for name in sorted(node.array_keys())]
        else:
            lines.append(_describe("array", node, str(target)))
        lines += _describe_attrs(node.attrs)
    elif suffix == ".nc":
        with open_netcdf(target) as ds:
            lines.append("format: netCDF")
            lines.append("  dims: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
            for name, var in ds.data_vars.items():
                lines.append(_describe(f"{name}{tuple(var.dims)}", var, f"{target}:{name}"))
    elif suffix == ".npy":
        lines.append("format: npy")
        lines.append(_describe("array", load_npy(target, mmap_mode="r"), str(target)))
    elif suffix == ".npz":
        lines.append("format: npz")
        lines += [_describe(name, array, f"{target}:{name}") for name, array in load_npz(target).items()]
    else:
        raise ValueError(
            f"cannot inspect {target}: expected an HDF5 (.h5/.hdf5), zarr (.zarr), netCDF (.nc), .npy or .npz "
            "file, or a SEVIR root folder with CATALOG.csv"
        )
    return "\n".join(lines)


def _describe_attrs(attrs: Mapping[str, Any]) -> list[str]:
    shown = {k: v for k, v in attrs.items() if k != METADATA_ATTR}
    if not shown:
        return []
    out = ["metadata:"]
    for key in sorted(shown):
        value = shown[key]
        if isinstance(value, np.ndarray):
            value = value.tolist()
        out.append(f"  {key}: {value}")
    return out


#: Metadata that sequence files merged into one must agree on: what their values and grids mean.
MERGE_MUST_AGREE = ("units", "value_range", "value_transform", "pixel_size_km", "frame_interval_minutes")


def merge_sequence_files(
    paths: Sequence[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write the sequences of several files (e.g. radar events of several sources from `prediff data radar`) into
    one, in order, atomically.

    The files must hold the same arrays with the same item shapes and dtypes, and agree on
    [`MERGE_MUST_AGREE`] (a mix of units or grids would train a model on nonsense). The merged metadata keeps
    those entries and records each input's own metadata under `"merged_from"`.

    Raises:
        ValueError: fewer than two inputs, or inputs that disagree (each difference named).
    """
    if len(paths) < 2:
        raise ValueError(f"merging needs at least two sequence files, got {len(paths)}")
    files = [SequenceFile(path) for path in paths]
    first = files[0]
    layout = {name: (tuple(first.array(name).shape[1:]), first.array(name).dtype) for name in first.fields}
    for other in files[1:]:
        found = {name: (tuple(other.array(name).shape[1:]), other.array(name).dtype) for name in other.fields}
        if found != layout:
            raise ValueError(f"{other.path} holds arrays {found}, but {first.path} holds {layout}")
        for key in MERGE_MUST_AGREE:
            if other.metadata.get(key) != first.metadata.get(key):
                raise ValueError(
                    f"{other.path} records {key}={other.metadata.get(key)!r}, but {first.path} records "
                    f"{first.metadata.get(key)!r}"
                )
    metadata = {key: first.metadata[key] for key in MERGE_MUST_AGREE if key in first.metadata}
    metadata["merged_from"] = [{"path": os.fspath(f.path), **f.metadata} for f in files]

    def items():
        for file in files:
            for index in range(len(file)):
                yield {name: file.read(index, name) for name in file.fields}

    frame_shape, frame_dtype = layout.pop("frames")
    return write_sequences(
        out,
        items(),
        num_sequences=sum(len(f) for f in files),
        frame_shape=frame_shape,
        dtype=frame_dtype,
        metadata=metadata,
        fields=layout,
        overwrite=overwrite,
        progress=progress,
    )
