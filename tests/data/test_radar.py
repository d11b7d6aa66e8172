"""Radar archives: pysteps data sources read into rain rate, block means, windows, crops, filters, NaN policies and
``prediff data radar``.

The tests write small archives themselves, in three formats that pysteps' importers read (ODIM HDF5, BoM Rainfields3
netCDF, FMI PGM), plus a stand-in importer of ``.npy`` fields for what needs exact control. When the environment
variable ``PYSTEPS_DATA`` names the folder holding pysteps' example archive (``radar/``), integration tests read
real files as well.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from prediff.cli import main
from prediff.data import RadarArchiveDataset, RadarSource, SequenceFile, block_mean, scan_radar
from tests.conftest import run_cli

pytest.importorskip("pysteps")
h5py = pytest.importorskip("h5py")
pyproj = pytest.importorskip("pyproj")

T0 = dt.datetime(2021, 6, 1, 12, 0)
STEREO = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +ellps=WGS84 +units=m +no_defs"


# ---------------------------------------------------------------------------------------------- stand-in importer


def npy_importer(filename, **kwargs):
    """A stand-in pysteps importer: a (H, W) rain-rate field in mm/h on a 1 km grid whose top-left corner is at
    (0, H km) (NaN outside the domain), with the metadata pysteps importers give."""
    precip = np.load(filename).astype(np.float64)
    height, width = precip.shape
    metadata = {
        "projection": STEREO,
        "x1": 0.0,
        "y1": 0.0,
        "x2": width * 1000.0,
        "y2": height * 1000.0,
        "xpixelsize": 1000.0,
        "ypixelsize": 1000.0,
        "cartesian_unit": "m",
        "yorigin": "upper",
        "unit": "mm/h",
        "transform": None,
        "accutime": 5.0,
        "threshold": 0.01,
        "zerovalue": 0.0,
    }
    return precip, None, metadata


def npy_archive(root: Path, fields, start=T0, step=5) -> RadarSource:
    """Write ``fields`` (one every ``step`` minutes from ``start``; None leaves the file out) and describe them."""
    for i, field in enumerate(fields):
        time = start + dt.timedelta(minutes=i * step)
        if field is None:
            continue
        folder = root / time.strftime("%Y%m%d")
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / time.strftime("frame_%Y%m%d%H%M.npy"), np.asarray(field, dtype=np.float32))
    return RadarSource("standin", str(root), "%Y%m%d", "frame_%Y%m%d%H%M", "npy", npy_importer, step)


def minutes(n: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


# ---------------------------------------------------------------------------------------------- files pysteps reads


ODIM_PROJ = "+proj=laea +lat_0=55 +lon_0=10 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
ODIM_X1, ODIM_Y1, ODIM_PIXEL = -200_000.0, -100_000.0, 2000.0


def write_odim(path: Path, rate: np.ndarray) -> None:
    """An ODIM HDF5 composite as ``pysteps.io.importers.import_odim_hdf5`` reads it: RATE as uint16 with a gain of
    0.01 mm/h, 65535 for no data (NaN in ``rate``), corners in longitude/latitude, pixel size in ``where``."""
    height, width = rate.shape
    proj = pyproj.Proj(ODIM_PROJ)
    ll_lon, ll_lat = proj(ODIM_X1, ODIM_Y1, inverse=True)
    ur_lon, ur_lat = proj(ODIM_X1 + width * ODIM_PIXEL, ODIM_Y1 + height * ODIM_PIXEL, inverse=True)
    data = np.where(np.isnan(rate), 65535, np.round(np.nan_to_num(rate) / 0.01)).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
        where = f.create_group("where")
        where.attrs.update(
            projdef=np.bytes_(ODIM_PROJ), LL_lon=ll_lon, LL_lat=ll_lat, UR_lon=ur_lon, UR_lat=ur_lat,
            xscale=ODIM_PIXEL, yscale=ODIM_PIXEL, xsize=width, ysize=height,
        )  # fmt: skip
        group = f.create_group("dataset1/data1")
        group.create_dataset("data", data=data)
        group.create_group("what").attrs.update(
            quantity=np.bytes_("RATE"), gain=0.01, offset=0.0, nodata=65535.0, undetect=0.0
        )


def odim_field(i: int, height: int = 48, width: int = 40) -> np.ndarray:
    """Rain in a band that moves one pixel per frame, 0 elsewhere, no data in the two left columns."""
    rng = np.random.default_rng(i)
    rate = np.zeros((height, width))
    rate[10:30, 5 + i : 25 + i] = np.round(rng.uniform(0.2, 20.0, (20, 20)), 2)
    rate[:, :2] = np.nan
    return rate


ODIM_CONFIG = {
    "root_path": "odim",
    "path_fmt": "%Y%m%d",
    "fn_pattern": "T_TEST_%Y%m%d%H%M%S",
    "fn_ext": "hdf",
    "importer": "odim_hdf5",
    "timestep": 5,
    "importer_kwargs": {"accutime": 5.0},
}


@pytest.fixture(scope="module")
def odim_root(tmp_path_factory) -> Path:
    """An archive folder with 8 ODIM files, 12:00-12:35 every 5 minutes, and the source's YAML description."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(8):
        time = minutes(5 * i)
        write_odim(root / "odim" / time.strftime("%Y%m%d") / time.strftime("T_TEST_%Y%m%d%H%M%S.hdf"), odim_field(i))
    import yaml

    (root / "odim.yaml").write_text(yaml.safe_dump({"name": "test-odim", **ODIM_CONFIG}))
    return root


