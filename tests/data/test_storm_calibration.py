"""Synthetic storms calibrated to a radar archive: the generator's parameters, the statistics, the level table,
the search, the saved calibration and the two commands."""

import json

import numpy as np
import pytest

from prediff.cli import main
from prediff.data import (
    StormCalibration,
    StormParameters,
    calibrate_storm_generator,
    generate_storm_sequence,
    measure_rain_statistics,
)
from prediff.data.storm_calibration import fit_level_table

h5py = pytest.importorskip("h5py")


def _power_law_field(rng, size: int, beta: float) -> np.ndarray:
    k = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    k[0, 0] = np.inf
    spectrum = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) * k ** (-beta / 2)
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / field.std()


def _moving_rain(num: int, frames: int, size: int, shift: int, beta: float = 2.5, seed: int = 0) -> np.ndarray:
    """Log-normal rain (about half the pixels wet) carried ``shift`` pixels a frame to the right, periodic."""
    rng = np.random.default_rng(seed)
    out = np.empty((num, frames, size, size), dtype=np.float32)
    for n in range(num):
        rain = np.exp(_power_law_field(rng, 2 * size, beta)) - 1.0
        for t in range(frames):
            out[n, t] = np.roll(rain, shift * t, axis=1)[:size, :size]
    return np.clip(out, 0.0, None) * 3.0


def test_default_parameters_are_the_built_in_storms_and_others_change_them():
    built_in = generate_storm_sequence(4, 2, 6, 48, 48)
    assert np.array_equal(generate_storm_sequence(4, 2, 6, 48, 48, StormParameters()), built_in)
    faster = StormParameters(speed_range=(4.0, 5.0), texture_beta_range=(1.2, 1.4))
    assert not np.array_equal(generate_storm_sequence(4, 2, 6, 48, 48, faster), built_in)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"speed_range": (3.0, 1.0)}, "speed_range"),
        ({"life_range": (0.0, 10.0)}, "lifetimes must be positive"),
        ({"texture_rate_range": (0.1,)}, "texture_rate_range"),
        ({"texture_sigma_range": (0.5, float("nan"))}, "texture_sigma_range"),
        ({"stratiform_beta": "3"}, "stratiform_beta"),
    ],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StormParameters(**kwargs)


def test_statistics_recover_a_known_motion_spectrum_and_intensity():
    rain = _moving_rain(num=6, frames=6, size=64, shift=2, beta=2.5)
    stats = measure_rain_statistics(rain)
    assert stats.median_speed == pytest.approx(2.0, abs=0.5)
    assert stats.wet_fraction == pytest.approx(float((rain >= 0.1).mean()))
    assert stats.wet_quantiles[0] == pytest.approx(float(np.median(rain[rain >= 0.1])))
    # Pure translation: the advected frame explains almost everything, at every lead.
    assert min(stats.lagrangian_correlation) > 0.8
    rougher = measure_rain_statistics(_moving_rain(num=6, frames=6, size=64, shift=2, beta=1.5))
    assert rougher.spectral_slope < stats.spectral_slope - 0.4
    still = measure_rain_statistics(_moving_rain(num=6, frames=6, size=64, shift=0))
    assert still.median_speed < 0.5


def test_level_table_matches_the_archive_distribution_dry_pixels_included():
    rng = np.random.default_rng(1)
    levels = np.clip(rng.normal(60, 50, size=200_000), 0, 255).astype(np.uint8)  # 12% at level 0
    archive = np.where(rng.random(300_000) < 0.65, 0.0, rng.lognormal(0.0, 1.0, size=300_000))
    archive[:1000] = np.nan
    table = fit_level_table(levels, archive)
    assert table.shape == (256,) and table[0] == 0.0 and (np.diff(table) >= 0).all()
    mapped = table[levels]
    assert (mapped >= 0.1).mean() == pytest.approx(float(np.nanmean(archive >= 0.1)), abs=0.01)
    wet_archive = archive[archive >= 0.1]
    for q in (0.5, 0.9):
        assert np.quantile(mapped[mapped >= 0.1], q) == pytest.approx(np.quantile(wet_archive, q), rel=0.1)


