"""benchmarks/bench_radar.py without an archive: a stand-in radar source (the ``.npy`` importer of
tests/data/test_radar.py) with two storms, a NaN corner and a dry quarter, forecast by the tiny pipeline (as the
radar pipeline and, through the Marshall-Palmer levels, as the storms pipeline), pysteps and persistence; the
selection and the scores are checked against plain numpy. Also the per-sequence scores of ``prediff.metrics``
against numpy with a mask, and against the accumulating metrics without one."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prediff.metrics import (
    CategoricalScore,
    EnsembleCRPS,
    FractionsSkillScore,
    RankHistogram,
    SequenceScores,
    SpreadSkill,
    bootstrap_weights,
    far,
)

pytest.importorskip("pysteps")
pytest.importorskip("matplotlib")
from tests.data.test_radar import T0, npy_archive  # noqa: E402 (needs pysteps, h5py and pyproj)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
EVENT = (T0, T0 + dt.timedelta(minutes=80))  # 17 files every 5 minutes: 9 frames every 10 minutes


@pytest.fixture(scope="module")
def bench():
    """benchmarks/bench_radar.py as a module (its folder on sys.path, for bench_common)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_radar", BENCHMARKS / "bench_radar.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def storm_fields(count: int = 17, size: int = 128) -> list[np.ndarray]:
    """1 km rain-rate fields (mm/h): a 25 mm/h storm moving east 2 km per 5 minutes and an 8 mm/h one moving west,
    both in the bottom half; the top-left 64 km quarter is dry and a corner of the top right is outside the domain."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    fields = []
    for i in range(count):
        rate = 25.0 * np.exp(-((y - 90) ** 2 + (x - 20 - 2 * i) ** 2) / 128.0)
        rate += 8.0 * np.exp(-((y - 100) ** 2 + (x - 95 + i) ** 2) / 128.0)
        rate[rate < 0.05] = 0.0
        rate[:20, 100:] = np.nan
        fields.append(rate)
    return fields


def test_marshall_palmer_levels_round_trip(bench):
    rate = np.array([0.0, 0.01, 0.5, 1.0, 10.0, 100.0, 1000.0, np.nan])
    levels = bench.rain_to_levels(rate)
    # 1 mm/h: Z = 200, 23.01 dBZ, 23.01 / 70 * 255 = 83.8; 1000 mm/h is above 70 dBZ (865 mm/h): level 255.
    assert levels[3] == pytest.approx(10 * np.log10(200) / 70 * 255, rel=1e-6)
    assert levels[0] == levels[1] == 0 and levels[6] == 255 and np.isnan(levels[7])
    back = bench.levels_to_rain(levels)
    np.testing.assert_allclose(back[2:6], rate[2:6], rtol=1e-5)
    assert back[0] == back[1] == 0 and back[6] == pytest.approx((1e7 / 200) ** (1 / 1.6), rel=1e-5)
    assert np.isnan(back[7])


def plain_crps(ensemble: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """E|X - y| - 1/2 E|X - X'| per pixel, from every pair of members: (B, M, ...) and (B, ...) -> (B, ...)."""
    skill = np.abs(ensemble - observed[:, None]).mean(axis=1)
    spread = np.abs(ensemble[:, :, None] - ensemble[:, None, :]).mean(axis=(1, 2))
    return skill - 0.5 * spread


def plain_counts(point: np.ndarray, observed: np.ndarray, threshold: float, valid: np.ndarray) -> tuple[int, ...]:
    """Hits, misses and false alarms of events >= threshold among the valid pixels."""
    f, o = (point >= threshold) & valid, (observed >= threshold) & valid
    return (f & o).sum(), (o & ~f).sum(), (f & ~o).sum()


def plain_csi(point: np.ndarray, observed: np.ndarray, threshold: float, valid: np.ndarray) -> float:
    hits, misses, false_alarms = plain_counts(point, observed, threshold, valid)
    return hits / (hits + misses + false_alarms + 1e-4)