def write_bom(path: Path, depth_mm: np.ndarray, valid: dt.datetime) -> None:
    """A BoM Rainfields3 netCDF file as ``import_bom_rf3`` reads it: a 6-minute accumulation (mm, packed int16,
    masked where no data) on an Albers grid of 0.5 km with coordinates in km."""
    netCDF4 = pytest.importorskip("netCDF4")
    height, width = depth_mm.shape
    epoch = dt.datetime(1970, 1, 1)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", width)
        ds.createDimension("y", height)
        for name, time in (("valid_time", valid), ("start_time", valid - dt.timedelta(minutes=6))):
            var = ds.createVariable(name, "i8")
            var.units = "seconds since 1970-01-01 00:00:00 UTC"
            var.assignValue(int((time - epoch).total_seconds()))
        proj = ds.createVariable("proj", "i1")
        proj.grid_mapping_name = "albers_conical_equal_area"
        proj.standard_parallel = [-18.0, -36.0]
        proj.longitude_of_central_meridian = 144.752
        proj.latitude_of_projection_origin = -37.852
        x = ds.createVariable("x", "f4", ("x",))
        x.units = "km"
        x[:] = -8.0 + 0.5 * np.arange(width)
        y = ds.createVariable("y", "f4", ("y",))
        y.units = "km"
        y[:] = 8.0 - 0.5 * np.arange(height)
        precip = ds.createVariable("precipitation", "i2", ("y", "x"), fill_value=-32768)
        precip.units = "kg m-2"
        precip.scale_factor = 0.05
        precip.add_offset = 0.0
        precip[:] = np.ma.masked_array(np.nan_to_num(depth_mm), mask=np.isnan(depth_mm))


FMI_HEADER = (
    "P5\n# projection radar {{\n# type stereographic\n# centrallongitude 25\n# centrallatitude 90\n"
    "# truelatitude 60\n# bottomleft 18.600000 57.930000\n# topright 34.903000 69.005000\n"
    "# metersperpixel_x 999.674053\n# metersperpixel_y 999.62859\n{width} {height}\n255\n"
)


def write_fmi_pgm(path: Path, levels: np.ndarray) -> None:
    """A gzipped FMI PGM composite as ``import_fmi_pgm`` reads it: 8-bit levels, dBZ = (level - 64) / 2, 255 for no
    data, the stereographic grid in header comments."""
    height, width = levels.shape
    header = FMI_HEADER.format(width=width, height=height).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + levels.astype(np.uint8).tobytes())


# ---------------------------------------------------------------------------------------------- block mean


