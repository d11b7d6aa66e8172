"""Radar archives: the files of a pysteps data source read as rain rate (mm/h), cut into windows and crops.

A radar archive is described the way pysteps' ``pystepsrc`` describes its data sources, by a [`RadarSource`]: where
the files lie (``root_path``, ``path_fmt``, ``fn_pattern``, ``fn_ext``), the pysteps importer that reads them and the
time step between files. [`scan_radar`] lists the files of one event with ``pysteps.io.archive.find_by_date``,
reads each with the importer (``pysteps.io.get_method(importer, "importer")``), converts it to rain rate with
``pysteps.utils.conversion.to_rainrate`` and averages k x k blocks of pixels. [`RadarArchiveDataset`] cuts windows
of consecutive frames and square crops out of one or more events and keeps those that pass a wet-fraction filter;
``prediff data radar`` writes them to a sequence file (HDF5 or zarr) with everything needed to place them in time
and space.

Values are physical rain rates in mm/h, not the [0, 1] scale of the other data sets: rain rate spans four orders of
magnitude and no fixed range suits it, so a value transform chosen with the model maps it (the data set and the files
record ``units: "mm/h"`` and no ``value_range``). Pixels outside the radar domain are NaN until ``nan_policy``
decides what becomes of them.

Only pysteps importers can be named in a configuration file; a Python callable can be given as the importer of a
[`RadarSource`] built in code (a custom format, or tests), never from a file.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.checks import check_index, check_positive_int
from ..utils.files import file_read_error
from ..utils.memory import check_memory

__all__ = [
    "NAN_POLICIES",
    "RadarArchiveDataset",
    "RadarFrames",
    "RadarSource",
    "block_mean",
    "parse_radar_time",
    "read_radar_events",
    "read_radar_file",
    "scan_radar",
]

#: What becomes of pixels outside the radar domain (NaN): "drop" the crops holding any, "fill" them with 0 mm/h
#: (items carry the validity mask), or "keep" the NaN.
NAN_POLICIES = ("drop", "fill", "keep")

#: The fields of a pystepsrc data source, in pysteps' order.
SOURCE_FIELDS = ("root_path", "path_fmt", "fn_pattern", "fn_ext", "importer", "timestep", "importer_kwargs")

#: How the integer valid times are counted (the files of pysteps archives are named in UTC).
VALID_TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"

#: Metres per unit of the importers' ``cartesian_unit``.
_METRES_PER_UNIT = {"m": 1.0, "km": 1000.0}

#: Importer metadata copied into the recorded metadata (grid, projection and what the files hold).
_GRID_KEYS = ("projection", "cartesian_unit", "yorigin", "institution")

Importer = Callable[..., tuple[Any, Any, Mapping[str, Any]]]


def _pysteps() -> Any:
    """pysteps with the modules used here, imported without the line it prints about its configuration file."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pysteps
            import pysteps.io
            import pysteps.io.archive
            import pysteps.utils.conversion
    except ImportError as error:
        raise ImportError(f'reading radar archives needs pysteps: pip install "prediff[pysteps]" ({error})') from error
    return pysteps


# ---------------------------------------------------------------------------------------------- times


def parse_radar_time(value: str | dt.datetime) -> dt.datetime:
    """A time as a naive UTC ``datetime`` (pysteps archives name their files in UTC).

    Accepts a ``datetime`` (an aware one is converted to UTC), pysteps' ``YYYYmmddHHMM`` (``201609281445``) or ISO
    8601 (``2016-09-28T14:45``, ``2016-09-28 14:45:00Z``, ``2016-09-28``).
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        parsed = None
        for fmt in ("%Y%m%d%H%M", "%Y%m%d%H%M%S"):
            with contextlib.suppress(ValueError):
                parsed = dt.datetime.strptime(text, fmt)
                break
        if parsed is None:
            try:
                parsed = dt.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"cannot read the time {value!r}: expected YYYYmmddHHMM (201609281445) or ISO 8601 "
                    "(2016-09-28T14:45)"
                ) from None
    else:
        raise ValueError(f"a time must be a datetime or a string, got {type(value).__name__}")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _iso(time: dt.datetime) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch_seconds(time: dt.datetime) -> int:
    return calendar.timegm(time.timetuple())


def _event(value: Any, where: str) -> tuple[dt.datetime, dt.datetime]:
    if isinstance(value, (str, dt.datetime)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{where} must be a (start, end) pair, got {value!r}")
    start, end = parse_radar_time(value[0]), parse_radar_time(value[1])
    if end < start:
        raise ValueError(f"{where} ends at {_iso(end)}, before it starts at {_iso(start)}")
    return start, end


def read_radar_events(path: str | os.PathLike) -> list[tuple[dt.datetime, dt.datetime]]:
    """The events of a text file: one ``START END`` pair a line (separated by spaces or a comma; times as
    [`parse_radar_time`] reads them); blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"events file {path} does not exist")
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = [p for p in (text.split(",") if "," in text else text.split()) if p.strip()]
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'START END', got {line.strip()!r}")
        events.append(_event(parts, f"{path}:{number}"))
    if not events:
        raise ValueError(f"events file {path} lists no event")
    return events


