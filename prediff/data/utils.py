"""Helpers shared by the datasets: optional imports, opening files with clear errors, checks of what a file
declares before reading it, argument checks, atomic output that spares the inputs, per-process handles."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

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


def file_read_error(path: str | os.PathLike, file_format: str, error: BaseException) -> ValueError:
    """The error for a file that exists but cannot be read as ``file_format``: names the file, the format and
    the reader's own reason (h5py, netCDF and numpy messages alone often name neither), of which only the first
    line is kept (xarray appends installation links)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"cannot read {os.fspath(path)} as {file_format}: {reason}")


def check_fits_in_memory(where: str, shape: Sequence[int], dtype: Any) -> None:
    """Refuse to read ``shape`` values of ``dtype`` at once when they need more than this machine's memory.

    The shape comes from a file's metadata, checked before anything is allocated: a header of a few bytes can
    claim terabytes, which numpy or h5py would otherwise allocate (and fill) before any other check.

    Raises:
        ValueError: naming ``where`` (file and array), the shape, the dtype and the memory needed.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    check_memory(f"{where}: reading {shape} {dtype} values at once", math.prod(shape) * dtype.itemsize)


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
    except (ValueError, SyntaxError, EOFError) as error:
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


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_seed(value: Any) -> int:
    """Seeds are non-negative integers (they feed ``numpy.random.SeedSequence``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


def check_index(index: Any, length: int) -> int:
    """A window index in ``[-length, length)`` as a non-negative int (TypeError / IndexError otherwise)."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an integer, got {type(index).__name__}")
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} windows")
    return int(index)


def check_value_range(name: str, value: Any) -> tuple[float, float]:
    """A declared ``(low, high)`` range with ``low < high``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"{name} must satisfy low < high (both finite), got {value!r}")
    return low, high


def scale_to_unit(values: np.ndarray, value_range: tuple[float, float], clip: bool, where: str) -> np.ndarray:
    """Map ``values`` from the declared ``value_range`` to [0, 1] as float32.

    Values outside the declared range raise a ``ValueError`` naming ``where`` (the item, file or event),
    unless ``clip`` is set, in which case they are clipped: a silent out-of-range value would otherwise leak
    into training as an input outside [0, 1].
    """
    low, high = value_range
    if values.size:
        found_low, found_high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(found_low) and np.isfinite(found_high)):
            raise ValueError(f"{where}: values contain NaN or infinity")
        if (found_low < low or found_high > high) and not clip:
            raise ValueError(
                f"{where}: values span [{found_low:g}, {found_high:g}], outside the declared value_range "
                f"[{low:g}, {high:g}] (pass clip=True to clip them)"
            )
    out = (values.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def give_plain_permissions(path: str | os.PathLike) -> None:
    """Give ``path``, and everything below it if it is a folder, the permissions a plain ``open()`` /
    ``mkdir()`` would under the current umask (``0o666`` / ``0o777`` minus the umask).

    ``tempfile`` and safetensors create owner-only (0600 / 0700) entries, which would hide shared outputs
    (pipelines, checkpoints, forecasts) from the rest of a group.
    """
    root = Path(path)
    _chmod_plain((root, *root.rglob("*")) if root.is_dir() else (root,))


@contextlib.contextmanager
def plain_permissions_for_writes(folder: str | os.PathLike) -> Iterator[None]:
    """Let the block write into ``folder``; then give the entries it created or rewrote there the permissions
    of a plain ``open()`` / ``mkdir()`` (see [`give_plain_permissions`]).

    Everything else keeps its permissions: ``folder`` itself when it existed, and whatever already lay in it
    and was not rewritten (a private key, an executable script, ``.git/hooks``).
    """
    root = Path(folder)
    existed = root.is_dir()
    before = {entry: _identity(entry) for entry in root.rglob("*")} if existed else {}
    yield
    written = [entry for entry in root.rglob("*") if before.get(entry) != _identity(entry)]
    _chmod_plain(written if existed else [root, *written])


def _identity(entry: Path) -> tuple[int, int, int]:
    """What changes when a writer replaces or rewrites ``entry``: inode, size and modification time."""
    stat = entry.lstat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _chmod_plain(entries: Any) -> None:
    # The umask can only be read by setting it: a strict one for that instant (what other threads create
    # meanwhile is owner-only, never too open), then the old one again.
    umask = os.umask(0o077)
    os.umask(umask)
    for entry in entries:
        if not entry.is_symlink():
            os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~umask)


