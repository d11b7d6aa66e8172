"""`prediff forecast`: context files in; netCDF / zarr ensembles, the pysteps array, pictures out; errors."""

from __future__ import annotations

import json
import shutil
import stat

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

xr = pytest.importorskip("xarray")
pytest.importorskip("netCDF4")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from prediff.pipelines.context_io import read_context  # noqa: E402
from prediff.pipelines.loading import load_forecast_pipeline  # noqa: E402
from prediff.pipelines.processes import member_generators  # noqa: E402
from prediff.pretrained.intensity import intensity_target  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def context_frames(shape=(3, 32, 32), seed=0, high=200.0):
    return (np.random.default_rng(seed).random(shape) * high).astype(np.float32)


def test_npy_to_netcdf_with_pictures(pipe, pipe_dir, tmp_path):
    ctx = context_frames()
    np.save(tmp_path / "ctx.npy", ctx)
    out = tmp_path / "ens.nc"
    argv = ["forecast", "--pipeline", pipe_dir, "--input", tmp_path / "ctx.npy", "--out", out]
    assert run_cli(argv + ["--members", 2, "--steps", 2, "--seed", 0, "--no-progress"]) == 0

    with xr.open_dataset(out) as ds:
        forecast = ds["forecast"]
        assert forecast.dims == ("member", "time", "y", "x")
        assert forecast.shape == (2, 2, 32, 32)
        assert ds["context"].dims == ("context_time", "y", "x")
        np.testing.assert_array_equal(ds["context"].values, ctx)
        assert ds["time"].values.tolist() == [1, 2] and ds["context_time"].values.tolist() == [-2, -1, 0]
        attrs = ds.attrs
        assert list(attrs["value_range"]) == [0.0, 255.0] and "(x - 0) / (255 - 0)" in attrs["scaling"]
        assert list(attrs["lead_times"]) == [1, 2] and attrs["lead_time_units"] == "frames"
        assert attrs["model_id"] == str(pipe_dir) and attrs["pipeline_class"] == "PreDiffPipeline"
        assert attrs["seed"] == 0 and attrs["members"] == 2 and attrs["num_inference_steps"] == 2
        assert attrs["knowledge_control"] == "none" and attrs["units"]
        values = forecast.values
    # The file holds the pipeline's forecast: the same seeds give the same ensemble.
    expected = pipe(
        ctx[None, ..., None],
        num_inference_steps=2,
        num_ensemble_members=2,
        generator=member_generators(0, [0], 2),
    ).frames
    np.testing.assert_allclose(values, expected[0, ..., 0], rtol=1e-5, atol=1e-3)
    # pysteps layout (members, time, y, x).
    steps_layout = np.load(tmp_path / "ens.npy", allow_pickle=False)
    assert steps_layout.shape == (2, 2, 32, 32)
    np.testing.assert_array_equal(steps_layout, values)
    with Image.open(tmp_path / "ens_panel.png") as image:
        assert image.format == "PNG" and image.size[0] > 200
    with Image.open(tmp_path / "ens.gif") as image:
        assert image.format == "GIF" and image.n_frames == 5  # 3 context + 2 forecast frames
    # Outputs appear only once complete: no temporary files remain.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ctx.npy", "ens.nc", "ens.npy", "ens_panel.png", "ens.gif"]
    )

    # An existing output is never replaced without --overwrite, and nothing is written.
    before = out.read_bytes()
    assert run_cli(argv + ["--members", 2, "--steps", 1, "--no-progress"]) == 2
    assert out.read_bytes() == before
    # With --overwrite it is; another seed gives another ensemble.
    extra = ["--members", 2, "--steps", 2, "--seed", 1, "--no-plots", "--no-pysteps", "--overwrite"]
    assert run_cli(argv + extra + ["--no-progress"]) == 0
    with xr.open_dataset(out) as ds:
        assert ds.attrs["seed"] == 1 and not np.allclose(ds["forecast"].values, values)


