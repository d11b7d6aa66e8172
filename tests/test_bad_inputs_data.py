"""Hostile files and careless hands, data side: catalogs, headers and stores that lie, outputs over inputs.

Every case builds the real file (CSV catalog, HDF5, netCDF, zarr, .npy / .npz, YAML) and checks that it is
refused with a message naming the file (and line, array or option), and that nothing outside the intended
output was written or changed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")
netCDF4 = pytest.importorskip("netCDF4")
zarr = pytest.importorskip("zarr")

from prediff.data import ArraySequenceDataset, ENSODataset, SEVIRDataset  # noqa: E402
from prediff.pipelines.forecast_io import read_context  # noqa: E402
from prediff.training.config import MAX_YAML_VALUES, load_config, parse_override_args  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

#: Sizes far beyond the memory of any machine these tests run on: 10^15 float32 values (3.6 PiB).
HUGE_SHAPE = (10**6, 10**6, 10**3)


def tree_state(root: Path) -> dict[str, object]:
    """What lies under `root`: each entry's relative path -> its bytes (files) or link target (links)."""
    state: dict[str, object] = {}
    for entry in sorted(root.rglob("*")):
        key = str(entry.relative_to(root))
        if entry.is_symlink():
            state[key] = ("link", os.readlink(entry))
        elif entry.is_file():
            state[key] = entry.read_bytes()
        else:
            state[key] = "folder"
    return state


# ---------------------------------------------------------------------------------------------- SEVIR catalogs


