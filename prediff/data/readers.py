"""Reading data files safely: optional readers, files opened with errors that name them, what a file declares
checked before anything is read (dtypes, sizes, pickle), values scaled to [0, 1], per-process HDF5 handles.

Data files come from anywhere: a header can claim terabytes and a zarr store can ask for pickle, so the data sets
and the forecast command read files through these functions only. Generic checks and file output live in
[`prediff.utils`].
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..utils.files import file_read_error
from ..utils.memory import check_fits_in_memory, format_bytes
from ..utils.units import to_transformed, to_unit

_EXTRA_OF = {
    "h5py": "data",
    "pandas": "data",
    "xarray": "data",
    "netCDF4": "data",
    "zarr": "data",
    "PIL": "data",
}
#: The first bytes of every ``.npy`` file (``numpy.lib.format.MAGIC_PREFIX``).
_NPY_MAGIC = b"\x93NUMPY"


def import_optional(module: str, purpose: str) -> Any:
    """Import ``module`` or raise an ``ImportError`` that names the extra providing it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = _EXTRA_OF.get(module.split(".")[0], "data")
        raise ImportError(
            f'{purpose} needs the optional package {module!r}; install it with: pip install "prediff[{extra}]"'
        ) from error


def check_array_metadata(where: str, dtype: Any, read_shape: Sequence[int]) -> None:
    """Check what a file declares about an array before reading ``read_shape`` values of it at once.

    Only integer and float values are read (object arrays hold Python objects, which zarr and numpy may
    decode with pickle, that is by running code), and only as many as fit in memory (see
    [`check_fits_in_memory`]).

    Raises:
        ValueError: naming ``where``, the dtype or the memory needed.
    """
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{where} holds {dtype} values; prediff reads integer or float dtypes only")
    check_fits_in_memory(where, read_shape, dtype)