def test_sequence_scores_match_numpy_with_a_mask_and_the_accumulating_metrics_without(bench):
    rng = np.random.default_rng(0)
    ensemble = rng.gamma(0.6, 4.0, size=(4, 3, 2, 16, 16, 1)).astype(np.float32)
    observed = rng.gamma(0.6, 4.0, size=(4, 2, 16, 16, 1)).astype(np.float32)
    valid = np.ones(observed.shape, dtype=bool)
    valid[1, :, :6] = False
    valid[3, :, :, 10:] = False
    scores = SequenceScores(thresholds=(1.0, 5.0), fss_thresholds=(5.0,), fss_scales=(4,), rank_x_min=0.1)
    nan_outside = np.where(valid, observed, np.nan)
    scores.update(ensemble[:2], nan_outside[:2], mask=valid[:2], indices=[0, 1])
    scores.update(np.where(valid[2:, None], ensemble[2:], np.nan), nan_outside[2:], mask=valid[2:])
    result = scores.compute()
    crps = plain_crps(ensemble.astype(np.float64), observed.astype(np.float64))
    assert result["crps"] == pytest.approx(crps[valid].mean(), rel=1e-10)
    median = np.median(ensemble, axis=1)
    for threshold in (1.0, 5.0):
        hits, misses, false_alarms = plain_counts(median, observed, threshold, valid)
        assert result[f"csi_{threshold:g}"] == pytest.approx(hits / (hits + misses + false_alarms + 1e-4), rel=1e-10)
        assert result[f"pod_{threshold:g}"] == pytest.approx(hits / (hits + misses + 1e-4), rel=1e-10)
        assert result[f"far_{threshold:g}"] == pytest.approx(false_alarms / (hits + false_alarms + 1e-4), rel=1e-10)
    assert result["mse"] == pytest.approx(((ensemble.mean(axis=1) - observed) ** 2)[valid].mean(), rel=1e-6)
    # Event forecasts at an exceedance probability: at least 2 of the 3 members are the median's events.
    for p, at_least in ((1 / 3, 1), (0.5, 2), (2 / 3, 2), (1.0, 3)):
        events = SequenceScores(thresholds=(1.0, 5.0), event_probability=p)
        events.update(ensemble, nan_outside, mask=valid)
        scored = events.compute()
        assert "event_csi_1" not in result and scored["csi_5"] == pytest.approx(result["csi_5"], rel=1e-12)
        for threshold in (1.0, 5.0):
            forecast = (ensemble >= threshold).sum(axis=1) >= at_least
            hits = ((forecast & (observed >= threshold)) & valid).sum()
            misses = ((~forecast & (observed >= threshold)) & valid).sum()
            false_alarms = ((forecast & (observed < threshold)) & valid).sum()
            key = f"{threshold:g}"
            assert scored[f"event_csi_{key}"] == pytest.approx(hits / (hits + misses + false_alarms + 1e-4))
            assert scored[f"event_far_{key}"] == pytest.approx(false_alarms / (hits + false_alarms + 1e-4))
            assert scored[f"event_bias_{key}"] == pytest.approx((hits + false_alarms) / (hits + misses + 1e-4))
            if at_least == 2:
                assert scored[f"event_csi_{key}"] == pytest.approx(result[f"csi_{key}"], rel=1e-12)
    with pytest.raises(ValueError, match="event_probability must be in"):
        SequenceScores(event_probability=0.0)
    # Sequence 1 drawn twice and 3 never: the sums of those draws.
    weighted = scores.compute(weights=np.array([1, 2, 1, 0]))
    w = np.array([1, 2, 1, 0], dtype=np.float64)[:, None, None, None, None] * valid
    assert weighted["crps"] == pytest.approx((crps * w).sum() / w.sum(), rel=1e-10)
    draws = scores.compute(weights=bootstrap_weights(4, 50, seed=1))
    assert draws["csi_5"].shape == (50,) and np.all((draws["csi_5"] >= 0) & (draws["csi_5"] <= 1))

    full = SequenceScores(thresholds=(1.0, 5.0), fss_thresholds=(5.0,), fss_scales=(4,), rank_x_min=0.1)
    full.update(ensemble, observed)
    result = full.compute(per_lead_time=True)
    np.testing.assert_allclose(result["crps"], EnsembleCRPS()(ensemble, observed, per_lead_time=True)["crps"])
    categorical = CategoricalScore((1.0, 5.0), (1,))(median, observed, per_lead_time=True)
    for key in ("csi_1", "pod_5", "sucr_5", "bias_1"):
        np.testing.assert_allclose(result[key], categorical[key], rtol=1e-12)
    np.testing.assert_allclose(result["far_5"], far(median, observed, 5.0, per_lead_time=True), rtol=1e-12)
    fss = FractionsSkillScore((5.0,), (4,))(median, observed, per_lead_time=True)["fss_5_scale4"]
    np.testing.assert_allclose(result["fss_5_scale4"], fss, rtol=1e-10)
    spread = SpreadSkill()(ensemble, observed, per_lead_time=True)["spread_skill_ratio"]
    np.testing.assert_allclose(result["spread_skill_ratio"], spread, rtol=1e-10)
    ranks = RankHistogram(x_min=0.1)
    for row in range(4):  # the same per-sequence tie-breaking as evaluation's ScoreSet
        state = np.random.SeedSequence([0, row]).generate_state(1, dtype=np.uint32)
        ranks.update(ensemble[row : row + 1], observed[row : row + 1], torch.Generator().manual_seed(int(state[0])))
    np.testing.assert_allclose(full.compute()["rank_histogram"], ranks.compute()["rank_histogram"], rtol=1e-12)