# ---------------------------------------------------------------------------------------------- sources


def _default_pystepsrc() -> Path:
    pysteps = _pysteps()
    return Path(pysteps.__file__).parent / "pystepsrc"


def _load_mapping(path: Path) -> Any:
    """A YAML (``.yaml``/``.yml``) or JSON file (pysteps' ``//`` comments allowed), parsed without running code."""
    if not path.is_file():
        raise FileNotFoundError(f"source configuration {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as error:
                raise ImportError(f'reading {path} needs PyYAML: pip install "prediff[train]"') from error
            return yaml.safe_load(text)
        try:
            from jsmin import jsmin  # pysteps' own reader of pystepsrc files, which hold // comments

            text = jsmin(text)
        except ImportError:
            pass
        return json.loads(text)
    except ImportError:
        raise
    except Exception as error:
        raise file_read_error(path, "a YAML or JSON source configuration", error) from None


@dataclass(frozen=True)
class RadarSource:
    """Where the files of a radar archive lie and how pysteps reads them: one data source of a ``pystepsrc``.

    Args:
        name (`str`): what the source is called (``"fmi"``), recorded with the data.
        root_path (`str`): the folder of the archive's files.
        path_fmt (`str`): sub-folders below ``root_path`` as ``strftime`` codes (``"%Y%m%d"``); ``?`` matches any
            character.
        fn_pattern (`str`): file names without extension as ``strftime`` codes; ``?`` matches any character.
        fn_ext (`str`): file extension (``"pgm.gz"``).
        importer (`str` or `Callable`): a pysteps importer name (``"fmi_pgm"``, see ``pysteps.io.get_method``), or,
            in code only, a callable ``importer(filename, **importer_kwargs) -> (precip, quality, metadata)`` that
            behaves like a pysteps importer (metadata with ``unit``, ``transform``, ``accutime``, ``threshold``,
            ``zerovalue`` and the grid keys ``projection``, ``x1``, ``y1``, ``x2``, ``y2``, ``xpixelsize``,
            ``ypixelsize``, ``cartesian_unit``, ``yorigin``).
        timestep (`int`): minutes between consecutive files.
        importer_kwargs (`dict`): keyword arguments of the importer.
    """

    name: str
    root_path: str
    path_fmt: str
    fn_pattern: str
    fn_ext: str
    importer: str | Importer
    timestep: int
    importer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"radar source {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a radar source's name must be a non-empty string, got {self.name!r}")
        for key in ("root_path", "path_fmt", "fn_pattern", "fn_ext"):
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                object.__setattr__(self, key, value)
            if not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string, got {value!r}")
        if not (isinstance(self.importer, str) and self.importer) and not callable(self.importer):
            raise ValueError(f"{where}: importer must be a pysteps importer name or a callable, got {self.importer!r}")
        timestep = self.timestep
        if isinstance(timestep, float) and timestep.is_integer():
            timestep = int(timestep)
        object.__setattr__(self, "timestep", check_positive_int(f"{where}: timestep (minutes)", timestep))
        if self.importer_kwargs is None:
            object.__setattr__(self, "importer_kwargs", {})
        if not isinstance(self.importer_kwargs, Mapping) or not all(isinstance(k, str) for k in self.importer_kwargs):
            raise ValueError(f"{where}: importer_kwargs must be a mapping of names, got {self.importer_kwargs!r}")
        object.__setattr__(self, "importer_kwargs", dict(self.importer_kwargs))

    @classmethod
    def from_dict(
        cls,
        config: Mapping[str, Any],
        name: str | None = None,
        root: str | os.PathLike | None = None,
    ) -> RadarSource:
        """A source from a mapping of the pystepsrc fields (``root_path``, ``path_fmt``, ``fn_pattern``,
        ``fn_ext``, ``importer``, ``timestep``, optional ``importer_kwargs`` and ``name``).

        A relative ``root_path`` is taken relative to ``root`` when given (as pysteps' own sources are relative to
        its example archive); an absolute one is used as it is.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"a radar source must be a mapping of {SOURCE_FIELDS}, got {type(config).__name__}")
        config = dict(config)
        name = name if name is not None else config.get("name", "custom")
        config.pop("name", None)
        unknown = sorted(set(config) - set(SOURCE_FIELDS))
        if unknown:
            raise ValueError(f"radar source {name!r}: unknown field(s) {unknown}; expected {list(SOURCE_FIELDS)}")
        missing = [key for key in SOURCE_FIELDS if key != "importer_kwargs" and key not in config]
        if missing:
            raise ValueError(f"radar source {name!r} lacks the field(s) {missing}")
        root_path = config["root_path"]
        if not isinstance(root_path, (str, os.PathLike)):
            raise ValueError(f"radar source {name!r}: root_path must be a string, got {root_path!r}")
        if root is not None:
            if Path(root_path).is_absolute():
                raise ValueError(
                    f"radar source {name!r} has the absolute root_path {os.fspath(root_path)!r}; "
                    "a root can only re-root a relative one"
                )
            root_path = Path(root) / root_path
        config["root_path"] = os.path.normpath(os.fspath(root_path))
        return cls(name=name, **config)

    @classmethod
    def from_pystepsrc(
        cls, name: str, root: str | os.PathLike | None = None, rcfile: str | os.PathLike | None = None
    ) -> RadarSource:
        """The data source ``name`` of a pystepsrc file: by default the one installed with pysteps, whose
        ``root_path`` entries (``./radar/fmi/pgm``) are relative to pysteps' example archive, which ``root`` names
        (the folder holding ``radar/``)."""
        path = Path(rcfile) if rcfile is not None else _default_pystepsrc()
        sources = _load_mapping(path)
        sources = sources.get("data_sources") if isinstance(sources, Mapping) else None
        if not isinstance(sources, Mapping):
            raise ValueError(f"{path} holds no 'data_sources' mapping")
        if name not in sources:
            raise ValueError(f"pystepsrc {path} has no data source {name!r}; it has {sorted(sources)}")
        return cls.from_dict(sources[name], name=name, root=root)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, name: str | None = None, root: str | os.PathLike | None = None
    ) -> RadarSource:
        """A source from a YAML or JSON file: either one mapping of the pystepsrc fields, or a pystepsrc with
        ``data_sources`` from which ``name`` picks one. Importers can only be named (pysteps importers): a file
        never makes this run code. A relative ``root_path`` is relative to ``root`` when given, otherwise to the
        file's folder."""
        path = Path(path)
        config = _load_mapping(path)
        if isinstance(config, Mapping) and "data_sources" in config:
            sources = config["data_sources"]
            if not isinstance(sources, Mapping) or name not in sources:
                available = sorted(sources) if isinstance(sources, Mapping) else []
                raise ValueError(f"{path}: pick one of its data sources {available} by name, got {name!r}")
            config = sources[name]
        elif isinstance(config, Mapping) and name is not None:
            config = {**config, "name": name}
        if not isinstance(config, Mapping):
            raise ValueError(f"{path} must hold a mapping of the fields {list(SOURCE_FIELDS)}")
        if not isinstance(config.get("importer"), str):
            raise ValueError(f"{path}: importer must name a pysteps importer, got {config.get('importer')!r}")
        root_path = config.get("root_path")
        if root is None and isinstance(root_path, str) and not Path(root_path).is_absolute():
            root = path.parent
        return cls.from_dict(config, name=name if name is not None else config.get("name", path.stem), root=root)

    @property
    def importer_name(self) -> str:
        """The pysteps importer's name, or ``module.qualname`` of a callable importer."""
        if isinstance(self.importer, str):
            return self.importer
        return f"{getattr(self.importer, '__module__', '?')}.{getattr(self.importer, '__qualname__', '?')}"

    def load_importer(self) -> Importer:
        """The importer function (``pysteps.io.get_method(importer, "importer")`` for a name)."""
        if callable(self.importer):
            return self.importer
        pysteps = _pysteps()
        try:
            return pysteps.io.get_method(self.importer, "importer")
        except ValueError:
            known = sorted(pysteps.io.interface._importer_methods)
            raise ValueError(
                f"radar source {self.name!r}: unknown pysteps importer {self.importer!r}; known: {known}"
            ) from None

    def find_files(
        self, start: str | dt.datetime, end: str | dt.datetime, interval_minutes: int | None = None
    ) -> list[tuple[dt.datetime, str | None]]:
        """``(time, file or None)`` every ``interval_minutes`` (default: the source's time step) from ``start`` to
        ``end`` inclusive, found by ``pysteps.io.archive.find_by_date``; None where no file exists.

        Raises:
            FileNotFoundError: ``root_path`` does not exist.
            ValueError: the interval is no multiple of the time step, or no file lies in the range.
        """
        start, end = _event((start, end), f"radar source {self.name!r}: the range")
        interval = self.check_interval(interval_minutes)
        if not Path(self.root_path).is_dir():
            raise FileNotFoundError(f"radar source {self.name!r}: archive folder {self.root_path} does not exist")
        count = int((end - start) / dt.timedelta(minutes=interval)) + 1
        pysteps = _pysteps()
        try:
            files, times = pysteps.io.archive.find_by_date(
                start,
                self.root_path,
                self.path_fmt,
                self.fn_pattern,
                self.fn_ext,
                interval,
                num_next_files=count - 1,
                silent=True,
            )
        except OSError:
            files, times = [], []
        if not any(f is not None for f in files):
            raise ValueError(
                f"radar source {self.name!r}: no file between {_iso(start)} and {_iso(end)} under {self.root_path} "
                f"(path_fmt {self.path_fmt!r}, fn_pattern {self.fn_pattern!r}, fn_ext {self.fn_ext!r})"
            )
        return list(zip(times, files))

    def check_interval(self, interval_minutes: int | None) -> int:
        """``interval_minutes`` (default: the time step) checked to be a whole multiple of the time step."""
        if interval_minutes is None:
            return self.timestep
        interval = check_positive_int("interval_minutes", interval_minutes)
        if interval % self.timestep:
            raise ValueError(
                f"interval_minutes={interval} is not a multiple of the {self.timestep}-minute time step of radar "
                f"source {self.name!r}"
            )
        return interval

    def description(self) -> dict[str, Any]:
        """What is recorded with data read from this source (no local path)."""
        return {
            "source": self.name,
            "importer": self.importer_name,
            "path_fmt": self.path_fmt,
            "fn_pattern": self.fn_pattern,
            "fn_ext": self.fn_ext,
            "source_timestep_minutes": self.timestep,
            "importer_kwargs": json.loads(json.dumps(self.importer_kwargs, default=str)),
        }