def write_vil(path: Path, events: int = 2, size: int = 12, frames: int = 13, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(seed).integers(0, 256, (events, size, size, frames), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("vil", data=values)


def write_catalog(root: Path, rows: list[dict[str, object]]) -> Path:
    """`root/CATALOG.csv` with the columns prediff reads; each row defaults to a complete VIL event of
    `vil/a.h5`."""
    root.mkdir(parents=True, exist_ok=True)
    defaults = {"img_type": "vil", "time_utc": "2018-03-01 10:00:00", "file_name": "vil/a.h5", "pct_missing": 0.0}
    frame = pd.DataFrame(
        [{"id": f"E{n + 1}", "file_index": n % 2, **defaults, **row} for n, row in enumerate(rows)],
        columns=["id", "file_name", "file_index", "img_type", "time_utc", "pct_missing"],
    )
    frame.to_csv(root / "CATALOG.csv", index=False)
    return root / "CATALOG.csv"


def escaping_name(kind: str, target: Path) -> str:
    """A catalog file_name that leads from `root/data` to `target` (two folders above it)."""
    return {
        "dotdot": f"../../{target.name}",
        "nested_dotdot": f"vil/../../../{target.name}",
        "absolute": str(target),
    }[kind]


@pytest.mark.parametrize("kind", ["dotdot", "nested_dotdot", "absolute"])
def test_sevir_dataset_refuses_file_names_leaving_the_root(tmp_path, kind):
    outside = tmp_path / "outside.h5"
    write_vil(outside)
    root = tmp_path / "sevir"
    write_vil(root / "data" / "vil" / "a.h5")
    name = escaping_name(kind, outside)
    write_catalog(root, [{}, {"file_name": name}])
    before = tree_state(tmp_path)
    pattern = rf"CATALOG\.csv: file_name {re.escape(repr(name))} of event E2 \(line 3\) is not a relative path inside"
    with pytest.raises(ValueError, match=pattern):
        SEVIRDataset(root, seq_len=13)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_downsample_never_writes_outside_dst_nor_into_src(tmp_path, capsys, kind):
    src, dst = tmp_path / "src", tmp_path / "dst"
    source_file = src / "data" / "vil" / "a.h5"
    write_vil(source_file)
    # From src/data, ../../src/data/vil/a.h5 is the source file; from dst/data it is the same file too.
    name = "../../src/data/vil/a.h5" if kind == "dotdot" else str(source_file)
    write_catalog(src, [{}, {"file_name": name}])
    before = tree_state(tmp_path)
    assert run_cli(["data", "downsample-sevir", src, dst, "--quiet", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"CATALOG\.csv: file_name {re.escape(repr(name))} of event E2 \(line 3\)", err), err
    assert tree_state(tmp_path) == before and not dst.exists()


@pytest.mark.parametrize("dst_below_src", ["lr", "data/lr"])
def test_downsample_refuses_a_destination_inside_the_source(tmp_path, capsys, dst_below_src):
    src = tmp_path / "src"
    write_vil(src / "data" / "vil" / "a.h5")
    write_catalog(src, [{}])
    before = tree_state(tmp_path)
    assert run_cli(["data", "downsample-sevir", src, src / dst_below_src, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"DST {re.escape(str(src / dst_below_src))} lies inside SRC {re.escape(str(src))}", err), err
    assert tree_state(tmp_path) == before


def test_downsample_writes_a_file_of_two_image_types_once_with_both(tmp_path):
    """Written once per image type, the second write replaced the first (overwrite was forced)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    path = src / "data" / "both.h5"
    write_vil(path, events=1, size=6, frames=4)
    with h5py.File(path, "a") as f:
        f.create_dataset("ir069", data=np.full((1, 6, 6, 4), -5000, dtype=np.int16))
    write_catalog(src, [{"file_name": "both.h5", "file_index": 0}, {"file_name": "both.h5", "img_type": "ir069"}])
    argv = ["data", "downsample-sevir", src, dst, "--img-type", "vil", "--img-type", "ir069", "--quiet"]
    assert run_cli(argv) == 0
    with h5py.File(dst / "data" / "both.h5", "r") as f:
        assert f["vil"].shape == f["ir069"].shape == (1, 2, 2, 2)


@pytest.mark.parametrize(
    "column, value, shown, problem",
    [
        ("file_name", "", "nan", "is not a relative path inside data/"),
        ("file_index", 1.5, "1.5", "is not an integer >= 0"),
        ("file_index", -1, "-1", "is not an integer >= 0"),
        ("file_index", "", "nan", "is not an integer >= 0"),
        ("pct_missing", "abc", "'abc'", "is not a number"),
    ],
)
def test_catalog_values_are_refused_naming_the_line(tmp_path, column, value, shown, problem):
    root = tmp_path / "sevir"
    write_vil(root / "data" / "vil" / "a.h5")
    write_catalog(root, [{}, {column: value}])
    before = tree_state(tmp_path)
    pattern = rf"CATALOG\.csv: {column} {re.escape(shown)} of event E2 \(line 3\) {re.escape(problem)}"
    with pytest.raises(ValueError, match=pattern):
        SEVIRDataset(root, seq_len=13)
    assert tree_state(tmp_path) == before


def test_inspect_refuses_a_catalog_pointing_outside_the_root(tmp_path, capsys):
    outside = tmp_path / "outside.h5"
    write_vil(outside)
    root = tmp_path / "sevir"
    write_catalog(root, [{"file_name": str(outside)}])
    assert run_cli(["data", "inspect", root]) == 2
    err = capsys.readouterr().err
    assert re.search(r"CATALOG\.csv: file_name .*outside\.h5' of event E1 \(line 2\)", err), err
    assert "outside.h5: vil shape" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- zarr with pickle


class TouchWhenUnpickled:
    """Unpickling this creates `marker`: proof that a reader decoded a chunk with pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def write_pickle_store(store: Path, kind: str, marker: Path) -> None:
    """A zarr store whose array `frames` (3, 32, 32) is decoded with pickle, its metadata written by hand (the
    installed zarr refuses to create such stores); its only chunk creates `marker` when unpickled."""
    payload = pickle.dumps(TouchWhenUnpickled(marker))
    frames = store / "frames"
    frames.mkdir(parents=True)
    v2 = {"zarr_format": 2, "shape": [3, 32, 32], "chunks": [3, 32, 32], "order": "C", "compressor": None}
    pickled = {**v2, "dtype": "|O", "fill_value": None, "filters": [{"id": "pickle", "protocol": 5}]}
    if kind == "v3_pickle_codec":
        (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
        metadata = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [3, 32, 32],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, 32, 32]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0.0,
            "codecs": [{"name": "numcodecs.pickle"}, {"name": "bytes", "configuration": {"endian": "little"}}],
            "attributes": {},
        }
        (frames / "zarr.json").write_text(json.dumps(metadata))
        (frames / "c" / "0" / "0").mkdir(parents=True)
        (frames / "c" / "0" / "0" / "0").write_bytes(payload)
        return
    (store / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    array = {
        "object_dtype": pickled,
        "floats_with_pickle_filter": {**v2, "dtype": "<f4", "fill_value": 0.0, "filters": [{"id": "pickle"}]},
        # Clean per-array metadata; the consolidated copy, which zarr and xarray prefer, is the pickled one.
        "consolidated": {**v2, "dtype": "<f4", "fill_value": 0.0, "filters": None},
    }[kind]
    (frames / ".zarray").write_text(json.dumps(array))
    if kind == "consolidated":
        consolidated = {
            "zarr_consolidated_format": 1,
            "metadata": {".zgroup": {"zarr_format": 2}, "frames/.zarray": pickled},
        }
        (store / ".zmetadata").write_text(json.dumps(consolidated))
    (frames / "0.0.0").write_bytes(payload)


def read_with(reader: str, store: Path, capsys) -> str:
    """Read `store` as `reader` does and return the error message."""
    if reader == "inspect":
        assert run_cli(["data", "inspect", store]) == 2
        return capsys.readouterr().err
    with pytest.raises(ValueError) as error:
        if reader == "context":
            read_context(store)
        else:
            ArraySequenceDataset.from_file(store, value_range=(0, 255))
    return str(error.value)


#: What each pickled store is refused for.
PICKLE_STORE_MESSAGES = {
    "object_dtype": r"ctx\.zarr:frames holds Python objects \(dtype '\|O'\)",
    "floats_with_pickle_filter": r"ctx\.zarr:frames is encoded with pickle",
    "consolidated": r"ctx\.zarr:frames \(consolidated metadata\) holds Python objects",
    "v3_pickle_codec": r"ctx\.zarr:frames is encoded with pickle \(\['numcodecs\.pickle', 'bytes'\]\)",
}


@pytest.mark.parametrize("reader", ["context", "inspect", "sequence_file"])
@pytest.mark.parametrize("kind", sorted(PICKLE_STORE_MESSAGES))
def test_zarr_stores_decoded_with_pickle_are_refused_before_any_chunk_is_read(tmp_path, capsys, reader, kind):
    store, marker = tmp_path / "ctx.zarr", tmp_path / "unpickled"
    write_pickle_store(store, kind, marker)
    before = tree_state(tmp_path)
    assert re.search(PICKLE_STORE_MESSAGES[kind], read_with(reader, store, capsys))
    assert not marker.exists()
    assert tree_state(tmp_path) == before


# ---------------------------------------------------------------------------------------------- sizes from headers


def write_npy_header(path: Path, shape: tuple[int, ...], data_bytes: int) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(b"\0" * data_bytes)


def write_huge(kind: str, folder: Path) -> Path:
    """A small file whose metadata claims an array of `HUGE_SHAPE` (or, for `npy_truncated`, a few bytes more
    than it holds)."""
    if kind == "npy":
        path = folder / "ctx.npy"
        write_npy_header(path, HUGE_SHAPE, 1000)
    elif kind == "npy_truncated":
        path = folder / "ctx.npy"
        write_npy_header(path, (3, 32, 32), 3 * 32 * 32 * 4 - 1)
    elif kind == "hdf5":
        path = folder / "ctx.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("frames", shape=HUGE_SHAPE, dtype="f4", chunks=(1, 100, 100), compression="gzip")
    elif kind == "netcdf_variable":
        path = folder / "ctx.nc"
        with netCDF4.Dataset(path, "w") as f:
            for name, size in zip(("time", "y", "x"), HUGE_SHAPE):
                f.createDimension(name, size)
            f.createVariable("frames", "f4", ("time", "y", "x"), chunksizes=(1, 100, 100))
    elif kind == "netcdf_coordinate":
        # xarray reads the coordinates of every dimension when it opens a file.
        path = folder / "ctx.nc"
        with netCDF4.Dataset(path, "w") as f:
            f.createDimension("time", 10**12)
            f.createVariable("time", "f8", ("time",), chunksizes=(1000,))
    else:
        path = folder / "ctx.zarr"
        zarr.create_array(store=str(path), shape=HUGE_SHAPE, chunks=(1, 1000, 1000), dtype="f4")
    assert sum(p.stat().st_size for p in [path, *path.rglob("*")] if p.is_file()) < 20_000
    return path


#: What each file of `write_huge` is refused for: the file, the array, the shape and the memory or bytes needed.
HUGE_FILE_MESSAGES = {
    "npy": r"ctx\.npy: the \.npy header declares shape \(1000000, 1000000, 1000\) of float32, "
    r"4,000,000,000,000,000 bytes \(3\.6 PiB\), but the file holds 1,000 bytes of data",
    "npy_truncated": r"ctx\.npy: the \.npy header declares shape \(3, 32, 32\) of float32, 12,288 bytes "
    r"\(12\.0 KiB\), but the file holds 12,287 bytes",
    "hdf5": r"ctx\.h5:frames: reading \(1000000, 1000000, 1000\) float32 values at once would need 3\.6 PiB of memory",
    "netcdf_variable": r"ctx\.nc:frames: reading \(1000000, 1000000, 1000\) float32 values at once would need "
    r"3\.6 PiB of memory",
    "netcdf_coordinate": r"ctx\.nc:time: reading \(1000000000000,\) float64 values at once would need 7\.3 TiB of "
    r"memory",
    "zarr": r"ctx\.zarr: reading \(1000000, 1000000, 1000\) float32 values at once would need 3\.6 PiB of memory",
}


@pytest.mark.parametrize("kind", sorted(HUGE_FILE_MESSAGES))
def test_context_headers_claiming_petabytes_are_refused_before_allocating(tmp_path, kind):
    path = write_huge(kind, tmp_path)
    before = tree_state(tmp_path)
    with pytest.raises(ValueError, match=HUGE_FILE_MESSAGES[kind]):
        read_context(path)
    assert tree_state(tmp_path) == before


def test_inspect_refuses_an_npz_member_claiming_petabytes(tmp_path, capsys):
    path = tmp_path / "archive.npz"
    header = tmp_path / "member.npy"
    write_npy_header(header, HUGE_SHAPE, 64)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(header, "frames.npy")
    header.unlink()
    before = tree_state(tmp_path)
    assert run_cli(["data", "inspect", path]) == 2
    err = capsys.readouterr().err
    assert re.search(r"archive\.npz:frames: the \.npy header declares shape \(1000000, 1000000, 1000\)", err), err
    assert tree_state(tmp_path) == before


def test_sevir_file_claiming_huge_frames_is_refused_when_opened(tmp_path):
    root = tmp_path / "sevir"
    path = root / "data" / "vil" / "a.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("vil", shape=(1, 10**7, 10**7, 13), dtype="u1", chunks=(1, 100, 100, 13))
    write_catalog(root, [{"file_index": 0}])
    with pytest.raises(ValueError, match=r"a\.h5:vil: reading \(10000000, 10000000, 13\) uint8 values .* 1\.2 PiB"):
        SEVIRDataset(root, seq_len=13)


def test_data_set_file_claiming_huge_items_is_refused_when_opened(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", shape=(2, *HUGE_SHAPE, 1), dtype="u1", chunks=(1, 1, 100, 100, 1))
        f.attrs["prediff_metadata"] = json.dumps({"value_range": [0, 255]})
    with pytest.raises(ValueError, match=r"data\.h5:frames: reading \(1000000, 1000000, 1000, 1\) uint8 values"):
        ArraySequenceDataset.from_file(path)


def test_enso_labels_stored_as_text_are_refused(tmp_path):
    layout = {"cmip6_models": 1, "cmip6_years": 1, "cmip5_models": 1, "cmip5_years": 1}
    coords = {"year": [1, 2], "month": np.arange(1, 37)}
    sst = np.zeros((2, 36, 24, 72), dtype=np.float32)
    lat, lon = np.arange(-55, 65, 5.0), np.arange(0, 360, 5.0)
    xr.Dataset({"sst": (("year", "month", "lat", "lon"), sst)}, coords={**coords, "lat": lat, "lon": lon}).to_netcdf(
        tmp_path / "CMIP_train.nc"
    )
    labels = np.full((2, 36), "0.5", dtype=object)
    xr.Dataset({"nino": (("year", "month"), labels)}, coords=coords).to_netcdf(tmp_path / "CMIP_label.nc")
    with pytest.raises(ValueError, match=r"CMIP_label\.nc:nino holds \S+ values; prediff reads integer or float"):
        ENSODataset(tmp_path, split="all", **layout)


# ---------------------------------------------------------------------------------------------- prediff forecast


def write_context(path: Path) -> None:
    frames = (np.random.default_rng(0).random((3, 32, 32)) * 200).astype(np.float32)
    if path.suffix == ".zarr":
        xr.Dataset({"frames": (("time", "y", "x"), frames)}).to_zarr(path, mode="w")
    else:
        np.save(path, frames)


@pytest.mark.parametrize(
    "case, message",
    [
        ("default_pysteps", r"the pysteps output \(--pysteps-out\) .*ctx\.npy is --input .*ctx\.npy"),
        ("pysteps_link", r"the pysteps output \(--pysteps-out\) .*link\.npy is --input .*ctx\.npy"),
        ("out_is_input_store", r"--out .*ctx\.zarr is --input .*ctx\.zarr"),
        ("pysteps_inside_input_store", r"the pysteps output \(--pysteps-out\) .*ctx\.zarr/x\.npy lies inside --input"),
    ],
)
def test_forecast_refuses_outputs_that_are_its_input(pipe_dir, tmp_path, capsys, case, message):
    work = tmp_path / "work"
    work.mkdir()
    context = work / ("ctx.zarr" if "store" in case else "ctx.npy")
    write_context(context)
    out = {"default_pysteps": work / "ctx.nc", "out_is_input_store": context}.get(case, work / "ens.nc")
    argv = ["forecast", "--pipeline", pipe_dir, "--input", context, "--out", out, "--overwrite"]
    if case == "pysteps_link":
        (work / "link.npy").symlink_to(context)
        argv += ["--pysteps-out", work / "link.npy"]
    elif case == "pysteps_inside_input_store":
        argv += ["--pysteps-out", context / "x.npy"]
    before = tree_state(tmp_path)
    assert run_cli(argv + ["--members", 1, "--steps", 1, "--no-plots", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("minutes", ["nan", "inf", "-inf", "0", "-10"])
def test_forecast_refuses_interval_minutes_that_are_no_duration(pipe_dir, tmp_path, capsys, minutes):
    context = tmp_path / "ctx.npy"
    write_context(context)
    argv = ["forecast", "--pipeline", pipe_dir, "--input", context, "--out", tmp_path / "ens.nc"]
    argv += [f"--interval-minutes={minutes}", "--members", 1, "--steps", 1, "--no-plots", "--no-progress"]
    before = tree_state(tmp_path)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert f"--interval-minutes must be a finite number of minutes > 0, got {float(minutes)}" in err, err
    assert tree_state(tmp_path) == before


# ---------------------------------------------------------------------------------------------- YAML configurations

#: 342 bytes that stand for 9^9 (387 million) strings through nested aliases.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "model:\n" + "".join(f"  {line}\n" for line in ALIAS_BOMB.splitlines()),
            rf"'.*bomb\.yaml': YAML aliases expand it to [\d,]+ values, more than the {MAX_YAML_VALUES:,}",
        ),
        (
            "model:\n  blocks: &b [1, *b]\n",
            r"'.*bomb\.yaml', line 2: the YAML alias \*b refers to a value that contains it",
        ),
    ],
    ids=["billion_laughs", "self_reference"],
)
def test_yaml_aliases_that_expand_without_end_are_refused(tmp_path, text, message):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        load_config("vae", path)
    assert time.perf_counter() - start < 2.0


def test_yaml_alias_bomb_in_an_override_names_the_option():
    with pytest.raises(ValueError, match=r"--model\.blocks: YAML aliases expand it to [\d,]+ values"):
        parse_override_args(["--model.blocks", ALIAS_BOMB])
    assert parse_override_args(["--model.x", "{a: &n 3, b: *n}"]) == {"model.x": {"a": 3, "b": 3}}