def block_mean_loop(field: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((field.shape[0] // k, field.shape[1] // k))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = field[i * k : (i + 1) * k, j * k : (j + 1) * k]
            out[i, j] = np.nan if np.isnan(block).any() else block.sum() / block.size
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_block_mean_is_nan_where_any_pixel_is_and_matches_a_loop(k):
    rng = np.random.default_rng(k)
    field = rng.gamma(0.5, 3.0, (13, 17))
    field[rng.random(field.shape) < 0.05] = np.nan
    field[:3, :5] = np.nan
    got = block_mean(field, k)
    assert got.dtype == np.float32 and got.shape == (13 // k, 17 // k)
    np.testing.assert_allclose(got, block_mean_loop(field, k), rtol=1e-6, equal_nan=True)
    stack = block_mean(np.stack([field, 2 * field]), k)  # leading axes (time) are kept
    np.testing.assert_allclose(stack[1], 2 * got, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="does not fit"):
        block_mean(field, 14)


# ---------------------------------------------------------------------------------------------- stand-in archives


def test_interval_subsamples_the_time_step_and_refuses_what_is_no_multiple(tmp_path):
    source = npy_archive(tmp_path, [np.full((8, 8), float(i)) for i in range(9)])
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(40)), window=3, interval_minutes=10)
    assert len(dataset) == 1  # 5 frames at 10 minutes hold one window of 3 (window_stride defaults to 3)
    item = dataset[0]
    assert item["frames"].shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(item["frames"][:, 0, 0, 0].numpy(), [0.0, 2.0, 4.0])
    assert dataset.valid_times(0) == ["2021-06-01T12:00:00Z", "2021-06-01T12:10:00Z", "2021-06-01T12:20:00Z"]
    assert item["valid_time"][1] - item["valid_time"][0] == 600
    overlapping = RadarArchiveDataset(source, [("202106011200", "2021-06-01T12:40")], window=3, window_stride=1)
    assert len(overlapping) == 7
    np.testing.assert_array_equal(overlapping[6]["frames"][:, 0, 0, 0].numpy(), [6.0, 7.0, 8.0])
    with pytest.raises(ValueError, match="interval_minutes=7 is not a multiple of the 5-minute time step"):
        RadarArchiveDataset(source, (minutes(0), minutes(40)), window=3, interval_minutes=7)


def test_windows_never_span_a_missing_file_and_the_gap_is_recorded(tmp_path):
    fields = [np.full((8, 8), float(i)) for i in range(6)]
    fields[2] = None
    source = npy_archive(tmp_path, fields)
    scan = scan_radar(source, minutes(0), minutes(25))
    assert scan.present.tolist() == [True, True, False, True, True, True]
    assert np.isnan(scan.frames[2]).all()
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(25)), window=2, window_stride=1)
    assert [dataset[i]["start"] for i in range(len(dataset))] == [0, 3, 4]
    assert dataset.metadata()["events"][0]["missing"] == ["2021-06-01T12:10:00Z"]


def test_crops_and_stride_cut_the_frames_where_the_bounds_say(tmp_path):
    field = np.arange(10 * 12, dtype=np.float32).reshape(10, 12)
    source = npy_archive(tmp_path, [field, field + 1000])
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2, crop=4, stride=3)
    # rows 0, 3, 6 and columns 0, 3, 6 (a crop must fit: 6 + 4 <= 10 and <= 12; 9 + 4 > 12)
    assert len(dataset) == 9
    item = dataset[5]
    assert (item["row"], item["col"]) == (3, 6)
    np.testing.assert_array_equal(item["frames"][0, ..., 0].numpy(), field[3:7, 6:10])
    np.testing.assert_array_equal(item["frames"][1, ..., 0].numpy(), field[3:7, 6:10] + 1000)
    # The frame's top-left corner lies at (0, 10 km); upper origin: rows go south.
    np.testing.assert_allclose(dataset.sequence(5)["bounds"], [6000.0, 3000.0, 10000.0, 7000.0])
    whole = RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2)
    assert len(whole) == 1 and whole[0]["frames"].shape == (2, 10, 12, 1)
    with pytest.raises(ValueError, match="crop=11 exceeds the 10x12 frames"):
        RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2, crop=11)