# ---------------------------------------------------------------------------------------------- frames


def block_mean(field: np.ndarray, block: int) -> np.ndarray:
    """Mean of every ``block`` x ``block`` block of the last two axes: (..., H, W) -> (..., H // block, W // block).

    A block with any NaN pixel is NaN: near the edge of a radar domain, the mean of the seen pixels alone would
    be that of a smaller, biased sample. Rows and columns at the bottom and right that do not fill a block are
    dropped. The mean is taken in float64 and returned as float32.
    """
    block = check_positive_int("block", block)
    field = np.asarray(field)
    if field.ndim < 2:
        raise ValueError(f"block_mean needs at least 2 dimensions (H, W), got shape {field.shape}")
    height, width = field.shape[-2] // block, field.shape[-1] // block
    if height == 0 or width == 0:
        raise ValueError(f"a {block}x{block} block does not fit in a field of shape {field.shape}")
    trimmed = field[..., : height * block, : width * block]
    blocks = trimmed.reshape(*field.shape[:-2], height, block, width, block)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, bytes as text: values that JSON can record."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _pixel_km(metadata: Mapping[str, Any], key: str) -> float | None:
    unit = metadata.get("cartesian_unit", "m")
    size = metadata.get(key)
    if size is None or unit not in _METRES_PER_UNIT:
        return None
    return abs(float(size)) * _METRES_PER_UNIT[unit] / 1000.0