def open_hdf5(path: str | os.PathLike) -> Any:
    """``h5py.File(path, "r")``, with errors that name the file. Opening reads metadata only.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not an HDF5 file, or not readable (h5py raises a bare ``OSError`` for both).
    """
    h5py = import_optional("h5py", "reading HDF5 files")
    if not os.path.exists(path):
        raise FileNotFoundError(f"HDF5 file {os.fspath(path)} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise file_read_error(path, "HDF5", error) from None


def open_netcdf(path: str | os.PathLike) -> Any:
    """``xarray.open_dataset(path)``, with errors that name the file.

    xarray reads the coordinates of every dimension when it opens a file: their sizes are checked from the
    file's metadata first (with netCDF4), so that a small file claiming a huge dimension is refused before
    anything is allocated. The data variables stay lazy; readers check them with [`check_array_metadata`].

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not a netCDF file xarray can read (xarray raises ``ValueError`` when no engine
            recognises the file and ``OSError`` from the netCDF library), or a coordinate would not fit in
            memory.
    """
    netcdf4 = import_optional("netCDF4", "reading netCDF files")
    xr = import_optional("xarray", "reading netCDF files")
    if not os.path.exists(path):
        raise FileNotFoundError(f"netCDF file {os.fspath(path)} does not exist")
    try:
        with netcdf4.Dataset(path, "r") as metadata:
            coordinates = {
                name: (var.shape, var.dtype)
                for name, var in metadata.variables.items()
                if var.dimensions == (name,) and isinstance(var.dtype, np.dtype)
            }
    except (OSError, ValueError, RuntimeError) as error:
        raise file_read_error(path, "netCDF", error) from None
    for name, (shape, dtype) in coordinates.items():
        check_fits_in_memory(f"{os.fspath(path)}:{name}", shape, dtype)
    try:
        return xr.open_dataset(path)
    except (OSError, ValueError, RuntimeError) as error:
        raise file_read_error(path, "netCDF", error) from None


def open_zarr(path: str | os.PathLike) -> Any:
    """``zarr.open(path, mode="r")`` (a group or an array), after checking the metadata of the arrays in it.

    zarr 2 decodes chunks with the codecs an array's metadata names, pickle included: reading such an array
    runs code. Before zarr or xarray decodes anything, the store's JSON metadata (per array and consolidated)
    is read directly and arrays of Python objects or with a pickle codec are refused, whatever zarr version is
    installed. Then one-dimensional arrays (coordinates, which xarray reads whole when it opens a store) must
    fit in memory. Nested groups are not looked at: neither prediff nor ``xarray.open_zarr`` reads them.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the store and the array: not a zarr store, unreadable metadata, an object dtype, a
            pickle codec, a coordinate too large for memory.
    """
    zarr = import_optional("zarr", "reading zarr stores")
    store = Path(path)
    if not store.exists():
        raise FileNotFoundError(f"zarr store {store} does not exist")
    for where, metadata in _zarr_array_metadata(store):
        codecs = [metadata.get("compressor"), *(metadata.get("filters") or ()), *(metadata.get("codecs") or ())]
        codec_names = [str(c.get("id") or c.get("name")) for c in codecs if isinstance(c, dict)]
        if "dtype" in metadata and _declares_objects(metadata["dtype"]):
            raise ValueError(
                f"{where} holds Python objects (dtype {metadata['dtype']!r}), which zarr decodes with codecs such "
                "as pickle that can run code; prediff reads numeric, date and fixed-width string arrays only"
            )
        if any("pickle" in name.lower() for name in codec_names):
            raise ValueError(f"{where} is encoded with pickle ({codec_names}), whose decoding can run code; refused")
    with zarr_warnings_silenced():
        try:
            node = zarr.open(str(store), mode="r")
        except Exception as error:  # zarr raises several kinds for a folder that is not a store
            raise file_read_error(store, "a zarr store", error) from None
        for name in sorted(node.array_keys()) if hasattr(node, "array_keys") else [None]:
            where = str(store) if name is None else f"{store}:{name}"
            try:
                array = node if name is None else node[name]
            except Exception as error:  # zarr refuses metadata it cannot use with several kinds
                raise file_read_error(where, "a zarr array", error) from None
            if len(array.shape) == 1:
                check_fits_in_memory(where, array.shape, array.dtype)
    return node


@contextlib.contextmanager
def zarr_warnings_silenced() -> Iterator[None]:
    """Silence zarr's warnings while a store is read. In a damaged store zarr warns about every object it does
    not recognise, a line each on the user's terminal, before the reader refuses the store with one error that
    names it; a sound store gives none."""
    zarr_errors = import_optional("zarr.errors", "reading zarr stores")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", getattr(zarr_errors, "ZarrUserWarning", UserWarning))
        yield


def _zarr_array_metadata(store: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, metadata)`` of every array a zarr store declares: the store itself or its direct children
    (``.zarray`` of format 2, ``zarr.json`` of format 3) and every array of its consolidated metadata
    (``.zmetadata``, or inside the root ``zarr.json``), which zarr and xarray may use instead."""
    folders = [store, *sorted(child for child in store.iterdir() if child.is_dir())] if store.is_dir() else []
    for folder in folders:
        name = "" if folder == store else f":{folder.name}"
        for file_name in (".zarray", "zarr.json", ".zmetadata"):
            document_path = folder / file_name
            if (folder != store and file_name == ".zmetadata") or not document_path.is_file():
                continue
            try:
                document = json.loads(document_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise file_read_error(document_path, "zarr metadata (JSON)", error) from None
            if not isinstance(document, dict):
                raise ValueError(f"{document_path} must hold a JSON object (zarr metadata)")
            if file_name == ".zarray" or document.get("node_type") == "array":
                yield f"{store}{name}", document
            consolidated = document.get("metadata") if file_name == ".zmetadata" else None
            if file_name == "zarr.json" and isinstance(document.get("consolidated_metadata"), dict):
                consolidated = document["consolidated_metadata"].get("metadata")
            for key, entry in (consolidated or {}).items() if isinstance(consolidated, dict) else ():
                is_array = key.endswith(".zarray") or (isinstance(entry, dict) and entry.get("node_type") == "array")
                if is_array and isinstance(entry, dict):
                    yield f"{store}:{key.removesuffix('/.zarray')} (consolidated metadata)", entry


def _declares_objects(dtype: Any) -> bool:
    """Whether a zarr format 2 ``dtype`` (a string, or a list of fields) holds Python objects; what numpy
    cannot read as a dtype counts as objects, as it is no numeric array either."""
    try:
        return np.dtype(dtype if isinstance(dtype, str) else [tuple(field) for field in dtype]).hasobject
    except (TypeError, ValueError):
        return True


def _check_npy_header(stream: IO[bytes], where: str, stored_bytes: int, into_memory: bool) -> None:
    """Check the header of a ``.npy`` array at the start of ``stream`` before numpy reads (or allocates) it.

    Args:
        stream: the ``.npy`` file or ``.npz`` member, positioned at its start.
        where: the file (and member) for messages.
        stored_bytes: the size of the whole ``.npy`` file or member in bytes.
        into_memory: the array is to be read into memory (not memory-mapped), so it must fit there.

    Raises:
        ValueError: not a ``.npy`` array, an object dtype (numpy would unpickle it), or a shape that needs
            more bytes than the file holds or than fit in memory.
    """
    if stream.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise ValueError(f"{where} is not a NumPy .npy file (it lacks the .npy header)")
    stream.seek(0)
    try:
        version = np.lib.format.read_magic(stream)
        # Version 3.0 differs from 2.0 only in the encoding of field names, which does not change sizes.
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except MemoryError:
        raise
    except Exception as error:  # a damaged header: numpy's parser raises ValueError, SyntaxError, TokenError, ...
        raise file_read_error(where, "a NumPy .npy array", error) from None
    if dtype.hasobject:
        raise ValueError(
            f"cannot read {where} as a NumPy .npy array (pickled object arrays are refused): its header declares "
            f"dtype {dtype}"
        )
    declared = math.prod(shape) * dtype.itemsize
    held = stored_bytes - stream.tell()
    if declared > held:
        raise ValueError(
            f"{where}: the .npy header declares shape {shape} of {dtype}, {declared:,} bytes "
            f"({format_bytes(declared)}), but the file holds {max(held, 0):,} bytes of data (truncated file or "
            "forged header)"
        )
    if into_memory:
        check_fits_in_memory(where, shape, dtype)


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """The array of a NumPy ``.npy`` file, never unpickled (``mmap_mode="r"`` maps it instead of reading it).

    The header is checked first (see [`_check_npy_header`]): the bytes its shape needs must be in the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a ``.npy`` file (numpy would call any such file "pickled data"), holds
            Python objects, is truncated, or would not fit in memory.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f".npy file {os.fspath(path)} does not exist")
    with open(path, "rb") as f:
        _check_npy_header(f, os.fspath(path), os.fstat(f.fileno()).st_size, into_memory=mmap_mode is None)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise file_read_error(path, "a NumPy .npy array (pickled object arrays are refused)", error) from None


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a NumPy ``.npz`` archive, never unpickled, each header checked against the size of its
    member and the machine's memory before it is read (see [`_check_npy_header`]).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a zip archive (numpy takes any other file for a pickle), or a member is not a sound
            ``.npy`` array.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f".npz file {os.fspath(path)} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{os.fspath(path)} is not a NumPy .npz archive (not a zip file)")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                member = archive.zip.getinfo(name if name in archive.zip.namelist() else f"{name}.npy")
                with archive.zip.open(member) as stream:
                    _check_npy_header(stream, f"{os.fspath(path)}:{name}", member.file_size, into_memory=True)
                arrays[name] = archive[name]
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise file_read_error(path, "a NumPy .npz archive", error) from None
    return arrays