def test_pixel_size_averages_blocks_and_must_be_a_multiple(tmp_path):
    rng = np.random.default_rng(0)
    fields = [rng.gamma(0.5, 2.0, (9, 12)) for _ in range(2)]
    fields[0][0, 0] = np.nan
    source = npy_archive(tmp_path, fields)
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2, pixel_size_km=3, nan_policy="keep")
    frames = dataset[0]["frames"][..., 0].numpy()
    assert frames.shape == (2, 3, 4)
    np.testing.assert_allclose(frames[0], block_mean_loop(fields[0].astype(np.float32), 3), rtol=1e-5, equal_nan=True)
    assert np.isnan(frames[0, 0, 0]) and not np.isnan(frames[1, 0, 0])
    meta = dataset.metadata()
    assert meta["pixel_size_km"] == 3.0 and meta["block"] == 3 and meta["native_pixel_size_km"] == [1.0, 1.0]
    assert meta["xpixelsize"] == 3000.0 and meta["events"][0]["domain"] == [0.0, 0.0, 12000.0, 9000.0]
    with pytest.raises(ValueError, match="pixel_size_km=1.5 is not a whole multiple of the native pixel size"):
        RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2, pixel_size_km=1.5)


def wet_filter_field() -> np.ndarray:
    """Four 4x4 quadrants: dry, 25% of pixels at 1 mm/h, 50% exactly at the 0.1 mm/h threshold, all at 0.05."""
    field = np.zeros((8, 8))
    field[0, 4:8] = 1.0
    field[4:6, 0:4] = 0.1
    field[4:8, 4:8] = 0.05
    return field


@pytest.mark.parametrize(
    ("min_wet_fraction", "kept"),
    [(0.0, [(0, 0), (0, 4), (4, 0), (4, 4)]), (0.25, [(0, 4), (4, 0)]), (0.3, [(4, 0)]), (0.6, [])],
)
def test_wet_filter_keeps_crops_with_enough_wet_pixels(tmp_path, min_wet_fraction, kept):
    source = npy_archive(tmp_path, [wet_filter_field()] * 2)
    kwargs = dict(window=2, crop=4, min_wet_fraction=min_wet_fraction, wet_threshold=0.1)
    if not kept:
        with pytest.raises(ValueError, match="no window .* passed the filters: 4 candidate crops.* 4 below"):
            RadarArchiveDataset(source, (minutes(0), minutes(5)), **kwargs)
        return
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(5)), **kwargs)
    assert [(dataset[i]["row"], dataset[i]["col"]) for i in range(len(dataset))] == kept


def nan_field() -> np.ndarray:
    """8x12: column 0 outside the domain, the right 4x4 crops entirely outside, 1 mm/h elsewhere in the top row."""
    field = np.zeros((8, 12))
    field[0:4, 0:8] = 1.0
    field[:, 0] = np.nan
    field[:, 8:] = np.nan
    return field


@pytest.mark.parametrize("policy", ["drop", "fill", "keep"])
def test_nan_policies(tmp_path, policy):
    source = npy_archive(tmp_path, [nan_field()] * 2)
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2, crop=4, nan_policy=policy)
    crops = [(dataset[i]["row"], dataset[i]["col"]) for i in range(len(dataset))]
    assert dataset.counts["empty"] == 2  # crops with no pixel inside the domain are never kept
    if policy == "drop":
        assert crops == [(0, 4), (4, 4)] and dataset.counts["with_nan"] == 2
        assert all(dataset[i]["mask"].all() for i in range(len(dataset)))
        return
    assert crops == [(0, 0), (0, 4), (4, 0), (4, 4)]
    frames, mask = dataset[0]["frames"].numpy(), dataset[0]["mask"].numpy()
    assert not mask[:, :, 0].any() and mask[:, :, 1:].all()
    if policy == "fill":
        assert (frames[:, :, 0] == 0).all()
    else:
        assert np.isnan(frames[:, :, 0]).all()
    np.testing.assert_array_equal(frames[:, :, 1:], 1.0)
    # The wet fraction counts valid pixels only: crop (0, 0) is 12/12 wet, not 12/16.
    strict = RadarArchiveDataset(
        source, (minutes(0), minutes(5)), window=2, crop=4, nan_policy=policy, min_wet_fraction=1.0
    )
    assert [(strict[i]["row"], strict[i]["col"]) for i in range(len(strict))] == [(0, 0), (0, 4)]


