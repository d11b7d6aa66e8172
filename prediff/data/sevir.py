"""SEVIR and SEVIR-LR read as published: ``CATALOG.csv`` plus HDF5 files under ``data/``.

Layout (https://registry.opendata.aws/sevir/): ``root/CATALOG.csv`` has one row per (event, image type) with
``id``, ``img_type``, ``time_utc``, ``file_name``, ``file_index`` and ``pct_missing``; the event is
``h5py.File(root / "data" / file_name)[img_type][file_index]``, an (H, W, T) array (384 x 384 x 49 uint8 for
VIL, 5-minute frames). SEVIR-LR, PreDiff's low-resolution version, has the same layout with every 2nd frame
and 3 x 3 block maxima (128 x 128 x 25, 10-minute frames); :func:`downsample_sevir` writes it from SEVIR.

Selection follows the official loader: rows of the image type, ``pct_missing == 0``, ``start_date < time_utc
<= end_date``, and ids that occur more than once for the image type are dropped. Windows of ``seq_len`` frames
start every ``stride`` frames inside each event (``1 + (L - seq_len) // stride`` per event). Data stream from
disk: an item reads only its window.
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..utils.checks import check_index, check_positive_int, check_value_range
from ..utils.files import atomic_output, check_outputs_spare_inputs, file_read_error
from .readers import HDF5HandleCache, check_array_metadata, import_optional, open_hdf5, scale_to_unit

CATALOG_COLUMNS = ("id", "img_type", "time_utc", "file_name", "file_index", "pct_missing")
#: Physical ranges mapped to [0, 1] for each image type (VIL: the uint8 encoding; the others: SEVIR's display
#: ranges of the int16 encodings, x 1e4 reflectance for vis and x 100 degrees C for the infrared channels).
SEVIR_VALUE_RANGES = {
    "vil": (0.0, 255.0),
    "vis": (0.0, 10000.0),
    "ir069": (-8000.0, -1000.0),
    "ir107": (-7000.0, 2000.0),
}
#: How SEVIR stores each image type. With the default ``value_range`` (the encoding's) a file must hold this
#: dtype: a float VIL file, for instance, is most likely already scaled or in kg m^-2, and dividing it by 255
#: would pass every range check while giving wrong values. A declared ``value_range`` accepts any number type.
SEVIR_DTYPES = {"vil": np.uint8, "vis": np.int16, "ir069": np.int16, "ir107": np.int16}
#: Official PreDiff split date: train/val on or before it, test after it.
PREDIFF_SPLIT_DATE = "2019-06-01"

DateLike = str | _dt.datetime | _dt.date | None


def _timestamp(name: str, value: DateLike) -> Any:
    pd = import_optional("pandas", "reading the SEVIR catalog")
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a date (e.g. '2019-06-01' or a datetime), got {value!r}") from None


def read_catalog(path: str | os.PathLike, img_types: Sequence[str] | None = None) -> Any:
    """``CATALOG.csv`` as a pandas DataFrame with ``time_utc`` parsed, after checking the values prediff uses.

    Every row needs a date in ``time_utc`` and a ``file_name`` that is a relative path staying inside
    ``data/``: a name such as ``../../x.h5`` or ``/x.h5`` would make readers open, and [`downsample_sevir`]
    write, files anywhere. The rows of ``img_types`` (by default every image type but ``lght``, whose rows list
    lightning flashes, not images) also need an integer ``file_index`` >= 0 and a number in ``pct_missing``,
    which comes back as floats. Errors name the catalog, the value, the event and the line.
    """
    pd = import_optional("pandas", "reading the SEVIR catalog")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SEVIR catalog {path} does not exist")
    try:
        catalog = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"SEVIR catalog {path} is empty; expected a header with {list(CATALOG_COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise file_read_error(path, "a CSV catalog", error) from None
    missing = [c for c in CATALOG_COLUMNS if c not in catalog.columns]
    if missing:
        raise ValueError(f"SEVIR catalog {path} lacks the column(s) {missing}; found {list(catalog.columns)}")
    # Parsing the whole column at once is fast, but fails on mixed formats and on a bad value without naming
    # its row; then parse value by value, which accepts mixed formats and leaves NaT where a value is no date.
    try:
        times = pd.to_datetime(catalog["time_utc"])
    except (TypeError, ValueError):
        times = pd.to_datetime(catalog["time_utc"], errors="coerce", format="mixed")
    _refuse_rows(path, catalog, "time_utc", times.isna(), "is not a date; expected e.g. '2019-06-01 12:00:00'")
    catalog["time_utc"] = times
    _refuse_rows(
        path,
        catalog,
        "file_name",
        ~catalog["file_name"].map(_stays_inside_data),
        "is not a relative path inside data/ (empty, absolute, or with '..')",
    )
    checked = catalog["img_type"].isin(list(img_types)) if img_types is not None else catalog["img_type"] != "lght"
    file_index = pd.to_numeric(catalog["file_index"], errors="coerce")
    whole = file_index.notna() & (file_index >= 0) & (file_index % 1 == 0)
    _refuse_rows(path, catalog, "file_index", checked & ~whole, "is not an integer >= 0")
    pct_missing = pd.to_numeric(catalog["pct_missing"], errors="coerce")
    _refuse_rows(path, catalog, "pct_missing", checked & pct_missing.isna(), "is not a number")
    catalog["pct_missing"] = pct_missing
    return catalog


def _stays_inside_data(file_name: Any) -> bool:
    """Whether a catalog ``file_name`` names a file below ``data/``, on POSIX and on Windows alike."""
    if not isinstance(file_name, str) or not file_name.strip() or "\0" in file_name:
        return False
    return not PureWindowsPath(file_name).anchor and ".." not in re.split(r"[\\/]", file_name)


def _refuse_rows(path: Path, catalog: Any, column: str, bad: Any, problem: str) -> None:
    """Raise ``ValueError`` naming the first catalog row where ``bad`` holds (its value, event and line)."""
    rows = np.flatnonzero(bad.to_numpy())
    if len(rows):
        row = int(rows[0])
        value = catalog[column].iloc[row]
        value = value.item() if isinstance(value, np.generic) else value  # 1.5, not np.float64(1.5)
        raise ValueError(
            f"SEVIR catalog {path}: {column} {value!r} of event {catalog['id'].iloc[row]} (line {row + 2}) "
            f"{problem} ({len(rows)} such row(s))"
        )


def select_events(
    catalog: Any,
    img_type: str = "vil",
    start_date: DateLike = None,
    end_date: DateLike = None,
    drop_missing: bool = True,
    event_ids: Sequence[str] | None = None,
) -> Any:
    """Catalog rows of the events to use, in catalog order (the official filter; see the module docstring)."""
    rows = catalog[catalog["img_type"] == img_type]
    if drop_missing:
        rows = rows[rows["pct_missing"] == 0]
    start, end = _timestamp("start_date", start_date), _timestamp("end_date", end_date)
    if start is not None:
        rows = rows[rows["time_utc"] > start]
    if end is not None:
        rows = rows[rows["time_utc"] <= end]
    rows = rows[~rows["id"].duplicated(keep=False)]
    if event_ids is not None:
        rows = rows[rows["id"].isin(list(event_ids))]
    return rows.reset_index(drop=True)


class SEVIRDataset(Dataset):
    """Windows of SEVIR or SEVIR-LR events, streamed from the HDF5 files.

    Items are dicts:

    * ``"frames"``: float32 tensor (seq_len, H, W, 1), scaled from ``value_range`` to [0, 1] (VIL: x / 255);
    * ``"event_id"`` (str), ``"time_utc"`` (ISO string of the event time in the catalog), ``"start"`` (first
      frame of the window inside the event), ``"index"``.

    Args:
        root (`str` or `os.PathLike`): folder holding ``CATALOG.csv`` and ``data/``.
        seq_len (`int`, defaults to 13): frames per window (PreDiff SEVIR-LR: 13 = 7 + 6; Earthformer: 25).
        stride (`int`, defaults to 6): step between window starts inside an event.
        img_type (`str`, defaults to "vil"): image type, also the dataset key inside the HDF5 files.
        start_date, end_date (*optional*): keep events with ``start_date < time_utc <= end_date``.
        drop_missing (`bool`, defaults to True): keep only rows with ``pct_missing == 0``.
        event_ids (*optional*): restrict to these event ids.
        value_range (`tuple`, *optional*): physical range mapped to [0, 1]; defaults to
            ``SEVIR_VALUE_RANGES``, and then the files must hold SEVIR's encoding (``SEVIR_DTYPES``: uint8 for
            VIL, int16 for the others). With a declared range any integer or float data are read.
        clip (`bool`, *optional*): clip values outside ``value_range`` instead of raising; defaults to False
            for VIL (its range is the encoding's) and True for the other types (their ranges are display
            ranges).
        catalog (*optional*): another catalog file to use instead of ``root / "CATALOG.csv"``.
        skip_missing_files (`bool`, defaults to False): drop events whose HDF5 file is absent (partial
            downloads) instead of raising ``FileNotFoundError``.
        transform (`Callable`, *optional*): applied to every item dict (e.g. :class:`RandomFlipRotate`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        seq_len: int = 13,
        stride: int = 6,
        img_type: str = "vil",
        start_date: DateLike = None,
        end_date: DateLike = None,
        drop_missing: bool = True,
        event_ids: Sequence[str] | None = None,
        value_range: tuple[float, float] | None = None,
        clip: bool | None = None,
        catalog: str | os.PathLike | None = None,
        skip_missing_files: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"SEVIR root folder {self.root} does not exist")
        self.data_dir = self.root / "data"
        self.catalog_path = Path(catalog) if catalog is not None else self.root / "CATALOG.csv"
        self.seq_len = check_positive_int("seq_len", seq_len)
        self.stride = check_positive_int("stride", stride)
        if img_type == "lght":
            raise ValueError("img_type 'lght' is a list of lightning flashes, not an image sequence; not supported")
        self.img_type = img_type
        self.stored_dtype: np.dtype | None = None
        if value_range is None:
            if img_type not in SEVIR_VALUE_RANGES:
                raise ValueError(
                    f"no default value_range for img_type {img_type!r}; pass value_range=(low, high) "
                    f"(known types: {sorted(SEVIR_VALUE_RANGES)})"
                )
            value_range = SEVIR_VALUE_RANGES[img_type]
            self.stored_dtype = np.dtype(SEVIR_DTYPES[img_type])
        self.value_range = check_value_range(value_range)
        self.clip = (img_type != "vil") if clip is None else bool(clip)
        self.transform = transform

        catalog_frame = read_catalog(self.catalog_path, img_types=[img_type])
        if img_type not in set(catalog_frame["img_type"]):
            raise ValueError(
                f"img_type {img_type!r} does not occur in {self.catalog_path} "
                f"(types found: {sorted(map(str, catalog_frame['img_type'].unique()))})"
            )
        events = select_events(catalog_frame, img_type, start_date, end_date, drop_missing, event_ids)

        # Read every referenced file's array shape once (metadata only) to validate events and count windows.
        shapes: dict[str, tuple[int, ...]] = {}
        keep = np.ones(len(events), dtype=bool)
        for file_name in events["file_name"].unique():
            path = self.data_dir / file_name
            if not path.exists():
                if skip_missing_files:
                    keep &= (events["file_name"] != file_name).to_numpy()
                    continue
                raise FileNotFoundError(
                    f"SEVIR file {path} (listed in {self.catalog_path}) does not exist; "
                    f"pass skip_missing_files=True to use only the files present"
                )
            with open_hdf5(path) as f:
                if img_type not in f:
                    raise ValueError(f"{path} has no dataset {img_type!r}; it holds {sorted(f.keys())}")
                shape, dtype = tuple(f[img_type].shape), f[img_type].dtype
            if len(shape) != 4:
                raise ValueError(f"{path}:{img_type} must be 4-D (N, H, W, T), got shape {shape}")
            check_array_metadata(f"{path}:{img_type}", dtype, (shape[1], shape[2], self.seq_len))
            self._check_encoding(path, dtype)
            shapes[file_name] = shape
        events = events[keep].reset_index(drop=True)

        starts: list[np.ndarray] = []
        for row, (event_id, file_name, file_index) in enumerate(
            zip(events["id"], events["file_name"], events["file_index"])
        ):
            n_events, height, width, length = shapes[file_name]
            if not 0 <= int(file_index) < n_events:
                raise ValueError(
                    f"event {event_id}: file_index {file_index} is out of range for "
                    f"{self.data_dir / file_name} "
                    f"which holds {n_events} events"
                )
            if length < self.seq_len:
                raise ValueError(
                    f"event {event_id} in {self.data_dir / file_name} has {length} frames, fewer than "
                    f"seq_len={self.seq_len}"
                )
            count = 1 + (length - self.seq_len) // self.stride
            starts.append(np.stack([np.full(count, row), np.arange(count) * self.stride], axis=1))
        self.events = events
        self._windows = np.concatenate(starts) if starts else np.zeros((0, 2), dtype=np.int64)
        self._files = HDF5HandleCache()
        frame_shapes = {s[1:3] for s in shapes.values()}
        self.frame_shape = frame_shapes.pop() if len(frame_shapes) == 1 else None

    def _check_encoding(self, path: Path, dtype: np.dtype) -> None:
        """Refuse data not in SEVIR's encoding when the default value range applies."""
        if self.stored_dtype is not None and dtype != self.stored_dtype:
            low, high = self.value_range
            raise ValueError(
                f"{path}:{self.img_type} holds {dtype} values, but SEVIR stores {self.img_type} as "
                f"{self.stored_dtype} (the default value_range [{low:g}, {high:g}] is that encoding's); pass "
                "value_range=(low, high) to read data in other units"
            )

    @property
    def num_events(self) -> int:
        return len(self.events)

    def __len__(self) -> int:
        return len(self._windows)

    def locate(self, index: int) -> tuple[int, int]:
        """(event row in ``self.events``, first frame) of window ``index``."""
        index = check_index(index, len(self))
        row, start = self._windows[index]
        return int(row), int(start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, start = self.locate(index)
        event = self.events.iloc[row]
        path = self.data_dir / event["file_name"]
        raw = self._files.get(path)[self.img_type][int(event["file_index"]), :, :, start : start + self.seq_len]
        frames = scale_to_unit(
            np.moveaxis(raw, -1, 0)[..., None], self.value_range, self.clip, f"event {event['id']} in {path}"
        )
        item = {
            "frames": torch.from_numpy(np.ascontiguousarray(frames)),
            "event_id": str(event["id"]),
            "time_utc": event["time_utc"].isoformat(),
            "start": start,
            "index": int(index),
        }
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, img_type={self.img_type!r}, "
            f"events={self.num_events}, "
            f"windows={len(self)}, seq_len={self.seq_len}, stride={self.stride})"
        )