def fsync_tree(path: str | os.PathLike, recursive: bool = True) -> None:
    """Flush ``path`` and, for a folder unless ``recursive`` is False, everything below it to the disk
    (``os.fsync``), so that a rename that publishes it never points at data still in the page cache when the
    power fails. A folder's own flush makes the renames of its entries durable."""
    root = Path(path)
    below = root.rglob("*") if root.is_dir() and recursive else ()
    # Children first: a folder is flushed once all it holds is.
    for entry in sorted((root, *below), reverse=True):
        if entry.is_symlink():
            continue
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def physical_memory_bytes() -> int | None:
    """The machine's physical memory in bytes (None where the system does not tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(num_bytes: float) -> str:
    """A byte count for people: ``1.5e9`` -> ``"1.4 GiB"``, ``4e19`` -> ``"34.7 EiB"``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0
    while num_bytes >= 1024 and power < len(units) - 1:
        num_bytes /= 1024
        power += 1
    return f"{num_bytes:.0f} bytes" if power == 0 else f"{num_bytes:.1f} {units[power]}"


def check_memory(what: str, num_bytes: float) -> None:
    """Refuse, before allocating anything, what would need more than the machine's physical memory.

    Args:
        what: the thing and the sizes that make it, e.g. ``"num_ensemble_members=1000000000 ... frames"``.
        num_bytes: the memory it needs at least.

    Raises:
        ValueError: naming ``what``, the memory it needs and the memory the machine has.
    """
    limit = physical_memory_bytes()
    if limit is not None and num_bytes > limit:
        raise ValueError(
            f"{what} would need {format_bytes(num_bytes)} of memory, more than this machine's {format_bytes(limit)}"
        )


def check_outputs_spare_inputs(
    outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike]
) -> None:
    """Refuse an output that is one of the inputs or lies inside an input folder.

    ``outputs`` and ``inputs`` map what the messages call them (an option such as ``--out``, or a label) to
    paths. Paths are compared resolved (symbolic links followed, ``~`` expanded) and, when both exist, as files
    (hard links), so that ``--overwrite`` can never replace what a command reads.

    Raises:
        ValueError: naming the output, the input and both paths.
    """
    resolved_inputs = {label: Path(path).expanduser().resolve() for label, path in inputs.items()}
    for out_label, out in outputs.items():
        target = Path(out).expanduser()
        resolved = target.resolve()
        for in_label, source in resolved_inputs.items():
            same = resolved == source or (target.exists() and source.exists() and os.path.samefile(target, source))
            if same or source in resolved.parents:
                relation = "is" if same else "lies inside"
                raise ValueError(
                    f"{out_label} {os.fspath(out)} {relation} {in_label} {os.fspath(inputs[in_label])}; "
                    "an output must never replace or write into what is read"
                )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place with ``os.replace``.

    Readers never see a half-written file: the result appears at ``path`` only once it is complete, and a
    failure leaves any previous file untouched. ``directory=True`` is for outputs that are folders (zarr
    stores). The result, and all a folder holds, gets the permissions a plain ``open()`` / ``mkdir()`` would give
    it under the current umask (see [`give_plain_permissions`]), not the owner-only ones of ``tempfile``.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        give_plain_permissions(tmp)
        if target.is_dir() and not target.is_symlink():
            # os.replace cannot replace a non-empty folder: move the old one aside first, then drop it.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "old")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


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