def test_dataset_pickles_and_checks_its_arguments(tmp_path):
    source = npy_archive(tmp_path, [np.ones((8, 8))] * 2)
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(5)), window=2, crop=4)
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy) == 4 and np.array_equal(copy[3]["frames"], dataset[3]["frames"])
    event = (minutes(0), minutes(5))
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        RadarArchiveDataset(source, event, window=2, nan_policy="zero")
    with pytest.raises(ValueError, match="min_wet_fraction must be a number in"):
        RadarArchiveDataset(source, event, window=2, min_wet_fraction=1.5)
    with pytest.raises(ValueError, match="ends at 2021-06-01T12:00:00Z, before it starts"):
        RadarArchiveDataset(source, (minutes(5), minutes(0)), window=2)
    with pytest.raises(ValueError, match="window"):
        RadarArchiveDataset(source, event, window=0)
    with pytest.raises(ValueError, match="no file between 2021-06-01T13:00:00Z and 2021-06-01T13:05:00Z"):
        RadarArchiveDataset(source, (minutes(60), minutes(65)), window=2)


# ---------------------------------------------------------------------------------------------- sources


def test_sources_from_pysteps_pystepsrc_are_rerooted(tmp_path):
    fmi = RadarSource.from_pystepsrc("fmi", root=tmp_path)
    assert fmi.root_path == str(tmp_path / "radar" / "fmi" / "pgm")
    assert (fmi.importer, fmi.timestep, fmi.fn_ext, fmi.importer_kwargs) == ("fmi_pgm", 5, "pgm.gz", {"gzipped": True})
    opera = RadarSource.from_pystepsrc("opera", root=tmp_path)
    assert opera.root_path == str(tmp_path / "radar" / "OPERA") and opera.timestep == 15
    with pytest.raises(ValueError, match="has no data source 'nope'; it has .*'bom'"):
        RadarSource.from_pystepsrc("nope", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="archive folder .*fmi.pgm does not exist"):
        fmi.find_files(minutes(0), minutes(5))


def test_source_files_name_pysteps_importers_only(tmp_path, odim_root):
    source = RadarSource.from_file(odim_root / "odim.yaml")
    assert source.name == "test-odim" and source.root_path == str(odim_root / "odim")
    assert source.importer == "odim_hdf5" and source.importer_kwargs == {"accutime": 5.0}
    (tmp_path / "code.yaml").write_text("root_path: .\nimporter: !!python/name:os.system\n")
    with pytest.raises(ValueError, match="cannot read .*code.yaml as a YAML or JSON source configuration"):
        RadarSource.from_file(tmp_path / "code.yaml")
    (tmp_path / "bad.json").write_text('{"root_path": ".", "path_fmt": "", "fn_pattern": "x", "fn_ext": "h5", '
                                       '"importer": "my_module.read", "timestep": 5}')  # fmt: skip
    bad = RadarSource.from_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown pysteps importer 'my_module.read'; known: .*'odim_hdf5'"):
        bad.load_importer()
    (tmp_path / "extra.json").write_text('{"root_path": ".", "importer": "odim_hdf5", "colour": 1}')
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
        RadarSource.from_file(tmp_path / "extra.json")


# ---------------------------------------------------------------------------------------------- pysteps importers


def test_odim_hdf5_reads_as_rain_rate_on_its_grid(odim_root):
    source = RadarSource.from_file(odim_root / "odim.yaml")
    scan = scan_radar(source, minutes(0), minutes(10))
    assert scan.frames.shape == (3, 48, 40) and scan.frames.dtype == np.float32
    np.testing.assert_allclose(scan.frames[1], odim_field(1), atol=1e-5, equal_nan=True)
    meta = scan.metadata
    assert meta["projection"] == ODIM_PROJ and meta["source_unit"] == "mm/h" and meta["accutime"] == 5.0
    np.testing.assert_allclose([meta["x1"], meta["y1"]], [ODIM_X1, ODIM_Y1], atol=1e-3)
    assert meta["native_pixel_size_km"] == [2.0, 2.0]


