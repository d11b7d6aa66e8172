"""Helpers shared by the datasets: optional imports, opening files with clear errors, argument checks, atomic
output, per-process handles."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def open_hdf5(path: str | os.PathLike) -> Any:
    """``h5py.File(path, "r")``, with errors that name the file.

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

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not a netCDF file xarray can read (xarray raises ``ValueError`` when no engine
            recognises the file and ``OSError`` from the netCDF library).
    """
    xr = import_optional("xarray", "reading netCDF files")
    if not os.path.exists(path):
        raise FileNotFoundError(f"netCDF file {os.fspath(path)} does not exist")
    try:
        return xr.open_dataset(path)
    except (OSError, ValueError, RuntimeError) as error:
        raise file_read_error(path, "netCDF", error) from None


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """The array of a NumPy ``.npy`` file, never unpickled (``mmap_mode="r"`` maps it instead of reading it).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a ``.npy`` file (numpy would call any such file "pickled data"), holds
            Python objects, or is truncated.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f".npy file {os.fspath(path)} does not exist")
    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise ValueError(f"{os.fspath(path)} is not a NumPy .npy file (it lacks the .npy header)")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise file_read_error(path, "a NumPy .npy array (pickled object arrays are refused)", error) from None


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
    # The umask can only be read by setting it: a strict one for that instant (what other threads create
    # meanwhile is owner-only, never too open), then the old one again.
    umask = os.umask(0o077)
    os.umask(umask)
    root = Path(path)
    for entry in (root, *root.rglob("*")) if root.is_dir() else (root,):
        if not entry.is_symlink():
            os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~umask)


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