def prediff_sevir_splits(
    root: str | os.PathLike,
    seq_len: int = 13,
    stride: int = 6,
    split_date: DateLike = PREDIFF_SPLIT_DATE,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> dict[str, Dataset]:
    """The official PreDiff SEVIR-LR split: ``{"train", "val", "test"}``.

    Train and validation come from events with ``time_utc <= split_date``, split at random at the window level
    (``torch.utils.data.random_split`` with fractions ``[1 - val_fraction, val_fraction]`` and a generator
    seeded with ``seed``); test is every event after ``split_date``. ``train_transform`` (e.g. the official
    flips and rotations) applies to the training windows only; the official code also augmented validation
    windows, which looks unintended and is not reproduced. Windows are enumerated in catalog order, so the
    validation membership is not the official one window for window. ``kwargs`` go to :class:`SEVIRDataset`.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    train_val = SEVIRDataset(root, seq_len, stride, end_date=split_date, **kwargs)
    train_view = SEVIRDataset(root, seq_len, stride, end_date=split_date, transform=train_transform, **kwargs)
    test = SEVIRDataset(root, seq_len, stride, start_date=split_date, **kwargs)
    if len(train_val) < 2:
        raise ValueError(f"only {len(train_val)} windows on or before {split_date}: too few to split")
    train, val = torch.utils.data.random_split(
        train_val,
        [1.0 - float(val_fraction), float(val_fraction)],
        generator=torch.Generator().manual_seed(seed),
    )
    return {"train": Subset(train_view, train.indices), "val": val, "test": test}


def earthformer_sevir_splits(
    root: str | os.PathLike,
    seq_len: int = 25,
    stride: int = 12,
    train_end: DateLike = "2019-01-01",
    val_end: DateLike = PREDIFF_SPLIT_DATE,
    train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> dict[str, Dataset]:
    """Earthformer's SEVIR split by date: train <= 2019-01-01 < val <= 2019-06-01 < test (seq 25/12)."""
    return {
        "train": SEVIRDataset(root, seq_len, stride, end_date=train_end, transform=train_transform, **kwargs),
        "val": SEVIRDataset(root, seq_len, stride, start_date=train_end, end_date=val_end, **kwargs),
        "test": SEVIRDataset(root, seq_len, stride, start_date=val_end, **kwargs),
    }


def block_max(array: np.ndarray, factor: int, axes: tuple[int, int]) -> np.ndarray:
    """Maximum over non-overlapping ``factor`` x ``factor`` blocks of two axes.

    Sizes that ``factor`` does not divide are padded at the end with the dtype's lowest value, which never
    wins a maximum (``skimage.measure.block_reduce`` pads with 0, which would win over negative infrared
    values).
    """
    a0, a1 = sorted(a % array.ndim for a in axes)
    pad = [(0, 0)] * array.ndim
    pad[a0] = (0, -array.shape[a0] % factor)
    pad[a1] = (0, -array.shape[a1] % factor)
    if any(p[1] for p in pad):
        lowest = np.iinfo(array.dtype).min if np.issubdtype(array.dtype, np.integer) else -np.inf
        array = np.pad(array, pad, constant_values=lowest)
    shape = list(array.shape)
    new_shape = shape[:a0] + [shape[a0] // factor, factor] + shape[a0 + 1 : a1] + [shape[a1] // factor, factor]
    new_shape += shape[a1 + 1 :]
    return array.reshape(new_shape).max(axis=(a0 + 1, a1 + 2))


def downsample_events(events: np.ndarray, time_factor: int = 2, space_factor: int = 3) -> np.ndarray:
    """SEVIR -> SEVIR-LR on (N, H, W, T) events: every ``time_factor``-th frame, block max over space."""
    if events.ndim != 4:
        raise ValueError(f"events must be (N, H, W, T), got shape {events.shape}")
    return block_max(events[..., ::time_factor], space_factor, axes=(1, 2))


def downsample_sevir(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    img_types: Sequence[str] = ("vil",),
    time_factor: int = 2,
    space_factor: int = 3,
    overwrite: bool = False,
    skip_missing_files: bool = False,
    chunk_events: int = 16,
    progress: bool = True,
    workers: int | None = None,
) -> list[Path]:
    """Write SEVIR-LR from SEVIR: same relative file names and dataset keys, catalog copied unchanged.

    Every file of ``img_types`` listed in ``src/CATALOG.csv`` is read ``chunk_events`` events at a time (never
    whole) and written to ``dst/data/<file_name>`` atomically; other datasets in a file (such as ``id``) are
    copied as they are. ``workers`` processes (default: every core, ``os.cpu_count()``) convert files in
    parallel; each output file is written by one of them alone, byte for byte as one worker writes it. Returns
    the written files, in catalog order.

    Nothing is ever written into ``src`` (``dst`` may not lie inside it, nor any output resolve into it), and
    existing files are replaced only with ``overwrite``; catalog file names that would leave ``data/`` are
    refused (see [`read_catalog`]).
    """
    import_optional("h5py", "downsampling SEVIR")
    from tqdm.auto import tqdm

    src, dst = Path(src), Path(dst)
    time_factor = check_positive_int("time_factor", time_factor)
    space_factor = check_positive_int("space_factor", space_factor)
    chunk_events = check_positive_int("chunk_events", chunk_events)
    workers = check_positive_int("workers", (os.cpu_count() or 1) if workers is None else workers)
    catalog_path = src / "CATALOG.csv"
    catalog = read_catalog(catalog_path, img_types=img_types)
    check_outputs_spare_inputs({"DST": dst}, {"SRC": src})
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst} already exists and is not empty; pass overwrite=True (--overwrite)")
    types = list(img_types)
    unknown = [t for t in types if t not in set(catalog["img_type"])]
    if unknown:
        raise ValueError(f"img_types {unknown} do not occur in {catalog_path}")
    rows = catalog[catalog["img_type"].isin(types)]
    # A file may hold several of the image types; it is written once, with all of them.
    keys_of: dict[str, list[str]] = {}
    for name, key in sorted(set(zip(rows["file_name"], rows["img_type"]))):
        keys_of.setdefault(name, []).append(key)
    missing = [name for name in keys_of if not (src / "data" / name).exists()]
    if missing and not skip_missing_files:
        raise FileNotFoundError(
            f"SEVIR file {src / 'data' / missing[0]} (and {len(missing) - 1} more) listed in {catalog_path} "
            f"does not exist; pass skip_missing_files=True (--skip-missing) to convert only the files present"
        )
    keys_of = {name: keys for name, keys in keys_of.items() if name not in missing}
    if not keys_of:
        raise FileNotFoundError(f"none of the files of {types} listed in {catalog_path} exist under {src / 'data'}")
    # A link inside DST may still lead into SRC.
    outputs = {f"the output for {name}": dst / "data" / name for name in keys_of}
    check_outputs_spare_inputs({**outputs, "the output catalog": dst / "CATALOG.csv"}, {"SRC": src})

    dst.mkdir(parents=True, exist_ok=True)
    jobs = [
        (src / "data" / name, dst / "data" / name, keys, time_factor, space_factor, chunk_events, overwrite)
        for name, keys in keys_of.items()
    ]
    pool = None
    if min(workers, len(jobs)) > 1:
        # Forked workers start at once; spawned ones would import prediff (torch, diffusers) again each.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        pool = multiprocessing.get_context(method).Pool(min(workers, len(jobs)))
    written = []
    bar = tqdm(total=len(jobs), desc="SEVIR -> SEVIR-LR", disable=not progress)
    try:
        for target in pool.imap(_downsample_file, jobs) if pool is not None else map(_downsample_file, jobs):
            written.append(target)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            # Not terminate(): a worker killed mid-file would leave its temporary output behind.
            pool.close()
            pool.join()
    with atomic_output(dst / "CATALOG.csv", overwrite=overwrite) as tmp:
        tmp.write_bytes(catalog_path.read_bytes())
    return written


def _downsample_file(job: tuple[Path, Path, list[str], int, int, int, bool]) -> Path:
    """Write one SEVIR-LR file; `job` is (source file, output file, image types it holds, time factor, space
    factor, events per read, overwrite). Returns the output file."""
    h5py = import_optional("h5py", "downsampling SEVIR")
    source_path, target, keys, time_factor, space_factor, chunk_events, overwrite = job
    with open_hdf5(source_path) as fin, atomic_output(target, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as fout:
            for key in keys:
                _downsample_dataset(fin, fout, key, source_path, time_factor, space_factor, chunk_events)
            for other in fin.keys():
                if other not in keys:
                    fin.copy(fin[other], fout, name=other)
            fout.attrs.update(dict(fin.attrs))
            fout.attrs["prediff_downsample"] = f"time every {time_factor}, space {space_factor}x{space_factor} max"
    return target


def _downsample_dataset(
    fin: Any, fout: Any, key: str, source_path: Path, time_factor: int, space_factor: int, chunk_events: int
) -> None:
    """Write the SEVIR-LR version of the (N, H, W, T) dataset ``key`` of the open HDF5 file ``fin`` into
    ``fout``, ``chunk_events`` events at a time."""
    if key not in fin:
        raise ValueError(f"{source_path} has no dataset {key!r}; it holds {sorted(fin.keys())}")
    data = fin[key]
    if data.ndim != 4:
        raise ValueError(f"{source_path}:{key} must be 4-D (N, H, W, T), got shape {data.shape}")
    check_array_metadata(f"{source_path}:{key}", data.dtype, (chunk_events, *data.shape[1:]))
    n = data.shape[0]
    out_shape = downsample_events(np.zeros((1, *data.shape[1:]), dtype=data.dtype), time_factor, space_factor).shape
    out = fout.create_dataset(key, shape=(n, *out_shape[1:]), dtype=data.dtype, chunks=(1, *out_shape[1:]))
    for start in range(0, n, chunk_events):
        block = data[start : start + chunk_events]
        out[start : start + len(block)] = downsample_events(block, time_factor, space_factor)
    out.attrs.update(dict(data.attrs))


def describe_sevir_root(root: Path) -> list[str]:
    """Lines for ``prediff data inspect``: catalog counts per image type and the HDF5 files present."""
    catalog = read_catalog(root / "CATALOG.csv")
    lines = ["format: SEVIR (CATALOG.csv + data/)"]
    for img_type, rows in catalog.groupby("img_type"):
        complete = rows[rows["pct_missing"] == 0]
        files = sorted(rows["file_name"].unique())
        present = [f for f in files if (root / "data" / f).exists()]
        lines.append(
            f"  {img_type}: {len(rows)} events ({len(complete)} with pct_missing == 0), "
            f"{rows['time_utc'].min()} .. {rows['time_utc'].max()}, files present {len(present)}/{len(files)}"
        )
        for file_name in present[:3]:
            with open_hdf5(root / "data" / file_name) as f:
                if img_type in f:
                    lines.append(f"    {file_name}: {img_type} shape {f[img_type].shape} dtype {f[img_type].dtype}")
    return lines