def test_summary_without_event_probabilities_leaves_their_intervals_out(bench):
    rng = np.random.default_rng(2)
    observed = rng.gamma(0.6, 4.0, size=(3, 2, 8, 8, 1))
    scores = {name: SequenceScores() for name in ("ensemble", "pysteps STEPS", "pysteps extrapolation")}
    scores["ensemble"].update(rng.gamma(0.6, 4.0, size=(3, 4, 2, 8, 8, 1)), observed)
    scores["pysteps STEPS"].update(rng.gamma(0.6, 4.0, size=(3, 4, 2, 8, 8, 1)), observed)
    scores["pysteps extrapolation"].update(rng.gamma(0.6, 4.0, size=(3, 2, 8, 8, 1)), observed)
    summary = bench.summarize(scores, {}, num_draws=50)
    assert set(summary["ensemble"]["intervals"]) == {"CRPS", "CRPS last", "CSI1", "CSI5"}
    assert set(summary["ensemble"]["csi_minus_extrapolation"]) == {"CSI1", "CSI5"}
    assert "| ensemble | " in bench.interval_table(summary) and "| - - - |" in bench.interval_table(summary)
    assert bench.csi_difference_table(summary).splitlines()[2].endswith("| - | - |")


def test_benchmark_selects_forecasts_and_scores_a_standin_archive(bench, pipe, tmp_path):
    source = npy_archive(tmp_path / "archive", storm_fields())
    result = bench.benchmark(
        source, [EVENT], pipe, pipe, name="tiny", storms_name="tiny-storms", members=2, num_sequences=3,
        num_inference_steps=2, bootstrap=200, out=tmp_path / "out", progress=False,
    )  # fmt: skip
    selection, settings, summary = result["selection"], result["settings"], result["forecasters"]
    # The pipeline's shapes: 3 + 2 frames, 32x32 crops; 2 km and 10 minutes by default; targets never overlap.
    assert (settings["context_frames"], settings["lead_times"], settings["frame_size"]) == (3, 2, [32, 32])
    assert settings["lead_time_minutes"] == [10, 20] and settings["fss"]["scale_pixels"] == 8
    # Windows start at frames 0, 2, 4 of 9; of the 4 crops of each, the NaN one and the dry one are dropped.
    assert selection["counts"] == {"candidates": 12, "empty": 0, "with_nan": 3, "dry": 3, "kept": 6}
    chosen = [(s["candidate"], s["start"], s["row"], s["col"]) for s in selection["sequences"]]
    assert [c[0] for c in chosen] == [0, 2, 5] and {c[2] for c in chosen} == {32}
    assert chosen[0][1] == "2021-06-01T12:00:00Z" and chosen[2][1] == "2021-06-01T12:40:00Z"
    names = ["tiny", "tiny-storms zero-shot", "pysteps STEPS", "pysteps extrapolation", "persistence"]
    assert list(summary) == names
    assert [summary[name]["members"] for name in names] == [2, 2, 2, 1, 1]

    # Persistence against numpy on the same crops: CRPS = MAE, CSI per pixel.
    dataset = bench.radar_dataset(source, [EVENT], 5, 32, 2.0, 10, 2, 32, 0.05, False)
    frames = np.stack([dataset.sequence(c[0])["frames"] for c in chosen]).astype(np.float64)
    forecast = np.repeat(frames[:, 2:3], 2, axis=1)
    target = frames[:, 3:]
    scores = summary["persistence"]["scores"]
    assert scores["crps"] == pytest.approx(np.abs(forecast - target).mean(), rel=1e-9)
    assert scores["mae"] == pytest.approx(scores["crps"], rel=1e-12)
    every = np.ones(target.shape, dtype=bool)
    for threshold in (1.0, 5.0):
        assert scores[f"csi_{threshold:g}"] == pytest.approx(plain_csi(forecast, target, threshold, every), rel=1e-9)
    last = summary["persistence"]["per_lead_time"]["crps"][-1]
    assert last == pytest.approx(np.abs(forecast[:, -1] - target[:, -1]).mean(), rel=1e-9)
    # Storms move, so persistence has errors; every ensemble has a spread/skill ratio and a rank histogram.
    assert scores["crps"] > 0.1
    for name in ("tiny", "tiny-storms zero-shot", "pysteps STEPS"):
        entry = summary[name]
        assert np.isfinite(entry["scores"]["crps"]) and entry["scores"]["spread_skill_ratio"] > 0
        assert len(entry["rank_histogram"]) == 3 and sum(entry["rank_histogram"]) == pytest.approx(1.0)
        low, high = entry["crps_minus_reference"]["CRPS"] if name != "pysteps STEPS" else (0, 0)
        assert low <= high
    for entry in summary.values():
        low, high = entry["intervals"]["CRPS"]
        assert low <= entry["scores"]["crps"] * 1.5 and high >= entry["scores"]["crps"] * 0.5 and low <= high

    written = json.loads((tmp_path / "out" / "bench_radar.json").read_text())
    assert written["forecasters"]["persistence"]["scores"]["crps"] == pytest.approx(scores["crps"])
    assert (tmp_path / "out" / "rank_histogram.png").read_bytes()[:4] == b"\x89PNG"
    text = bench.report(result)
    # Event forecasts: the pipeline's and STEPS' at their chosen exceedance probabilities, the rest the median's.
    assert settings["event_probabilities"] == {
        "tiny": bench.EVENT_PROBABILITY, "tiny-storms zero-shot": 0.5, "pysteps STEPS": bench.STEPS_EVENT_PROBABILITY,
        "pysteps extrapolation": 0.5, "persistence": 0.5,
    }  # fmt: skip
    assert scores["event_csi_5"] == pytest.approx(scores["csi_5"], rel=1e-12)
    low, high = summary["tiny"]["intervals"]["event CSI1"]
    assert 0 <= low <= summary["tiny"]["scores"]["event_csi_1"] <= high <= 1
    # Paired CSI differences to the extrapolation: persistence's median and event CSI are the same, so are theirs.
    difference = summary["persistence"]["csi_minus_extrapolation"]
    assert difference["CSI5"] == difference["event CSI5"] and difference["CSI1"][0] <= difference["CSI1"][1]
    assert "csi_minus_extrapolation" not in summary["pysteps extrapolation"]
    assert "| forecast | CSI1 | CSI5 | event CSI1 | event CSI5 |" in text
    assert "| forecast | CRPS | CRPS last | MSE | MAE | CSI1 | CSI5 | POD1 | FAR1 | POD5 | FAR5 | FSS5@16km" in text
    assert "| forecast | p | CSI1 | CSI5 | POD1 | FAR1 | POD5 | FAR5 | BIAS1 | BIAS5 |" in text
    assert f"| tiny | {bench.EVENT_PROBABILITY:g} |" in text and "| persistence | - |" in text
    assert all(f"| {name} |" in text for name in names) and "STEPS" in text.splitlines()[-1]