def scale_to_unit(
    values: np.ndarray,
    value_range: tuple[float, float],
    clip: bool,
    where: str,
    value_transform: dict[str, Any] | None = None,
) -> np.ndarray:
    """Map ``values`` through the optional value transform (e.g. rain rate to dB) and from the declared
    ``value_range`` of the transformed values to [0, 1], as float32.

    Values outside the declared range raise a ``ValueError`` naming ``where`` (the item, file or event),
    unless ``clip`` is set, in which case they are clipped: a silent out-of-range value would otherwise leak
    into training as an input outside [0, 1].
    """
    low, high = value_range
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{where}: values contain NaN or infinity")
    values = to_transformed(values.astype(np.float32), value_transform)
    if values.size:
        found_low, found_high = float(np.min(values)), float(np.max(values))
        if (found_low < low or found_high > high) and not clip:
            transformed = " (after the value transform)" if value_transform else ""
            raise ValueError(
                f"{where}: values{transformed} span [{found_low:g}, {found_high:g}], outside the declared "
                f"value_range [{low:g}, {high:g}] (pass clip=True to clip them)"
            )
    out = to_unit(values, value_range)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


class HDF5HandleCache:
    """HDF5 files opened lazily, once per process.

    h5py handles must not cross a ``fork``: every ``DataLoader`` worker opens its own. The cache remembers the
    process id that opened the handles and is emptied when pickled, so datasets holding one stay picklable.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._files: dict[str, Any] = {}

    def get(self, path: str | os.PathLike) -> Any:
        if self._pid != os.getpid():
            self._files = {}
            self._pid = os.getpid()
        key = os.fspath(path)
        handle = self._files.get(key)
        if handle is None:
            handle = open_hdf5(key)
            self._files[key] = handle
        return handle

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._files.values():
                with contextlib.suppress(Exception):
                    handle.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