def test_bom_netcdf_accumulations_become_mm_per_hour(tmp_path):
    pytest.importorskip("netCDF4")
    rng = np.random.default_rng(1)
    depths = []
    for i in range(2):
        time = minutes(6 * i)
        depth = np.round(rng.uniform(0, 3, (32, 32)) / 0.05) * 0.05
        depth[:4, :4] = np.nan
        folder = tmp_path / "bom" / time.strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        write_bom(folder / time.strftime("2_%Y%m%d_%H%M00.prcp-cscn.nc"), depth, time)
        depths.append(depth)
    config = {"root_path": "bom", "path_fmt": "%Y/%m/%d", "fn_pattern": "2_%Y%m%d_%H%M00.prcp-cscn"}
    config |= {"fn_ext": "nc", "importer": "bom_rf3", "timestep": 6, "importer_kwargs": {"gzipped": True}}
    source = RadarSource.from_dict(config, name="bom", root=tmp_path)
    dataset = RadarArchiveDataset(source, (minutes(0), minutes(6)), window=2, pixel_size_km=1.0, nan_policy="keep")
    frames = dataset[0]["frames"][..., 0].numpy()
    expected = [block_mean_loop(d * 10.0, 2) for d in depths]  # mm in 6 minutes -> mm/h, 0.5 km -> 1 km
    np.testing.assert_allclose(frames, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    meta = dataset.metadata()
    assert meta["source_unit"] == "mm" and meta["accutime"] == 6 and meta["projection"].startswith("+proj=aea")
    assert meta["native_pixel_size_km"] == [0.5, 0.5] and meta["pixel_size_km"] == 1.0 and meta["block"] == 2


def test_fmi_pgm_reflectivity_becomes_rain_rate(tmp_path):
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 140, (24, 20)).astype(np.uint8)
    levels[:3] = 0
    levels[:, :2] = 255
    path = tmp_path / "fmi" / T0.strftime("%Y%m%d") / T0.strftime("%Y%m%d%H%M_fmi.radar.composite.pgm.gz")
    write_fmi_pgm(path, levels)
    source = RadarSource("fmi", str(tmp_path / "fmi"), "%Y%m%d", "%Y%m%d%H%M_fmi.radar.composite", "pgm.gz",
                         "fmi_pgm", 5, {"gzipped": True})  # fmt: skip
    scan = scan_radar(source, T0, T0)
    dbz = (levels.astype(np.float64) - 64.0) / 2.0
    expected = (10.0 ** (dbz / 10.0) / 223.0) ** (1.0 / 1.53)  # FMI's Z = 223 R^1.53
    expected[levels == 0] = 0.0  # the lowest level is "no echo"
    expected[levels == 255] = np.nan
    np.testing.assert_allclose(scan.frames[0], expected, rtol=1e-5, equal_nan=True)
    meta = scan.metadata
    assert (meta["source_unit"], meta["source_transform"], meta["zr_a"], meta["zr_b"]) == ("dBZ", "dB", 223.0, 1.53)
    assert meta["projection"].startswith("+proj=stere")
    assert meta["native_pixel_size_km"] == pytest.approx([0.999674053, 0.99962859])


# ---------------------------------------------------------------------------------------------- the command