def _block_for(metadata: Mapping[str, Any], pixel_size_km: float | None, name: str) -> int:
    """The number of native pixels per output pixel along each axis for ``pixel_size_km``."""
    if pixel_size_km is None:
        return 1
    if not (isinstance(pixel_size_km, (int, float)) and math.isfinite(pixel_size_km) and pixel_size_km > 0):
        raise ValueError(f"pixel_size_km must be a positive number, got {pixel_size_km!r}")
    native = (_pixel_km(metadata, "xpixelsize"), _pixel_km(metadata, "ypixelsize"))
    if None in native:
        raise ValueError(
            f"radar source {name!r} does not give its pixel size in metres or km (cartesian_unit "
            f"{metadata.get('cartesian_unit')!r}, xpixelsize {metadata.get('xpixelsize')!r}); leave pixel_size_km "
            "unset to keep the native grid"
        )
    block = max(1, round(pixel_size_km / native[0]))
    # 1% slack: FMI's pixels are 999.67 m, which 2 km should still average in 2 x 2 blocks.
    if any(abs(block * size - pixel_size_km) > 0.01 * pixel_size_km for size in native):
        raise ValueError(
            f"pixel_size_km={pixel_size_km:g} is not a whole multiple of the native pixel size of radar source "
            f"{name!r} ({native[0]:g} x {native[1]:g} km)"
        )
    return block


@dataclass
class RadarFrames:
    """Frames of one event of a radar source, as rain rate.

    Attributes:
        frames: (T, H, W) float32 rain rate in mm/h, NaN outside the radar domain and in frames whose file is
            missing.
        times: the T valid times (naive UTC ``datetime``).
        present: (T,) bool, whether each frame's file was found.
        metadata: the grid of ``frames`` (``projection``, ``x1``, ``y1``, ``x2``, ``y2``, ``xpixelsize``,
            ``ypixelsize`` in ``cartesian_unit``, ``yorigin``; after block averaging), the native pixel size in km,
            the block size, and what the files held (``source_unit``, ``source_transform``, ``accutime``, and
            ``zr_a``/``zr_b`` for reflectivity).
    """

    frames: np.ndarray
    times: list[dt.datetime]
    present: np.ndarray
    metadata: dict[str, Any]


def _read_rainrate(source: RadarSource, importer: Importer, filename: str) -> tuple[np.ndarray, dict[str, Any]]:
    pysteps = _pysteps()
    try:
        precip, _, metadata = importer(filename, **source.importer_kwargs)
        metadata = dict(metadata)
        original = {"source_unit": metadata.get("unit"), "source_transform": metadata.get("transform")}
        rate, converted = pysteps.utils.conversion.to_rainrate(np.asarray(precip, dtype=np.float64), metadata)
    except Exception as error:
        raise file_read_error(filename, f"radar source {source.name!r} ({source.importer_name})", error) from None
    rate = np.asarray(rate, dtype=np.float32)
    if rate.ndim != 2:
        raise ValueError(f"{filename}: the importer gave a field of shape {rate.shape}, expected (H, W)")
    metadata.update(original)
    for key in ("zr_a", "zr_b"):
        if key in converted:
            metadata[key] = converted[key]
    return rate, metadata