def test_netcdf_with_times_to_zarr(pipe_dir, tmp_path, umask_027):
    # Two events as (lon, event, time, lat): dims are recognised by name and reordered.
    frames = context_frames((2, 3, 32, 32))
    times = np.array(["2024-05-01T12:00", "2024-05-01T12:10", "2024-05-01T12:20"], dtype="datetime64[ns]")
    lat, lon = np.linspace(30, 40, 32), np.linspace(-100, -90, 32)
    data = xr.Dataset(
        {"vil": (("event", "time", "lat", "lon"), frames, {"units": "VIL level"})},
        coords={"time": times, "lat": lat, "lon": lon},
    ).transpose("lon", "event", "time", "lat")
    data.to_netcdf(tmp_path / "ctx.nc")
    out = tmp_path / "ens.zarr"
    argv = ["forecast", "--pipeline", pipe_dir, "--input", tmp_path / "ctx.nc", "--out", out]
    assert run_cli(argv + ["--members", 2, "--steps", 1, "--no-plots", "--no-progress"]) == 0
    # What mkdir() / open() make under umask 027, not the owner-only modes of temporary files.
    assert stat.S_IMODE(out.stat().st_mode) == 0o750 and stat.S_IMODE((tmp_path / "ens.npy").stat().st_mode) == 0o640
    ds = xr.open_zarr(out)
    assert ds["forecast"].dims == ("sample", "member", "time", "y", "x")
    assert ds["forecast"].shape == (2, 2, 2, 32, 32)
    np.testing.assert_array_equal(ds["context"].values, frames)
    np.testing.assert_array_equal(ds["y"].values, lat)
    expected_valid = times[-1] + np.array([10, 20], dtype="timedelta64[m]")
    np.testing.assert_array_equal(ds["valid_time"].values, expected_valid)
    assert ds["lead_time_minutes"].values.tolist() == [10.0, 20.0]
    assert np.load(tmp_path / "ens.npy").shape == (2, 2, 2, 32, 32)  # (sample, members, time, y, x)


def test_hdf5_input_with_intensity_control(pipe_dir, tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "ctx.h5", "w") as f:
        f["radar/vil"] = context_frames((1, 3, 32, 32, 1))
        f["other"] = np.zeros(3)
    out = tmp_path / "ens.nc"
    argv = ["forecast", "--pipeline", pipe_dir, "--input", tmp_path / "ctx.h5", "--variable", "radar/vil"]
    argv += ["--out", out, "--members", 2, "--steps", 1, "--no-plots", "--no-progress"]
    argv += ["--knowledge-control", "intensity", "--target", 40, "--control-scale", 10]
    assert run_cli(argv) == 0
    with xr.open_dataset(out) as ds:
        assert ds["forecast"].dims == ("member", "time", "y", "x")
        assert "anticipated mean intensity 40" in ds.attrs["knowledge_control"]
        assert "scale 10" in ds.attrs["knowledge_control"]
        assert ds.attrs["context_variable"] == "radar/vil"


@pytest.mark.parametrize("radius_km", [None, 8.0])
def test_intensity_cap_is_recorded_and_can_be_lifted(pipe_dir, tmp_path, radius_km):
    capped_dir = tmp_path / "capped"
    shutil.copytree(pipe_dir, capped_dir)
    index = json.loads((capped_dir / "model_index.json").read_text())
    cap_settings = {"max_intensity_growth": 1.0, "pixel_size_km": 2.0, "intensity_cap_radius_km": radius_km}
    (capped_dir / "model_index.json").write_text(json.dumps({**index, **cap_settings}))
    ctx = context_frames(high=40.0)
    ctx[-1, :, 16:] *= 0.25  # a weaker right half: a local cap differs from the frame's
    np.save(tmp_path / "ctx.npy", ctx)
    argv = ["forecast", "--pipeline", capped_dir, "--input", tmp_path / "ctx.npy", "--members", 2, "--steps", 2,
            "--no-plots", "--no-pysteps", "--no-progress"]  # fmt: skip
    assert run_cli(argv + ["--out", tmp_path / "capped.nc"]) == 0
    assert run_cli(argv + ["--out", tmp_path / "free.nc", "--no-intensity-cap"]) == 0
    # 8 km is 4 pixels of 2 km: the maximum over a square of 9 x 9 pixels.
    cap = ctx[-1].max() if radius_km is None else maximum_filter(ctx[-1], size=9, mode="nearest")
    with xr.open_dataset(tmp_path / "capped.nc") as capped, xr.open_dataset(tmp_path / "free.nc") as free:
        assert free["forecast"].values.max() > np.max(cap), "the test needs a forecast above the cap"
        np.testing.assert_allclose(capped["forecast"].values, np.minimum(free["forecast"].values, cap), rtol=1e-6)
        assert capped.attrs["max_intensity_growth"] == "1.0" and free.attrs["max_intensity_growth"] == "None"
        assert capped.attrs["intensity_cap_radius_km"] == str(radius_km)
        assert free.attrs["intensity_cap_radius_km"] == "None"


