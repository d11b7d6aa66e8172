"""What `prediff app` computes, without the page: pipelines by name, contexts from storms, uploads and radar files
(checked as `prediff forecast` checks them), forecasts with knowledge control, pictures, scores and the netCDF."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from prediff.app import forecast as app
from prediff.pipelines.loading import load_forecast_pipeline
from prediff.pretrained import SHIPPED_PIPELINES, shipped_pipeline_path

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def pipe():
    return load_forecast_pipeline("prediff-storms-tiny")


@pytest.fixture(scope="module")
def storm(pipe):
    return app.storm_context(pipe, 2024)


@pytest.fixture(scope="module")
def steered(pipe, storm):
    """2 members, 3 steps, the what-if targets mu and mu + 2 sigma with the analytic control."""
    context, observed = storm
    calls = []
    result = app.run_app_forecast(
        pipe, context, members=2, steps=3, seed=1, control_method="analytic", n_sigmas=[0.0, 2.0],
        observed=observed, progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    return result, calls


def test_pipelines_are_the_shipped_names_and_the_folders_given(tmp_path):
    choices = app.pipeline_choices([shipped_pipeline_path("prediff-storms-tiny")])
    assert list(choices)[: len(SHIPPED_PIPELINES)] == list(SHIPPED_PIPELINES)
    # A folder named like a shipped pipeline is told apart by its parent folder.
    assert choices["pretrained/prediff-storms-tiny"] == str(shipped_pipeline_path("prediff-storms-tiny"))
    with pytest.raises(FileNotFoundError, match="not a folder holding a saved pipeline"):
        app.pipeline_choices([tmp_path])


def test_storm_context_is_held_out_and_in_physical_units(pipe, storm):
    context, observed = storm
    assert context.frames.shape == (1, *pipe.context_shape) and observed.shape == pipe.forecast_shape
    assert 0 <= context.frames.min() and context.frames.max() <= 255 and context.frames.max() > 16
    other, _ = app.storm_context(pipe, 2025)
    assert not np.array_equal(other.frames, context.frames)


def test_uploads_are_read_and_checked_as_the_command_line_does(pipe, storm, tmp_path):
    context, _ = storm
    longer = np.concatenate([context.frames[0, :1], context.frames[0]])  # (T_in + 1, H, W, C): the last T_in kept
    np.save(tmp_path / "ctx.npy", longer)
    read = app.uploaded_context(tmp_path / "ctx.npy", pipe)
    np.testing.assert_array_equal(read.frames, context.frames)
    assert read.source == Path("ctx.npy")  # the user's name, not the server's copy
    np.save(tmp_path / "vil01.npy", longer / 255)
    np.save(tmp_path / "small.npy", longer[:, :32, :32])
    with pytest.raises(ValueError, match=r"the pipeline needs context frames of \(H, W, C\) = \(64, 64, 1\)"):
        app.uploaded_context(tmp_path / "small.npy", pipe)
    np.save(tmp_path / "wide.npy", longer * 2)
    with pytest.raises(ValueError, match="outside the pipeline's value_range"):
        app.uploaded_context(tmp_path / "wide.npy", pipe)
    with pytest.raises(ValueError, match="more than the page accepts"):
        app.uploaded_context(tmp_path / "ctx.npy", pipe, max_mb=0.01)


def test_a_zarr_store_uploads_as_a_zip_and_a_zip_cannot_write_outside(pipe, storm, tmp_path):
    zarr = pytest.importorskip("zarr")
    context, _ = storm
    store = tmp_path / "ctx.zarr"
    zarr.save_array(str(store), context.frames[0])
    with zipfile.ZipFile(tmp_path / "ctx.zip", "w") as archive:
        for file in store.rglob("*"):
            archive.write(file, file.relative_to(tmp_path))
    np.testing.assert_array_equal(app.uploaded_context(tmp_path / "ctx.zip", pipe).frames, context.frames)
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../evil.txt", "x")
    with pytest.raises(ValueError, match="a path outside the archive"):
        app.uploaded_context(tmp_path / "evil.zip", pipe)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_radar_files_are_read_through_pysteps(tmp_path):
    pytest.importorskip("pysteps")
    from tests.data.test_radar import odim_field, write_odim

    for i in range(5):
        write_odim(tmp_path / f"T_{i:02d}.hdf", odim_field(i))
    stand_in = SimpleNamespace(  # what the reading needs of a rain-rate pipeline of 32x32 tiles on 2 km
        config={"units": "mm/h"}, context_shape=(4, 32, 32, 1), pixel_size_km=2.0, frame_interval_minutes=None,
        physical_range=(0.0, 316.0),
    )  # fmt: skip
    files = sorted(tmp_path.glob("*.hdf"), reverse=True)
    context = app.radar_context(files, "odim_hdf5", stand_in, importer_kwargs={"accutime": 5.0})
    assert context.frames.shape == (1, 4, 48, 40, 1)
    expected = np.stack([odim_field(i) for i in range(1, 5)]).astype(np.float32)  # the last 4, in name order
    np.testing.assert_allclose(context.frames[0, ..., 0], expected, atol=0.006)
    with pytest.raises(ValueError, match="needs 4 consecutive radar files, got 3"):
        app.radar_context(files[:3], "odim_hdf5", stand_in)
    with pytest.raises(ValueError, match="pick a radar pipeline"):
        app.radar_context(files, "odim_hdf5", SimpleNamespace(config={"units": "VIL"}))


def test_the_control_steers_each_ensemble_to_its_target(pipe, steered):
    from prediff.pretrained.intensity import pipeline_intensity_stats

    result, calls = steered
    mu, sigma = pipeline_intensity_stats(pipe)
    assert result.n_sigmas == [0.0, 2.0] and result.anticipated == pytest.approx([mu, mu + 2 * sigma])
    assert [e.shape for e in result.ensembles] == [(2, *pipe.forecast_shape)] * 2
    for anticipated, achieved in zip(result.anticipated, result.achieved):
        assert achieved == pytest.approx(anticipated, rel=0.1)
    assert calls[-1] == (6, 6) and len(calls) == 6  # one report per denoising step of both calls
    assert "Anticipated" in result.summary("VIL") and "μ + 2σ" in result.summary("VIL")


def test_without_control_and_with_bad_requests(pipe, storm):
    context, _ = storm
    plain = app.run_app_forecast(pipe, context, members=1, steps=1, seed=3)
    assert plain.anticipated == [None] and plain.summary("VIL").startswith("No control")
    with pytest.raises(ValueError, match="needs a target"):
        app.run_app_forecast(pipe, context, control_method="analytic")
    with pytest.raises(ValueError, match="sampler must be one of"):
        app.run_app_forecast(pipe, context, sampler="heun")
    with pytest.raises(ValueError, match="members must be"):
        app.run_app_forecast(pipe, context, members=0)


def test_pictures_scores_and_download(pipe, storm, steered, tmp_path):
    xr = pytest.importorskip("xarray")
    result, _ = steered
    units = pipe.config.get("units")
    pictures = app.render_forecast(result, pipe, tmp_path, units)
    assert set(pictures) == {"panel", "gif", "exceedance"} and all(p.stat().st_size > 0 for p in pictures.values())
    assert app.render_what_if(result, pipe, tmp_path / "what_if.png", units).stat().st_size > 0
    table = app.score_forecast(result, pipe, "VIL 0-255")
    assert table.splitlines()[0].startswith("score (VIL 0-255)") and "PreDiff" in table and "persistence" in table
    path = app.write_forecast_netcdf(result, pipe, storm[0], tmp_path / "ensemble.nc")
    with xr.open_dataset(path) as data:
        np.testing.assert_allclose(data["forecast"].values, result.ensembles[0][..., 0])
        assert data.attrs["members"] == 2 and "anticipated mean intensity" in data.attrs["knowledge_control"]
