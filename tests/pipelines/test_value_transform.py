"""Pipelines with a value transform (rain rate in dB): recorded in the config, applied in and out, old configs
keep the linear map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prediff.pipelines import EarthformerPipeline, PreDiffPipeline
from prediff.utils.units import to_physical

DB = {"kind": "db", "threshold": 0.1, "zerovalue": -15.0}


def rain_context(shape=(1, 3, 32, 32, 1), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = np.exp(rng.normal(0.0, 1.5, shape)).astype(np.float32)
    rates[rng.random(shape) < 0.4] = 0.0
    return rates


@pytest.fixture(scope="module")
def rain_pipe_dir(tmp_path_factory):
    torch.manual_seed(0)
    base = PreDiffPipeline.from_preset("prediff-tiny")
    pipe = PreDiffPipeline(
        **base.components, value_range=(-15.0, 25.0), value_transform=DB, units="rain rate (mm/h)",
        pixel_size_km=2.0, frame_interval_minutes=10,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("rain") / "pipe"
    pipe.save_pretrained(folder)
    return folder


def test_transform_grid_and_clock_are_recorded_and_loaded(rain_pipe_dir):
    config = json.loads((rain_pipe_dir / "model_index.json").read_text())
    assert config["value_transform"] == DB
    assert config["pixel_size_km"] == 2.0 and config["frame_interval_minutes"] == 10.0
    pipe = PreDiffPipeline.from_pretrained(rain_pipe_dir)
    assert pipe.value_transform == DB and pipe.pixel_size_km == 2.0 and pipe.frame_interval_minutes == 10.0
    assert pipe.physical_range == pytest.approx((0.0, 10**2.5))


def test_forecast_comes_back_in_rain_rate_through_the_inverse_transform(rain_pipe_dir):
    pipe = PreDiffPipeline.from_pretrained(rain_pipe_dir)
    pipe.set_progress_bar_config(disable=True)
    context = rain_context()
    frames = pipe(context, num_inference_steps=2, num_ensemble_members=2, generator=torch.Generator().manual_seed(0),
                  output_type="latent").frames  # fmt: skip
    decoded = pipe.decode_latents(frames[0])
    expected = to_physical(pipe.decode_unit(frames[0]), (-15.0, 25.0), DB)
    torch.testing.assert_close(decoded, expected)
    # Rain rate is never negative and is exactly 0 below the dB threshold.
    assert (decoded >= 0).all()
    unit = pipe.decode_unit(frames[0])
    dry = unit * 40.0 - 15.0 < -10.0
    assert dry.any() and (decoded[dry] == 0).all()
    # The context enters through the transform: the same context scaled linearly gives other latents.
    latents = pipe.encode_context(torch.from_numpy(context))
    linear = PreDiffPipeline(**pipe.components, value_range=(0.0, 316.0))
    assert not torch.allclose(latents, linear.encode_context(torch.from_numpy(context)))


def test_earthformer_pipeline_takes_the_same_transform(tmp_path):
    from prediff.models.earthformer import EarthformerModel

    torch.manual_seed(0)
    model = EarthformerModel(
        input_shape=(3, 32, 32, 1), target_shape=(2, 32, 32, 1), base_units=16, num_heads=2, enc_depth=(1, 1),
        dec_depth=(1, 1), initial_downsample_scale=2, initial_downsample_conv_layers=1, final_upsample_conv_layers=1,
    ).eval()  # fmt: skip
    pipe = EarthformerPipeline(model, value_range=(-15.0, 25.0), value_transform=DB, pixel_size_km=1.0)
    pipe.save_pretrained(tmp_path / "ef")
    loaded = EarthformerPipeline.from_pretrained(tmp_path / "ef")
    assert loaded.value_transform == DB and loaded.pixel_size_km == 1.0 and loaded.frame_interval_minutes is None
    frames = loaded(rain_context()).frames
    assert frames.shape == (1, 2, 32, 32, 1) and (frames >= 0).all()


def test_old_configs_keep_the_linear_map(pipe_dir):
    config = json.loads((pipe_dir / "model_index.json").read_text())
    for key in ("value_transform", "pixel_size_km", "frame_interval_minutes"):
        config.pop(key, None)
    (pipe_dir / "model_index.json").write_text(json.dumps(config))
    pipe = PreDiffPipeline.from_pretrained(pipe_dir)
    assert pipe.value_transform is None and pipe.pixel_size_km is None and pipe.physical_range == (0.0, 255.0)
    x = torch.rand(2, 3, 32, 32, 1) * 255
    torch.testing.assert_close(pipe.scale_to_unit(x), x / 255.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value_transform": {"kind": "db", "threshold": -1}}, "threshold must be > 0"),
        ({"pixel_size_km": 0}, "pixel_size_km must be a positive number"),
        ({"frame_interval_minutes": float("nan")}, "frame_interval_minutes must be a positive number"),
    ],
)
def test_bad_settings_are_refused_by_name(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreDiffPipeline(**pipe.components, **kwargs)


def test_forecast_command_takes_a_whole_domain_of_rain_rate_and_checks_grid_and_clock(rain_pipe_dir, tmp_path, capsys):
    from prediff.data import write_sequences
    from tests.conftest import run_cli

    rates = rain_context((1, 3, 40, 48, 1), seed=3)
    rates[:, :, :8, :10] = np.nan  # outside the radar domain
    options = ["--pipeline", rain_pipe_dir, "--members", 2, "--steps", 2, "--no-plots", "--no-progress"]
    for name, grid in (("ok", (2.0, 10.0)), ("1km", (1.0, 10.0)), ("5min", (2.0, 5.0))):
        metadata = {"units": "mm/h", "pixel_size_km": grid[0], "frame_interval_minutes": grid[1]}
        write_sequences(tmp_path / f"{name}.h5", rates, 1, rates.shape[1:], np.float32, metadata=metadata,
                        progress=False)  # fmt: skip
    with_plots = [option for option in options if option != "--no-plots"]
    assert run_cli(["forecast", "--input", tmp_path / "ok.h5", "--out", tmp_path / "ok.nc", *with_plots]) == 0
    # Rain rate gets the exceedance-probability picture P(R >= 1 mm/h) next to the panel and the GIF.
    assert all((tmp_path / name).stat().st_size > 0 for name in ("ok_panel.png", "ok.gif", "ok_exceedance.png"))
    ensemble = np.load(tmp_path / "ok.npy")
    assert ensemble.shape == (2, 2, 40, 48)  # pysteps layout (members, time, y, x) of the one context
    assert np.isnan(ensemble[..., :8, :10]).all() and np.isfinite(ensemble[..., 8:, :]).all()
    assert (ensemble[..., 8:, :] >= 0).all()
    # One tile at a time, with wider overlaps: the same kind of forecast; a bad overlap is refused by name.
    tiles = ["--tile-batch-size", 1, "--tile-overlap", 16]
    assert run_cli(["forecast", "--input", tmp_path / "ok.h5", "--out", tmp_path / "one.nc", *options, *tiles]) == 0
    other = np.load(tmp_path / "one.npy")
    assert other.shape == ensemble.shape and np.array_equal(np.isnan(other), np.isnan(ensemble))
    assert not np.allclose(other, ensemble, equal_nan=True)  # other windows, so another sample
    capsys.readouterr()
    bad = ["--tile-overlap", 6]
    assert run_cli(["forecast", "--input", tmp_path / "ok.h5", "--out", tmp_path / "bad.nc", *options, *bad]) == 2
    assert "overlap must be a multiple of 4 in [0, 32), got 6" in capsys.readouterr().err
    assert run_cli(["forecast", "--input", tmp_path / "1km.h5", "--out", tmp_path / "1km.nc", *options]) == 2
    assert "records 1 km pixels, the pipeline was trained on 2 km pixels" in capsys.readouterr().err
    assert run_cli(["forecast", "--input", tmp_path / "5min.h5", "--out", tmp_path / "5min.nc", *options]) == 2
    assert "are 5 minutes apart, the pipeline was trained on 10 minutes" in capsys.readouterr().err
    assert not (tmp_path / "1km.nc").exists() and not (tmp_path / "5min.nc").exists()


def test_anticipated_mean_rain_rate_is_reached_in_mm_per_hour(rain_pipe_dir):
    """The analytic intensity control of a dB pipeline steers the mean rain rate in mm/h to its target, not the
    mean of dB; two targets give two forecasts ordered as they are."""
    from prediff.knowledge import AnticipatedIntensityControl

    pipe = PreDiffPipeline.from_pretrained(rain_pipe_dir)
    pipe.set_progress_bar_config(disable=True)
    context = rain_context()
    means = []
    for target in (0.5, 3.0):
        control = AnticipatedIntensityControl(target=target, method="analytic")
        frames = pipe(context, num_inference_steps=4, num_ensemble_members=2, knowledge_controls=[control],
                      generator=torch.Generator().manual_seed(0)).frames  # fmt: skip
        means.append(frames.reshape(2, -1).mean(axis=1))
        np.testing.assert_allclose(means[-1], target, rtol=0.15)
    assert (means[1] > means[0]).all()