def test_read_context_layouts(tmp_path):
    frames = context_frames((4, 8, 6))
    # (y, time, x) with unhelpful names: --dims tells which is which.
    xr.Dataset({"field": (("a", "b", "c"), frames.transpose(1, 0, 2))}).to_netcdf(tmp_path / "f.nc")
    got = read_context(tmp_path / "f.nc", dims=("b", "a", "c"))
    assert got.frames.shape == (1, 4, 8, 6, 1)
    np.testing.assert_array_equal(got.frames[0, ..., 0], frames)
    with pytest.raises(ValueError, match="no time dimension"):
        read_context(tmp_path / "f.nc")
    # A channel dimension and a plain zarr array written by prediff's data tools.
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    create = getattr(group, "create_array", None) or group.create_dataset
    array = create("frames", shape=(2, 4, 8, 6, 3), dtype="uint8")
    array[...] = np.arange(2 * 4 * 8 * 6 * 3).reshape(2, 4, 8, 6, 3) % 251
    got = read_context(tmp_path / "d.zarr")
    assert got.frames.shape == (2, 4, 8, 6, 3) and got.frames.dtype == np.float32
    np.testing.assert_array_equal(got.frames, array[...])


def test_read_context_chooses_the_array_of_a_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    zarr = pytest.importorskip("zarr")
    frames = context_frames((3, 8, 8))
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["radar/a"], f["radar/b"] = frames, frames + 1
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    create = getattr(group, "create_array", None) or group.create_dataset
    for name, values in (("a", frames), ("b", frames + 1)):
        create(name, shape=values.shape, dtype="f4")[...] = values
    for path, kind, second in ((tmp_path / "two.h5", "dataset", "radar/b"), (tmp_path / "two.zarr", "array", "b")):
        with pytest.raises(ValueError, match=rf"holds 2 {kind}s .*; choose one with --variable"):
            read_context(path)
        with pytest.raises(ValueError, match=rf"has no {kind} 'c'"):
            read_context(path, key="c")
        np.testing.assert_array_equal(read_context(path, key=second).frames[0, ..., 0], frames + 1)


def test_intensity_target_from_the_pipeline_folder(pipe_dir, tmp_path):
    folder = tmp_path / "with_stats"
    shutil.copytree(pipe_dir, folder)
    pipe = load_forecast_pipeline(folder)
    with pytest.raises(ValueError, match="--intensity-mean"):
        intensity_target(pipe, n_sigma=2.0)
    (folder / "future_intensity.json").write_text(json.dumps({"mean": 30.0, "std": 5.0}))
    target, source = intensity_target(pipe, n_sigma=2.0)
    assert target == 40.0 and "future_intensity.json" in source
    assert intensity_target(pipe, n_sigma=-1.0, mean=10.0, std=2.0)[0] == 8.0
    assert intensity_target(pipe, target=12.5)[0] == 12.5