def test_calibration_moves_the_generator_toward_a_faster_archive(tmp_path):
    truth = StormParameters(speed_range=(1.5, 9.0))
    archive_table = np.concatenate([[0.0], np.geomspace(0.1, 60.0, 255)]).astype(np.float32)
    archive = np.stack([archive_table[generate_storm_sequence(7, i, 6, 64, 64, truth)] for i in range(12)])
    seen = []
    calibration = calibrate_storm_generator(
        archive,
        num_samples=12,
        seed=3,
        beta_shifts=(0.0,),
        sigma_scales=(1.0,),
        time_scales=(1.0, 2.0),
        on_candidate=seen.append,
    )
    stages = ["speed factor"] * 2 + ["texture beta shift", "texture sigma factor"] + ["time scale"] * 2
    assert [entry["stage"] for entry in seen] == stages
    stats = calibration.statistics
    assert set(stats) == {"archive", "default", "calibrated"}
    default_miss = abs(stats["default"].median_speed - stats["archive"].median_speed)
    calibrated_miss = abs(stats["calibrated"].median_speed - stats["archive"].median_speed)
    assert calibrated_miss < 0.5 * default_miss
    assert calibration.parameters.speed_range[1] > 1.5 * StormParameters().speed_range[1]
    assert stats["calibrated"].wet_fraction == pytest.approx(stats["archive"].wet_fraction, abs=0.05)

    calibration.pixel_size_km, calibration.frame_interval_minutes = 2.0, 10
    path = calibration.save(tmp_path / "calibration.json")
    again = StormCalibration.load(path)
    assert again.parameters == calibration.parameters
    np.testing.assert_allclose(again.level_rain_rate, calibration.level_rain_rate, atol=1e-5)
    assert again.statistics["archive"] == stats["archive"]
    rain = again.generate(0, 5, 4, 32, 32)
    assert rain.shape == (4, 32, 32, 1) and rain.dtype == np.float32
    levels = generate_storm_sequence(0, 5, 4, 32, 32, again.parameters)
    np.testing.assert_array_equal(rain[..., 0], again.level_rain_rate[levels])
    with pytest.raises(FileExistsError):
        calibration.save(path)


def test_bad_archives_and_calibration_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        measure_rain_statistics(np.zeros((4, 64, 64), dtype=np.float32))
    with pytest.raises(TypeError, match="floating point"):
        measure_rain_statistics(np.zeros((4, 4, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="only NaN"):
        measure_rain_statistics(np.full((4, 4, 64, 64), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=">= 0 mm/h"):
        measure_rain_statistics(np.full((4, 4, 64, 64), -1.0, dtype=np.float32))
    with pytest.raises(ValueError, match="time_scales"):
        calibrate_storm_generator(np.ones((4, 4, 64, 64), dtype=np.float32), time_scales=())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StormCalibration.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a storm calibration"):
        StormCalibration.load(tmp_path / "other.json")
    (tmp_path / "damaged.json").write_text(json.dumps({"format": "prediff storm calibration 1", "parameters": {}}))
    with pytest.raises(ValueError, match="damaged.json' is damaged: KeyError"):
        StormCalibration.load(tmp_path / "damaged.json")
    with pytest.raises(ValueError, match="non-decreasing"):
        StormCalibration(StormParameters(), np.linspace(1.0, 0.0, 256))


def test_commands_calibrate_then_generate_rain_rate(tmp_path, capsys):
    from prediff.data import SequenceFile, write_sequences

    archive = tmp_path / "radar.h5"
    rain = _moving_rain(num=4, frames=4, size=32, shift=1)[..., None]
    write_sequences(
        archive,
        iter(rain),
        num_sequences=4,
        frame_shape=rain.shape[1:],
        dtype=np.float32,
        metadata={"units": "mm/h", "pixel_size_km": 2.0, "frame_interval_minutes": 10},
        progress=False,
    )
    calibration = tmp_path / "calibration.json"
    assert main(["data", "calibrate-storms", str(archive), "--out", str(calibration), "--num-samples", "2"]) == 0
    table = capsys.readouterr().out
    assert "| archive |" in table and "| calibrated |" in table and "spectral slope" in table

    out = tmp_path / "synthetic.h5"
    args = ["data", "generate", "storms", "--calibration", str(calibration), "--out", str(out)]
    args += ["--num-sequences", "3", "--seq-len", "4", "--height", "32", "--width", "32", "--seed", "5", "--quiet"]
    assert main(args) == 0
    written = SequenceFile(out)
    assert written.metadata["units"] == "mm/h"
    assert written.metadata["pixel_size_km"] == 2.0 and written.metadata["frame_interval_minutes"] == 10
    loaded = StormCalibration.load(calibration)
    np.testing.assert_array_equal(written.read(2), loaded.generate(5, 2, 4, 32, 32))

    vil = tmp_path / "vil.h5"
    assert (
        main(
            [
                "data",
                "generate",
                "storms",
                "--out",
                str(vil),
                "--num-sequences",
                "2",
                "--seq-len",
                "4",
                "--height",
                "32",
                "--width",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["data", "calibrate-storms", str(vil), "--out", str(tmp_path / "x.json")]) == 2
    assert "not rain rate" in capsys.readouterr().err