def test_whole_domain_scores_only_inside_the_radar_domain(bench, pipe, tmp_path):
    source = npy_archive(tmp_path / "archive", storm_fields(11))
    result = bench.benchmark(
        source, [(T0, T0 + dt.timedelta(minutes=50))], pipe, None, members=2, num_sequences=1,
        num_inference_steps=2, bootstrap=20, whole_domain=True, progress=False,
    )  # fmt: skip
    assert result["settings"]["frame_size"] == [64, 64] and "files" not in result
    dataset = bench.radar_dataset(source, [(T0, T0 + dt.timedelta(minutes=50))], 5, 32, 2.0, 10, 2, 32, 0.05, True)
    frames = dataset.sequence(result["selection"]["sequences"][0]["candidate"])["frames"].astype(np.float64)
    valid = ~np.isnan(frames[3:]) & ~np.isnan(frames[:3]).any(axis=0)
    assert 0 < (~valid).sum() < valid.sum()
    error = np.abs(frames[2:3] - frames[3:])[valid]
    assert result["forecasters"]["persistence"]["scores"]["crps"] == pytest.approx(error.mean(), rel=1e-9)
    assert np.isfinite(result["forecasters"]["prediff-radar-tiny"]["scores"]["crps"])


def test_command_line_errors_are_one_line(bench, tmp_path, capsys):
    assert bench.main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds no radar/ folder" in err