@pytest.fixture(scope="module")
def broken_pipelines(pipe_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    no_weights = root / "no_weights"
    shutil.copytree(pipe_dir, no_weights)
    for path in (no_weights / "unet").glob("*.safetensors"):
        path.unlink()
    no_vae = root / "no_vae"
    shutil.copytree(pipe_dir, no_vae)
    shutil.rmtree(no_vae / "vae")
    no_index = root / "no_index"
    shutil.copytree(pipe_dir, no_index)
    (no_index / "model_index.json").unlink()
    return {"no_weights": no_weights, "no_vae": no_vae, "no_index": no_index}


@pytest.mark.parametrize(
    "case, message",
    [
        ("long", "needs 3 context frames, the input .* has 4 .*--use-last-frames"),
        ("short", "needs 3 context frames, the input .* has 2"),
        ("size", r"\(H, W, C\) = \(32, 32, 1\)"),
        ("ndim", r"must have shape \(T, H, W\), \(T, H, W, C\) or \(B, T, H, W, C\)"),
        ("range", r"outside the pipeline's value_range \[0, 255\].*--clip"),
        ("nan", "is NaN everywhere in sample\\(s\\) \\[0\\]: NaN marks pixels outside the radar domain"),
        ("garbage", r"ctx\.npy is not a NumPy \.npy file"),
        ("pickled", r"cannot read .*ctx\.npy as a NumPy \.npy array \(pickled object arrays are refused\)"),
        ("garbage_h5", r"cannot read .*ctx\.h5 as HDF5"),
        ("garbage_nc", r"cannot read .*ctx\.nc as netCDF"),
        ("suffix", "context file must end in one of"),
        ("missing", "does not exist"),
        ("no_weights", r"incomplete: missing unet/\*.safetensors"),
        ("no_vae", "incomplete: missing vae/config.json"),
        ("no_index", "no model_index.json"),
        ("stray_option", "--target only apply with --knowledge-control"),
        ("out_suffix", r"--out must end in one of"),
    ],
)
def test_bad_input(case, message, pipe_dir, broken_pipelines, tmp_path, capsys):
    arrays = {
        "long": context_frames((4, 32, 32)),
        "short": context_frames((2, 32, 32)),
        "size": context_frames((3, 16, 16)),
        "ndim": context_frames((32, 32)),
        "range": context_frames(high=1000.0),
        "nan": np.full((3, 32, 32), np.nan, dtype=np.float32),
    }
    path = tmp_path / "ctx.npy"
    np.save(path, arrays.get(case, context_frames()))
    if case == "garbage":
        path.write_bytes(b"not a numpy file")
    elif case == "pickled":
        np.save(path, np.array([{"frames": 1}], dtype=object), allow_pickle=True)
    elif case.startswith("garbage_"):
        path = tmp_path / f"ctx.{case[len('garbage_') :]}"
        path.write_text("text, not the format")
    elif case == "suffix":
        path = tmp_path / "ctx.txt"
        path.write_text("1 2 3")
    elif case == "missing":
        path = tmp_path / "absent.npy"
    pipeline = broken_pipelines.get(case, pipe_dir)
    out = tmp_path / ("ens.csv" if case == "out_suffix" else "ens.nc")
    argv = ["forecast", "--pipeline", pipeline, "--input", path, "--out", out, "--members", 1, "--steps", 1]
    if case == "stray_option":
        argv += ["--target", 3]
    assert run_cli(argv + ["--no-progress", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prediff forecast: error:")
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_many_inputs_are_checked_before_any_forecast(pipe_dir, tmp_path, capsys):
    options = ["--pipeline", pipe_dir, "--members", 1, "--steps", 1, "--no-plots", "--no-progress"]
    (tmp_path / "empty").mkdir()
    assert run_cli(["forecast", "--input", tmp_path / "empty", "--out", tmp_path / "out", *options]) == 2
    assert "the folder" in capsys.readouterr().err
    context = np.full((1, 3, 32, 32, 1), 10.0, dtype=np.float32)
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "a.npy", context)
    assert run_cli(["forecast", "--input", tmp_path / "*" / "a.npy", "--out", tmp_path / "out", *options]) == 2
    assert "would both be forecast into" in capsys.readouterr().err
    argv = ["forecast", "--input", tmp_path / "x", "--out", tmp_path / "out", "--pysteps-out", tmp_path / "p.npy"]
    assert run_cli(argv + options) == 2
    assert "--pysteps-out names one file" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    np.save(tmp_path / "out" / "a.npy", context)
    assert run_cli(["forecast", "--input", tmp_path / "x", "--out", tmp_path / "out", *options]) == 2
    assert "a.npy (and 0 more) already exist(s)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.nc").exists()
    assert run_cli(["forecast", "--input", tmp_path / "x", "--out", tmp_path / "out", "--overwrite", *options]) == 0
    assert (tmp_path / "out" / "a.nc").is_file() and np.load(tmp_path / "out" / "a.npy").shape == (1, 2, 32, 32)