def radar_args(root: Path, out: Path, *extra) -> list[str]:
    return ["data", "radar", "--source-config", str(root / "odim.yaml"), "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_radar_command_writes_mm_per_hour_and_records_where_and_when(tmp_path, odim_root, capsys, suffix):
    out = tmp_path / f"radar{suffix}"
    (tmp_path / "events.txt").write_text("# second event\n2021-06-01T12:25 2021-06-01T12:35\n")
    args = ["--start", "202106011200", "--end", "202106011215", "--events", str(tmp_path / "events.txt")]
    args += ["--interval-minutes", "10", "--window", "2", "--crop", "16", "--stride", "8", "--nan", "fill"]
    assert main(radar_args(odim_root, out, *args, "--min-wet-fraction", "0.2")) == 0
    assert "sequences of 2 frames of 16x16 pixels (2.0 km, every 10 min, mm/h)" in capsys.readouterr().out
    stored = SequenceFile(out)
    meta = stored.metadata
    assert (meta["source"], meta["importer"], meta["units"]) == ("test-odim", "odim_hdf5", "mm/h")
    assert meta["nan_policy"] == "fill" and "value_range" not in meta
    assert meta["pixel_size_km"] == 2.0 and meta["frame_interval_minutes"] == 10 and meta["accutime"] == 5.0
    assert meta["projection"] == ODIM_PROJ and meta["xpixelsize"] == 2000.0 and meta["source_unit"] == "mm/h"
    assert [(e["start"], e["end"]) for e in meta["events"]] == [
        ("2021-06-01T12:00:00Z", "2021-06-01T12:15:00Z"),
        ("2021-06-01T12:25:00Z", "2021-06-01T12:35:00Z"),
    ]
    assert set(stored.fields) == {"frames", "mask", "valid_time", "bounds", "crop_offset", "event"}
    events = stored.array("event")[:]
    assert set(events.tolist()) == {0, 1} and len(meta["valid_times"]) == len(stored)
    for i in range(len(stored)):
        row, col = stored.read(i, "crop_offset")
        first = meta["valid_times"][i][0]
        frame = int(first[14:16]) // 5  # the ODIM file of that minute
        expected = odim_field(frame)[row : row + 16, col : col + 16]
        frames, mask = stored.read(i)[0, ..., 0], stored.read(i, "mask")[0, ..., 0]
        np.testing.assert_allclose(frames, np.nan_to_num(expected), atol=1e-5)
        np.testing.assert_array_equal(mask, ~np.isnan(expected))
        assert meta["valid_times"][i][1] == first[:14] + f"{int(first[14:16]) + 10:02d}:00Z"
        assert stored.read(i, "valid_time")[0] == int(dt.datetime.fromisoformat(first).timestamp())
        x1, y1, x2, y2 = stored.read(i, "bounds")
        assert x2 - x1 == pytest.approx(16 * 2000.0) and y2 - y1 == pytest.approx(16 * 2000.0)
        assert x1 == pytest.approx(ODIM_X1 + col * 2000.0, abs=1e-3)
        assert y2 == pytest.approx(ODIM_Y1 + 48 * 2000.0 - row * 2000.0, abs=1e-3)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_radar_command_errors_are_one_line(tmp_path, odim_root, capsys):
    out = tmp_path / "r.h5"
    event = ["--start", "202106011200", "--end", "202106011215"]
    cases = [
        (["data", "radar", "--source", "fmi", *event, "--out", str(out)], "--source fmi needs --root"),
        (["data", "radar", "--source", "fmi", "--root", str(tmp_path / "none"), *event, "--out", str(out)],
         "archive root .*none does not exist"),
        (["data", "radar", "--source", "fmi", "--root", str(tmp_path), *event, "--out", str(out)],
         "archive folder .*radar/fmi/pgm does not exist"),
        (radar_args(odim_root, out, "--start", "202106020000", "--end", "202106020100"),
         "no file between 2021-06-02T00:00:00Z and 2021-06-02T01:00:00Z"),
        (radar_args(odim_root, out, *event, "--interval-minutes", "7"),
         "interval_minutes=7 is not a multiple of the 5-minute time step"),
        (radar_args(odim_root, out, *event, "--start", "202106011230"), "one --end per --start"),
        (radar_args(odim_root, out), "give the events to read"),
        (radar_args(odim_root, out, *event, "--crop", "64"), "crop=64 exceeds the 48x40 frames"),
        (radar_args(odim_root, out, "--start", "yesterday", "--end", "202106011215"), "cannot read the time"),
    ]  # fmt: skip
    import re

    for argv, message in cases:
        assert main(argv) == 2, argv
        err = one_line_error(capsys)
        assert re.search(message, err), (message, err)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- the real archive

PYSTEPS_DATA = os.environ.get("PYSTEPS_DATA")
needs_archive = pytest.mark.skipif(not PYSTEPS_DATA, reason="PYSTEPS_DATA does not name pysteps' example archive")

#: pystepsrc source, first frame, native pixel size (km), minutes between files, frame size.
REAL_SOURCES = [
    ("fmi", "201609281500", 1.0, 5, (1226, 760)),
    ("knmi", "201008260100", 1.0, 5, (765, 700)),
    ("bom", "201806161200", 0.5, 6, (512, 512)),
    ("opera", "201808242000", 2.0, 15, (2200, 1900)),
]


@needs_archive
@pytest.mark.parametrize(("name", "start", "pixel_km", "timestep", "shape"), REAL_SOURCES)
def test_real_archive_sources_read(name, start, pixel_km, timestep, shape):
    source = RadarSource.from_pystepsrc(name, root=PYSTEPS_DATA)
    assert source.timestep == timestep
    end = dt.datetime.strptime(start, "%Y%m%d%H%M") + dt.timedelta(minutes=timestep)
    scan = scan_radar(source, start, end)
    assert scan.present.all() and scan.frames.shape == (2, *shape)
    assert scan.metadata["native_pixel_size_km"][0] == pytest.approx(pixel_km, rel=1e-3)
    assert scan.metadata["projection"].startswith("+proj=")
    valid = scan.frames[~np.isnan(scan.frames)]
    assert valid.size > 0 and valid.min() >= 0.0 and valid.max() > 0.1


BOM_10_MINUTES = Path(__file__).resolve().parents[2] / "examples" / "radar_sources" / "bom-c10.yaml"


def test_bom_10_minute_source_file_is_a_source(tmp_path):
    source = RadarSource.from_file(BOM_10_MINUTES, root=tmp_path)
    assert source.name == "bom-c10" and source.importer_name == "bom_rf3" and source.timestep == 10
    assert Path(source.root_path) == tmp_path / "radar" / "bom"


@needs_archive
def test_real_archive_bom_10_minute_product_reads():
    source = RadarSource.from_file(BOM_10_MINUTES, root=PYSTEPS_DATA)
    scan = scan_radar(source, "202010311300", "202010311310")
    assert scan.present.all() and scan.frames.shape == (2, 512, 512)
    assert scan.metadata["native_pixel_size_km"][0] == pytest.approx(0.5, rel=1e-3)
    assert np.nanmax(scan.frames) > 0.1


@needs_archive
def test_real_archive_meteoswiss_is_readable():
    """MeteoSwiss is the held-out test set: only its grid is looked at here, never its values."""
    source = RadarSource.from_pystepsrc("mch", root=PYSTEPS_DATA)
    scan = scan_radar(source, "201505151545", "201505151545")
    assert scan.present.all() and scan.frames.shape == (1, 640, 710)
    assert scan.metadata["native_pixel_size_km"] == [1.0, 1.0] and scan.metadata["source_unit"] == "mm"


def test_merge_keeps_every_sequence_and_refuses_files_that_disagree(tmp_path, capsys):
    from prediff.data import write_sequences

    rng = np.random.default_rng(0)
    parts = [rng.random((n, 2, 8, 8, 1)).astype(np.float32) for n in (3, 2)]
    grid = {"units": "mm/h", "pixel_size_km": 2.0, "frame_interval_minutes": 10.0}
    for i, part in enumerate(parts):
        write_sequences(tmp_path / f"{i}.h5", ({"frames": f, "event": np.int64(i)} for f in part), len(part),
                        part.shape[1:], np.float32, metadata={**grid, "source": f"s{i}"},
                        fields={"event": ((), np.int64)}, progress=False)  # fmt: skip
    assert run_cli(["data", "merge", tmp_path / "0.h5", tmp_path / "1.h5", "--out", tmp_path / "all.h5"]) == 0
    merged = SequenceFile(tmp_path / "all.h5")
    np.testing.assert_array_equal(np.asarray(merged.array("frames")), np.concatenate(parts))
    np.testing.assert_array_equal(np.asarray(merged.array("event")), [0, 0, 0, 1, 1])
    assert {k: merged.metadata[k] for k in grid} == grid
    assert [m["source"] for m in merged.metadata["merged_from"]] == ["s0", "s1"]

    write_sequences(tmp_path / "5min.h5", parts[1], len(parts[1]), parts[1].shape[1:], np.float32,
                    metadata={**grid, "frame_interval_minutes": 5.0}, progress=False)  # fmt: skip
    capsys.readouterr()
    assert run_cli(["data", "merge", tmp_path / "0.h5", tmp_path / "5min.h5", "--out", tmp_path / "bad.h5"]) == 2
    assert "holds arrays" in capsys.readouterr().err  # no 'event' array
    write_sequences(tmp_path / "5min.h5", ({"frames": f, "event": np.int64(2)} for f in parts[1]), len(parts[1]),
                    parts[1].shape[1:], np.float32, metadata={**grid, "frame_interval_minutes": 5.0},
                    fields={"event": ((), np.int64)}, overwrite=True, progress=False)  # fmt: skip
    capsys.readouterr()
    assert run_cli(["data", "merge", tmp_path / "0.h5", tmp_path / "5min.h5", "--out", tmp_path / "bad.h5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "records frame_interval_minutes=5.0" in err and "\n" not in err
    assert not (tmp_path / "bad.h5").exists()