def test_pysteps_baselines_estimate_the_motion_of_rain_rate_in_db():
    from prediff.baselines import extrapolation

    context = np.nan_to_num(np.stack(storm_fields(4))[None, :, ::2, ::2, None])
    linear = extrapolation(context, 2, value_range=None)
    decibels = extrapolation(context, 2, value_range=None, motion_db_threshold=0.1)
    assert decibels.shape == linear.shape == (1, 2, 64, 64, 1) and np.isfinite(decibels).all()
    assert np.abs(decibels - linear).max() > 0.01  # another motion field
    with pytest.raises(ValueError, match="motion_db_threshold must be > 0"):
        extrapolation(context, 2, motion_db_threshold=0.0)


def test_event_probability_is_chosen_on_a_validation_split(bench, pipe_dir, tmp_path, capsys):
    """benchmarks/radar_event_probability.py on a small file of rain rate: every k / M scored, p chosen by the
    highest mean CSI, the frequency bias falling as p rises."""
    from prediff.data.io import write_sequences
    from prediff.training import split_indices

    spec = importlib.util.spec_from_file_location("radar_event_probability", BENCHMARKS / "radar_event_probability.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fields = np.stack(storm_fields(10))[None, ::2, ::4, ::4, None]  # 5 frames of 32x32 every 10 minutes
    frames = np.nan_to_num(np.concatenate([fields, fields[:, :, ::-1], fields[:, :, :, ::-1], fields.swapaxes(2, 3)]))
    path = tmp_path / "rain.h5"
    metadata = {"units": "mm/h", "pixel_size_km": 2.0, "frame_interval_minutes": 10}
    write_sequences(path, frames.astype(np.float32), 4, frames.shape[1:], np.float32, metadata, progress=False)
    argv = ["--data", str(path), "--pipeline", str(pipe_dir), "--members", "2", "--inference-steps", "2"]
    assert script.main([*argv, "--val-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert f"{len(split_indices(4, 0.5, 0)[1])} sequences x 2 members" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| tiny |")]
    assert [row[1] for row in rows] == ["1/2", "2/2"]
    mean_csi = [float(row[4]) for row in rows]
    biases = [(float(row[5]), float(row[6].rstrip(" |"))) for row in rows]
    assert biases[0][0] >= biases[1][0] and biases[0][1] >= biases[1][1]
    chosen = 0.5 if mean_csi[0] >= mean_csi[1] else 1.0
    assert f"tiny p = {chosen:g}" in out.splitlines()[-1]
    assert len([line for line in out.splitlines() if line.startswith("| pysteps extrapolation |")]) == 1
    assert script.main(["--data", str(tmp_path / "missing.h5")]) == 2
    assert "no data file at" in capsys.readouterr().err
    assert script.main([*argv, "--val-fraction", "0"]) == 2
    assert "holds out no sequence of the 4" in capsys.readouterr().err
    short = tmp_path / "short.h5"
    write_sequences(short, frames[:, :4].astype(np.float32), 4, (4, 32, 32, 1), np.float32, metadata, progress=False)
    assert script.main(["--data", str(short), "--pipeline", str(pipe_dir)]) == 2
    assert "sequences of 4 frames; the pipeline needs 3 + 2" in capsys.readouterr().err
