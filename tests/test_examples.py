"""Every script in examples/ runs, with tiny settings, and does what it says."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from prediff import PreDiffPipeline, SyntheticStormDataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> dict:
    """The example's module namespace (not run as __main__, so nothing runs on loading)."""
    return runpy.run_path(str(EXAMPLES / name), run_name=f"example_{Path(name).stem}")


def test_every_example_is_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == [
        "custom_knowledge_control.py",
        "forecast_own_data.py",
        "forecast_with_knowledge_control.py",
        "train_sevirlr.py",
    ]


def test_forecast_with_knowledge_control(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    main = load_example("forecast_with_knowledge_control.py")["main"]
    out = tmp_path / "what_if.png"
    achieved = main(["--tiny", "--out", str(out)])
    assert list(achieved) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    # Higher anticipated intensities give more intense forecasts.
    assert achieved[4.0] > achieved[0.0] > achieved[-4.0]
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    assert "no control" in capsys.readouterr().out


def test_custom_knowledge_control():
    namespace = load_example("custom_knowledge_control.py")
    without, with_cap = namespace["main"](["--tiny"])
    assert with_cap < without
    with pytest.raises(ValueError, match="cap"):
        namespace["RegionCapControl"](slice(0, 8), slice(0, 8), cap=-1.0)


def _write_radar(path: Path, size: tuple[int, int] = (72, 80), scale: float = 255.0) -> np.ndarray:
    """A (time, y, x) VIL file from synthetic storms, larger than the pipeline's frames (it gets cropped)."""
    xr = pytest.importorskip("xarray")
    vil = SyntheticStormDataset(1, 6, *size, seed=3, progress=False).generate(0)[..., 0].astype(np.float32)
    vil = vil * (scale / 255.0)
    times = np.datetime64("2024-07-01T12:00") + np.arange(6) * np.timedelta64(10, "m")
    da = xr.DataArray(
        vil,
        dims=("time", "y", "x"),
        coords={"time": times, "y": np.arange(size[0]) * 1000.0, "x": np.arange(size[1]) * 1000.0},
        attrs={"units": "VIL level"},
        name="vil",
    )
    if path.suffix == ".zarr":
        da.to_dataset().to_zarr(path)
    else:
        da.to_dataset().to_netcdf(path)
    return vil


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_forecast_own_data(tmp_path, suffix):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("zarr" if suffix == ".zarr" else "netCDF4")
    main = load_example("forecast_own_data.py")["main"]
    source = tmp_path / f"radar{suffix}"
    vil = _write_radar(source)
    out = tmp_path / f"forecast{suffix}"
    assert main([str(source), "--out", str(out), "--tiny"]) == out
    opened = xr.open_zarr(out) if suffix == ".zarr" else xr.open_dataset(out)
    forecast = opened["vil"]
    assert forecast.dims == ("member", "time", "y", "x") and forecast.shape == (2, 4, 64, 64)
    # The crop is centred, the times continue at the input's 10-minute step.
    np.testing.assert_array_equal(forecast["y"].values, np.arange(4, 68) * 1000.0)
    np.testing.assert_array_equal(forecast["x"].values, np.arange(8, 72) * 1000.0)
    step = np.timedelta64(10, "m")
    assert forecast["time"].values[0] == np.datetime64("2024-07-01T12:50") + step
    assert list(forecast.attrs["value_range"]) == [0.0, 255.0] and "VIL" in forecast.attrs["units"]
    assert np.isfinite(forecast.values).all() and abs(float(forecast.mean()) - vil.mean()) < 60
    opened.close()
    # Never overwritten without --overwrite; replaced with it.
    with pytest.raises(FileExistsError, match="--overwrite"):
        main([str(source), "--out", str(out), "--tiny"])
    assert main([str(source), "--out", str(out), "--tiny", "--overwrite", "--seed", "5"]) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, out.name])


def test_forecast_own_data_bad_input(tmp_path):
    pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    main = load_example("forecast_own_data.py")["main"]
    source = tmp_path / "radar.zarr"
    _write_radar(source, scale=400.0)
    out = tmp_path / "forecast.zarr"
    with pytest.raises(ValueError, match=r"value range \[0, 255\]"):
        main([str(source), "--out", str(out), "--tiny"])
    with pytest.raises(ValueError, match="variable must be one of"):
        main([str(source), "--variable", "rain", "--out", str(out), "--tiny"])
    small = tmp_path / "small.zarr"
    _write_radar(small, size=(32, 32))
    with pytest.raises(ValueError, match="at least 64x64"):
        main([str(small), "--out", str(out), "--tiny"])
    with pytest.raises(FileNotFoundError):
        main([str(tmp_path / "missing.zarr"), "--out", str(out), "--tiny"])
    assert not out.exists()


def _write_sevir_lr(root: Path) -> None:
    """A miniature SEVIR-LR tree in the published layout: CATALOG.csv + one HDF5 file of (N, H, W, 25) VIL."""
    h5py = pytest.importorskip("h5py")
    pd = pytest.importorskip("pandas")
    name = "vil/2018/SEVIR_VIL_STORMEVENTS_2018_0101_0630.h5"
    (root / "data" / name).parent.mkdir(parents=True)
    storms = SyntheticStormDataset(3, 25, 32, 32, seed=5, progress=False)
    vil = np.stack([storms.generate(i)[..., 0].transpose(1, 2, 0) for i in range(3)])  # (N, H, W, T)
    ids = ["S0001", "S0002", "S0003"]
    with h5py.File(root / "data" / name, "w") as f:
        f.create_dataset("id", data=np.array([i.encode() for i in ids]))
        f.create_dataset("vil", data=vil)
    catalog = pd.DataFrame(
        {
            "id": ids,
            "file_name": [name] * 3,
            "file_index": [0, 1, 2],
            "img_type": ["vil"] * 3,
            "time_utc": ["2018-05-01 10:00:00", "2018-05-02 10:00:00", "2018-05-03 10:00:00"],
            "pct_missing": [0.0] * 3,
        }
    )
    catalog.to_csv(root / "CATALOG.csv", index=False)


def test_train_sevirlr(tmp_path):
    pytest.importorskip("yaml")
    root = tmp_path / "sevir_lr"
    _write_sevir_lr(root)
    main = load_example("train_sevirlr.py")["main"]
    result = main(["--sevir-lr-root", str(root), "--output-dir", str(tmp_path / "runs"), "--tiny"])
    assert result == tmp_path / "runs" / "denoiser"
    pipe = PreDiffPipeline.from_pretrained(result)
    assert pipe.knowledge_model is not None
    assert pipe.context_shape == (7, 32, 32, 1) and pipe.forecast_shape == (6, 32, 32, 1)
    context = torch.rand(1, 7, 32, 32, 1) * 255
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(context, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 1, 6, 32, 32, 1) and np.isfinite(frames).all()
    # The recipes themselves are untouched: only the overrides made them tiny.
    assert "prediff-sevirlr" in (EXAMPLES / "configs" / "sevirlr" / "denoiser.yaml").read_text()


def test_train_sevirlr_missing_root(tmp_path):
    pytest.importorskip("yaml")
    main = load_example("train_sevirlr.py")["main"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--sevir-lr-root", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "runs"), "--tiny"])