def _grid_metadata(metadata: Mapping[str, Any], shape: tuple[int, int], block: int) -> dict[str, Any]:
    """The grid of the block-averaged frames: bounds shrink where trailing rows/columns were dropped."""
    grid = {key: _plain(metadata[key]) for key in _GRID_KEYS if key in metadata}
    grid.setdefault("yorigin", "upper")
    for key in ("unit", "transform"):
        grid[f"source_{key}"] = _plain(metadata.get(f"source_{key}", metadata.get(key)))
    # The Z-R relation only matters where reflectivity was converted (importers name one for every product).
    keys = ("accutime", "zr_a", "zr_b") if grid["source_unit"] == "dBZ" else ("accutime",)
    for key in keys:
        if metadata.get(key) is not None:
            grid[key] = _plain(metadata[key])
    grid["native_pixel_size_km"] = [_pixel_km(metadata, "xpixelsize"), _pixel_km(metadata, "ypixelsize")]
    grid["block"] = block
    if all(metadata.get(key) is not None for key in ("x1", "y1", "xpixelsize", "ypixelsize")):
        px = abs(float(metadata["xpixelsize"])) * block
        py = abs(float(metadata["ypixelsize"])) * block
        height, width = shape
        x1 = float(metadata["x1"])
        if grid["yorigin"] == "upper":
            y2 = float(metadata["y2"])
            bounds = [x1, y2 - height * py, x1 + width * px, y2]
        else:
            y1 = float(metadata["y1"])
            bounds = [x1, y1, x1 + width * px, y1 + height * py]
        grid.update(xpixelsize=px, ypixelsize=py, x1=bounds[0], y1=bounds[1], x2=bounds[2], y2=bounds[3])
    return grid


def read_radar_file(
    filename: str | os.PathLike,
    importer: str | Importer,
    importer_kwargs: Mapping[str, Any] | None = None,
    pixel_size_km: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One radar file read as [`scan_radar`] reads each file of an event, without an archive around it (a file a
    user hands over, e.g. in `prediff app`).

    Args:
        filename: the file.
        importer: a pysteps importer name (``"fmi_pgm"``, ``"knmi_hdf5"``, ``"odim_hdf5"``, ...), or in code a
            callable behaving like one (see [`RadarSource`]).
        importer_kwargs: keyword arguments of the importer.
        pixel_size_km: average blocks of pixels to this size (a multiple of the native pixel size; None: native).

    Returns:
        `(H, W)` float32 rain rate in mm/h (NaN outside the radar domain) and its grid metadata, as
        [`RadarFrames`] records it.
    """
    name = importer if isinstance(importer, str) else "custom"
    # A source of one file: only its importer matters, the archive layout is never used.
    source = RadarSource(name, "", "", "", "", importer, 1, importer_kwargs or {})
    rate, metadata = _read_rainrate(source, source.load_importer(), os.fspath(filename))
    block = _block_for(metadata, pixel_size_km, name)
    frame = block_mean(rate, block) if block > 1 else rate
    return frame, _grid_metadata(metadata, frame.shape, block)


def scan_radar(
    source: RadarSource,
    start: str | dt.datetime,
    end: str | dt.datetime,
    interval_minutes: int | None = None,
    pixel_size_km: float | None = None,
    progress: bool = False,
) -> RadarFrames:
    """Read the frames of ``source`` from ``start`` to ``end`` (inclusive) as rain rate.

    Files are found with ``pysteps.io.archive.find_by_date`` every ``interval_minutes`` (a multiple of the
    source's time step; default the time step), read with the source's importer, converted with
    ``pysteps.utils.conversion.to_rainrate`` (each frame with its own importer metadata), and averaged over blocks
    of pixels ([`block_mean`]) when ``pixel_size_km`` is a multiple of the native pixel size. Frames whose file is
    missing are NaN and marked in ``present``.

    Returns:
        [`RadarFrames`] with (T, H, W) float32 frames in mm/h.

    Raises:
        FileNotFoundError: the archive folder does not exist.
        ValueError: an interval that is not a multiple, no file in the range, a pixel size that is no multiple of
            the native one, a file that cannot be read, or frames on different grids.
    """
    timeline = source.find_files(start, end, interval_minutes)
    importer = source.load_importer()
    from tqdm.auto import tqdm

    frames = None
    first_meta: dict[str, Any] = {}
    block = 1
    present = np.array([f is not None for _, f in timeline])
    bar = tqdm(total=int(present.sum()), desc=f"reading {source.name}", disable=not progress)
    try:
        for index, (_, filename) in enumerate(timeline):
            if filename is None:
                continue
            rate, metadata = _read_rainrate(source, importer, filename)
            if frames is None:
                first_meta, first_shape = metadata, rate.shape
                block = _block_for(metadata, pixel_size_km, source.name)
                out_shape = (rate.shape[0] // block, rate.shape[1] // block)
                if 0 in out_shape:
                    raise ValueError(f"{filename}: a frame of {rate.shape} pixels holds no {block}x{block} block")
                what = f"{len(timeline)} radar frames of {out_shape[0]}x{out_shape[1]} pixels"
                check_memory(what, len(timeline) * 4 * math.prod(out_shape))
                frames = np.full((len(timeline), *out_shape), np.nan, dtype=np.float32)
            elif rate.shape != first_shape or metadata.get("projection") != first_meta.get("projection"):
                raise ValueError(
                    f"{filename}: its grid ({rate.shape}, projection {metadata.get('projection')!r}) differs from "
                    f"that of the event's first file ({first_shape}, {first_meta.get('projection')!r})"
                )
            frames[index] = block_mean(rate, block) if block > 1 else rate
            bar.update(1)
    finally:
        bar.close()
    grid = _grid_metadata(first_meta, frames.shape[1:], block)
    return RadarFrames(frames=frames, times=[t for t, _ in timeline], present=present, metadata=grid)


# ---------------------------------------------------------------------------------------------- data set


def _integral(counts: np.ndarray) -> np.ndarray:
    """Summed-area table of a (H, W) array, padded with a zero row and column: sums over any box in O(1)."""
    table = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = counts.cumsum(0).cumsum(1)
    return table


def _box_sums(table: np.ndarray, rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
    r, c = rows[:, None], cols[None, :]
    return table[r + height, c + width] - table[r, c + width] - table[r + height, c] + table[r, c]


class RadarArchiveDataset(Dataset):
    """Windows of consecutive radar frames, cropped, in rain rate (mm/h), from one or more events of a source.

    Every event is read with [`scan_radar`] when the data set is built, and its block-averaged frames are kept in
    memory (float32: one day of 700 x 765 frames every 5 minutes is 0.6 GB); ``prediff data radar`` writes them
    to a sequence file for larger collections. Windows start every ``window_stride`` frames and never span a
    missing file; crops start every ``stride`` pixels. A crop is kept when

    * it holds at least one pixel inside the radar domain;
    * ``nan_policy="drop"``: it holds no NaN pixel in any frame of the window;
    * at least ``min_wet_fraction`` of its valid pixels (over all frames of the window) have a rain rate of at
      least ``wet_threshold`` mm/h.

    Items are dicts:

    * ``"frames"``: float32 tensor (window, crop, crop, 1), rain rate in mm/h (not scaled to [0, 1]); outside the
      radar domain NaN (``"keep"``) or 0 (``"fill"``);
    * ``"mask"``: bool tensor (window, crop, crop, 1), True where the radar saw the pixel;
    * ``"valid_time"``: int64 tensor (window,), seconds since 1970-01-01 UTC (see [`valid_times`] for ISO text);
    * ``"event"``, ``"start"``: the event's index and the window's first frame in it; ``"row"``, ``"col"``: the
      crop's top-left pixel in the block-averaged frame.

    Args:
        source (`RadarSource` or `str`): the archive, or the name of a data source of pysteps' pystepsrc (then
            ``root`` names the archive folder holding ``radar/``).
        events: (start, end) pairs of times (``datetime`` or text, see [`parse_radar_time`]), ends included; one
            pair alone is one event.
        window (`int`): frames per item.
        root (`str` or `os.PathLike`, *optional*): the archive folder for a source given by name.
        pixel_size_km (`float`, *optional*): output pixel size, a whole multiple of the native one (block mean of
            k x k pixels; a block with any NaN is NaN). Default: the native grid.
        interval_minutes (`int`, *optional*): minutes between frames, a multiple of the source's time step.
        crop (`int`, *optional*): side of the square crops in output pixels. Default: the whole frame.
        stride (`int`, *optional*): pixels between crops (default ``crop``).
        window_stride (`int`, *optional*): frames between window starts (default ``window``).
        min_wet_fraction (`float`, defaults to 0): the wet-fraction filter, in [0, 1].
        wet_threshold (`float`, defaults to 0.1): rain rate (mm/h) from which a pixel is wet.
        nan_policy (`str`, defaults to "drop"): one of `NAN_POLICIES`.
        transform (`Callable`, *optional*): applied to every item dict.
        progress (`bool`, defaults to False): progress bars while reading.
    """

    units = "mm/h"

    def __init__(
        self,
        source: RadarSource | str,
        events: Sequence[tuple[str | dt.datetime, str | dt.datetime]] | tuple[str | dt.datetime, str | dt.datetime],
        window: int,
        *,
        root: str | os.PathLike | None = None,
        pixel_size_km: float | None = None,
        interval_minutes: int | None = None,
        crop: int | None = None,
        stride: int | None = None,
        window_stride: int | None = None,
        min_wet_fraction: float = 0.0,
        wet_threshold: float = 0.1,
        nan_policy: str = "drop",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(source, str):
            if root is None:
                raise ValueError(f"radar source {source!r} given by name needs root, the archive folder")
            source = RadarSource.from_pystepsrc(source, root=root)
        elif not isinstance(source, RadarSource):
            raise ValueError(f"source must be a RadarSource or a pystepsrc name, got {type(source).__name__}")
        self.source = source
        if isinstance(events, tuple) and len(events) == 2 and isinstance(events[0], (str, dt.datetime)):
            events = [events]
        if isinstance(events, (str, dt.datetime)) or not isinstance(events, Sequence) or not events:
            raise ValueError(f"events must be a non-empty list of (start, end) pairs, got {events!r}")
        self.events = [_event(e, f"event {i}") for i, e in enumerate(events)]
        self.window = check_positive_int("window", window)
        self.window_stride = check_positive_int(
            "window_stride", self.window if window_stride is None else window_stride
        )
        self.crop = None if crop is None else check_positive_int("crop", crop)
        self.stride = check_positive_int("stride", stride if stride is not None else (self.crop or 1))
        self.interval_minutes = source.check_interval(interval_minutes)
        self.pixel_size_km = pixel_size_km
        if not (isinstance(min_wet_fraction, (int, float)) and 0.0 <= min_wet_fraction <= 1.0):
            raise ValueError(f"min_wet_fraction must be a number in [0, 1], got {min_wet_fraction!r}")
        if not (isinstance(wet_threshold, (int, float)) and math.isfinite(wet_threshold) and wet_threshold >= 0):
            raise ValueError(f"wet_threshold must be a non-negative rain rate in mm/h, got {wet_threshold!r}")
        self.min_wet_fraction = float(min_wet_fraction)
        self.wet_threshold = float(wet_threshold)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.transform = transform

        self._scans: list[RadarFrames] = []
        index: list[tuple[int, int, int, int]] = []
        self.counts = {"candidates": 0, "empty": 0, "with_nan": 0, "dry": 0, "kept": 0}
        for number, (start, end) in enumerate(self.events):
            scan = scan_radar(source, start, end, self.interval_minutes, pixel_size_km, progress=progress)
            if self._scans:
                self._check_same_grid(scan, number)
            self._scans.append(scan)
            index += self._select(number, scan)
        if not index:
            raise ValueError(
                f"no window of radar source {source.name!r} passed the filters: {self._describe_counts()}"
            )
        self._index = np.asarray(index, dtype=np.int64)
        first = self._scans[0]
        self.height = self.crop or first.frames.shape[1]
        self.width = self.crop or first.frames.shape[2]

    def _check_same_grid(self, scan: RadarFrames, number: int) -> None:
        reference = self._scans[0].metadata
        for key in ("projection", "xpixelsize", "ypixelsize", "cartesian_unit", "yorigin"):
            if scan.metadata.get(key) != reference.get(key):
                raise ValueError(
                    f"event {number} of radar source {self.source.name!r} lies on another grid than event 0: "
                    f"{key} {scan.metadata.get(key)!r} against {reference.get(key)!r}"
                )
        if self.crop is None and scan.frames.shape[1:] != self._scans[0].frames.shape[1:]:
            raise ValueError(
                f"event {number} has frames of {scan.frames.shape[1:]} pixels, event 0 of "
                f"{self._scans[0].frames.shape[1:]}; give a crop size"
            )

    def _select(self, number: int, scan: RadarFrames) -> list[tuple[int, int, int, int]]:
        """(event, start, row, col) of the crops of event ``number`` that pass the filters."""
        num_frames, height, width = scan.frames.shape
        ch, cw = (self.crop, self.crop) if self.crop is not None else (height, width)
        if ch > height or cw > width:
            raise ValueError(
                f"crop={self.crop} exceeds the {height}x{width} frames of radar source {self.source.name!r} "
                f"(at {self.pixel_size_km or 'native'} km pixels)"
            )
        rows = np.arange(0, height - ch + 1, self.stride)
        cols = np.arange(0, width - cw + 1, self.stride)
        selected = []
        for start in range(0, num_frames - self.window + 1, self.window_stride):
            if not scan.present[start : start + self.window].all():
                continue
            values = scan.frames[start : start + self.window]
            invalid = np.isnan(values)
            with np.errstate(invalid="ignore"):
                wet = (values >= self.wet_threshold) & ~invalid
            nan_sums = _box_sums(_integral(invalid.sum(0)), rows, cols, ch, cw)
            wet_sums = _box_sums(_integral(wet.sum(0)), rows, cols, ch, cw)
            valid_sums = self.window * ch * cw - nan_sums
            empty = valid_sums == 0
            with_nan = (nan_sums > 0) & ~empty if self.nan_policy == "drop" else np.zeros_like(empty)
            wet_fraction = wet_sums / np.maximum(valid_sums, 1)
            dry = (wet_fraction < self.min_wet_fraction) & ~empty & ~with_nan
            keep = ~(empty | with_nan | dry)
            self.counts["candidates"] += keep.size
            self.counts["empty"] += int(empty.sum())
            self.counts["with_nan"] += int(with_nan.sum())
            self.counts["dry"] += int(dry.sum())
            self.counts["kept"] += int(keep.sum())
            for i, j in zip(*np.nonzero(keep)):
                selected.append((number, start, int(rows[i]), int(cols[j])))
        return selected

    def _describe_counts(self) -> str:
        c = self.counts
        return (
            f"{c['candidates']} candidate crops, {c['empty']} outside the radar domain, {c['with_nan']} with NaN "
            f"(nan_policy={self.nan_policy!r}), {c['dry']} below min_wet_fraction={self.min_wet_fraction:g} at "
            f"{self.wet_threshold:g} mm/h"
        )

    def __len__(self) -> int:
        return len(self._index)

    def sequence(self, index: int) -> dict[str, np.ndarray]:
        """Item ``index`` as NumPy arrays: ``frames`` (window, h, w, 1) float32 mm/h after the NaN policy,
        ``mask`` (window, h, w, 1) bool, ``valid_time`` (window,) int64, ``bounds`` (4,) float64 (``x1``, ``y1``,
        ``x2``, ``y2`` of the crop in the grid's ``cartesian_unit``), ``crop_offset`` (2,) int64 (row, col) and
        ``event`` () int64."""
        index = check_index(index, len(self))
        event, start, row, col = (int(v) for v in self._index[index])
        scan = self._scans[event]
        values = scan.frames[start : start + self.window, row : row + self.height, col : col + self.width]
        values = values[..., None].copy()
        mask = ~np.isnan(values)
        if self.nan_policy == "fill":
            values[~mask] = 0.0
        times = scan.times[start : start + self.window]
        return {
            "frames": values,
            "mask": mask,
            "valid_time": np.array([_epoch_seconds(t) for t in times], dtype=np.int64),
            "bounds": np.asarray(self._bounds(scan.metadata, row, col), dtype=np.float64),
            "crop_offset": np.array([row, col], dtype=np.int64),
            "event": np.int64(event),
        }

    def _bounds(self, grid: Mapping[str, Any], row: int, col: int) -> list[float]:
        if "xpixelsize" not in grid:
            return [math.nan] * 4
        px, py = grid["xpixelsize"], grid["ypixelsize"]
        x1 = grid["x1"] + col * px
        if grid.get("yorigin", "upper") == "upper":
            y2 = grid["y2"] - row * py
            return [x1, y2 - self.height * py, x1 + self.width * px, y2]
        y1 = grid["y1"] + row * py
        return [x1, y1, x1 + self.width * px, y1 + self.height * py]

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = self.sequence(index)
        event, start, row, col = (int(v) for v in self._index[check_index(index, len(self))])
        item = {
            "frames": torch.from_numpy(arrays["frames"]),
            "mask": torch.from_numpy(arrays["mask"]),
            "valid_time": torch.from_numpy(arrays["valid_time"]),
            "event": event,
            "start": start,
            "row": row,
            "col": col,
        }
        return self.transform(item) if self.transform is not None else item

    def valid_times(self, index: int) -> list[str]:
        """The valid times of item ``index``'s frames as ISO 8601 UTC text (``2016-09-28T14:45:00Z``)."""
        event, start = (int(v) for v in self._index[check_index(index, len(self))][:2])
        return [_iso(t) for t in self._scans[event].times[start : start + self.window]]

    def metadata(self) -> dict[str, Any]:
        """What a file written from this data set records: source, grid and projection, units, times, options."""
        grid = dict(self._scans[0].metadata)
        native = grid.pop("native_pixel_size_km")
        block = grid.pop("block")
        for key in ("x1", "y1", "x2", "y2"):
            grid.pop(key, None)
        if self.pixel_size_km is not None:
            pixel_size = float(self.pixel_size_km)
        else:
            pixel_size = None if native[0] is None else round(native[0], 3)
        return {
            "generator": type(self).__name__,
            **self.source.description(),
            **grid,
            "units": self.units,
            "pixel_size_km": pixel_size,
            "native_pixel_size_km": native,
            "block": block,
            "frame_interval_minutes": self.interval_minutes,
            "seq_len": self.window,
            "window_stride": self.window_stride,
            "height": self.height,
            "width": self.width,
            "crop": self.crop,
            "stride": self.stride,
            "min_wet_fraction": self.min_wet_fraction,
            "wet_threshold_mm_h": self.wet_threshold,
            "nan_policy": self.nan_policy,
            "num_sequences": len(self),
            "events": [
                {
                    "start": _iso(start),
                    "end": _iso(end),
                    "frames": int(scan.present.sum()),
                    "missing": [_iso(t) for t, p in zip(scan.times, scan.present) if not p],
                    "domain": [scan.metadata.get(k) for k in ("x1", "y1", "x2", "y2")],
                }
                for (start, end), scan in zip(self.events, self._scans)
            ],
            "counts": dict(self.counts),
            "valid_time_units": VALID_TIME_UNITS,
            "valid_times": [self.valid_times(i) for i in range(len(self))],
        }

    def iter_sequences(self) -> Iterator[dict[str, np.ndarray]]:
        """Every item as NumPy arrays ([`sequence`]), in order."""
        for index in range(len(self)):
            yield self.sequence(index)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source.name!r}, events={len(self.events)}, window={self.window}, "
            f"frames={self.height}x{self.width}, interval_minutes={self.interval_minutes}, "
            f"pixel_size_km={self.pixel_size_km}, nan_policy={self.nan_policy!r}, len={len(self)})"
        )
