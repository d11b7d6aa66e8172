"""`prediff evaluate` and `evaluate_pipeline`: scores against prediff.metrics on the same data, the report
formats, data files, Earthformer, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat

import numpy as np
import pytest
import torch

from prediff.baselines import persistence
from prediff.data import ArraySequenceDataset, SyntheticStormDataset
from prediff.evaluation import EvaluationReport, IntensityControlSpec, evaluate_pipeline
from prediff.metrics import (
    CategoricalScore,
    ContinuousScore,
    EnsembleCRPS,
    FractionsSkillScore,
    KnowledgeControlError,
    SpreadSkill,
)
from prediff.models import EarthformerModel
from prediff.pipelines.processes import member_generators
from tests.conftest import run_cli


def storms(num_sequences=3, seed=1):
    return SyntheticStormDataset(num_sequences, 5, 32, 32, seed=seed, progress=False)


def physical(dataset, count):
    return np.stack([dataset[i]["frames"].numpy() for i in range(count)]) * 255.0


def direct_scores(forecast, target, ensemble=False):
    """Every score of one forecaster straight from prediff.metrics."""
    members = forecast if ensemble else forecast[:, None]
    point = members.mean(axis=1)
    out, per_lead = {}, {}
    metrics = [CategoricalScore(), ContinuousScore(), FractionsSkillScore()]
    for metric in metrics:
        metric.update(point, target)
    crps = EnsembleCRPS((1, 4, 16))
    crps.update(members, target)
    metrics.append(crps)
    if ensemble:
        spread = SpreadSkill()
        spread.update(members, target)
        metrics.append(spread)
    for metric in metrics:
        out.update(metric.compute())
        per_lead.update(metric.compute(per_lead_time=True))
    return out, per_lead


def assert_scores_match(entry, expected, per_lead):
    for name, value in expected.items():
        assert entry["scores"][name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), name
        got = [np.nan if v is None else v for v in entry["per_lead_time"][name]]
        np.testing.assert_allclose(got, per_lead[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.fixture(scope="module")
def cli_report(pipe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    argv = [
        "evaluate",
        "--pipeline",
        pipe_dir,
        "--dataset",
        "storms",
        "--num-sequences",
        3,
        "--batch-size",
        2,
    ]
    argv += ["--members", 2, "--steps", 2, "--knowledge-control", "intensity", "--control-scale", 20]
    argv += ["--out", out / "report.json", "--markdown", out / "report.md", "--no-progress"]
    previous = os.umask(0o027)
    try:
        assert run_cli(argv) == 0
    finally:
        os.umask(previous)
    return out, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_json_report_structure(cli_report):
    out, report, _ = cli_report
    for name in ("report.json", "report.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640  # what open() makes under umask 027
    assert report["lead_times"] == [1, 2]
    assert list(report["forecasters"]) == ["prediff", "prediff+intensity", "persistence"]
    settings = report["settings"]
    assert settings["num_sequences"] == 3 and settings["members"] == 2 and settings["num_inference_steps"] == 2
    assert settings["thresholds"] == [16.0, 74.0, 133.0, 160.0, 181.0, 219.0]
    for name, entry in report["forecasters"].items():
        scores = entry["scores"]
        for key in ("csi_m", "csi_m_pool4", "csi_m_pool16", "pod_74", "mse", "mae", "ssim", "crps", "kc_mae"):
            assert key in scores, (name, key)
        assert all(0.0 <= scores[k] <= 1.0 for k in scores if k.startswith(("csi", "pod", "sucr")))
        assert scores["mse"] > 0 and scores["crps"] >= 0 and -1 <= scores["ssim"] <= 1
        assert all(len(v) == 2 for v in entry["per_lead_time"].values())
        assert "kc_mae" not in entry["per_lead_time"]  # a whole-sequence score
    prediff = report["forecasters"]["prediff"]
    assert prediff["kind"] == "ensemble" and prediff["members"] == 2
    assert sum(prediff["rank_histogram"]) == pytest.approx(1.0) and len(prediff["rank_histogram"]) == 3
    assert 0 < prediff["scores"]["spread_skill_ratio"] < 10
    assert "scale 20" in report["forecasters"]["prediff+intensity"]["knowledge_control"]
    persistence_entry = report["forecasters"]["persistence"]
    assert persistence_entry["kind"] == "deterministic" and persistence_entry["rank_histogram"] is None
    # A one-member forecast's CRPS is its MAE.
    assert persistence_entry["scores"]["crps"] == pytest.approx(persistence_entry["scores"]["mae"], rel=1e-12)


def test_persistence_scores_equal_prediff_metrics(cli_report):
    _, report, _ = cli_report
    frames = physical(storms(), 3)
    context, target = frames[:, :3], frames[:, 3:]
    forecast = persistence(context, 2)
    expected, per_lead = direct_scores(forecast, target)
    assert_scores_match(report["forecasters"]["persistence"], expected, per_lead)
    # The intensity error is against each sequence's observed future mean intensity.
    kc = KnowledgeControlError()
    kc.update(forecast, target.mean(axis=(1, 2, 3, 4)))
    assert report["forecasters"]["persistence"]["scores"]["kc_mae"] == pytest.approx(kc.compute()["kc_mae"])


def test_markdown_and_table(cli_report, capsys):
    out, report, markdown = cli_report
    assert markdown.startswith("# Evaluation report")
    assert "| score | prediff | prediff+intensity | persistence |" in markdown
    assert re.search(r"^\| csi_m \| [0-9.e-]+ \| [0-9.e-]+ \| [0-9.e-]+ \|$", markdown, re.M)
    assert "### CRPS (`crps`)" in markdown and "| forecaster | +1 | +2 | all |" in markdown
    assert "## Rank histograms" in markdown
    rebuilt = EvaluationReport.from_json((out / "report.json").read_text())
    assert rebuilt.to_dict() == report
    assert rebuilt.to_markdown() == markdown
    table = rebuilt.to_table(["csi_m", "crps"])
    lines = table.splitlines()
    assert lines[1].split() == ["score", "forecaster", "+1", "+2", "all"]
    crps_rows = [line for line in lines if "persistence" in line and "csi_m" not in line]
    assert crps_rows and float(crps_rows[-1].split()[-1]) == pytest.approx(
        report["forecasters"]["persistence"]["scores"]["crps"], rel=1e-3
    )
    assert (
        rebuilt.score("persistence", "mae", lead_time=2)
        == report["forecasters"]["persistence"]["per_lead_time"]["mae"][1]
    )
    with pytest.raises(ValueError, match="unknown forecaster"):
        rebuilt.score("climatology", "mae")


def test_ensemble_scores_are_those_of_the_pipeline(pipe):
    # Batches of 1 give the ensembles of one batch of 2: each member's noise depends on its sequence only.
    dataset = storms(2, seed=3)
    report = evaluate_pipeline(
        pipe,
        dataset,
        batch_size=1,
        num_ensemble_members=2,
        num_inference_steps=2,
        baselines=(),
        progress=False,
    )
    frames = physical(dataset, 2)
    ensemble = pipe(
        frames[:, :3],
        num_inference_steps=2,
        num_ensemble_members=2,
        generator=member_generators(0, [0, 1], 2),
    ).frames
    expected, per_lead = direct_scores(ensemble, frames[:, 3:], ensemble=True)
    entry = report.to_dict()["forecasters"]["prediff"]
    # Forecasts of a batch of 2 and of batches of 1 agree to float32 round-off.
    for name in ("mse", "mae", "crps", "spread_skill_ratio"):
        assert entry["scores"][name] == pytest.approx(expected[name], rel=1e-4), name
        np.testing.assert_allclose(entry["per_lead_time"][name], per_lead[name], rtol=1e-4)
    assert list(report.forecasters) == ["prediff"] and "kc_mae" not in entry["scores"]
    assert report.settings["categorical_point"] == "ensemble mean"
    # Events where at least 1 of the 2 members reaches the threshold: the larger member's events; MSE stays the mean's.
    events = evaluate_pipeline(
        pipe, dataset, batch_size=2, num_ensemble_members=2, num_inference_steps=2, baselines=(), progress=False,
        event_probability=0.5,
    )  # fmt: skip
    larger, _ = direct_scores(ensemble.max(axis=1), frames[:, 3:])
    scored = events.to_dict()["forecasters"]["prediff"]["scores"]
    for name in ("csi_16", "csi_74", "pod_133", "bias_16", "csi_m", "fss_74_scale4"):
        assert scored[name] == pytest.approx(larger[name], rel=1e-4, abs=1e-6), name
    assert scored["mse"] == pytest.approx(expected["mse"], rel=1e-4)
    assert "at least 0.5 of the members" in events.settings["categorical_point"]


def test_data_file_and_fixed_target(pipe_dir, tmp_path):
    h5 = tmp_path / "storms.h5"
    argv = ["data", "generate", "storms", "--out", h5, "--num-sequences", 2, "--seq-len", 5]
    assert run_cli(argv + ["--height", 32, "--width", 32, "--seed", 4, "--quiet"]) == 0
    argv = [
        "evaluate",
        "--pipeline",
        pipe_dir,
        "--dataset",
        h5,
        "--members",
        2,
        "--steps",
        1,
        "--no-progress",
    ]
    argv += ["--knowledge-control", "intensity", "--n-sigma", 1, "--intensity-mean", 20, "--intensity-std", 5]
    argv += ["--out", tmp_path / "r.json", "--thresholds", "16,74", "--pool-sizes", "1,4"]
    assert run_cli(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (
        report["settings"]["num_sequences"] == 2 and "25 (mu + 1 sigma" in report["settings"]["anticipated_intensity"]
    )
    frames = physical(SyntheticStormDataset(2, 5, 32, 32, seed=4, progress=False), 2)
    forecast = persistence(frames[:, :3], 2)
    metric = CategoricalScore((16, 74), (1, 4))
    metric.update(forecast, frames[:, 3:])
    for name, value in metric.compute().items():
        assert report["forecasters"]["persistence"]["scores"][name] == pytest.approx(value, rel=1e-9)
    assert "csi_133" not in report["forecasters"]["persistence"]["scores"]
    kc = KnowledgeControlError()
    kc.update(forecast, 25.0)
    assert report["forecasters"]["persistence"]["scores"]["kc_bias"] == pytest.approx(kc.compute()["kc_bias"])


def test_earthformer_model_is_scored_as_deterministic():
    torch.manual_seed(0)
    model = EarthformerModel(
        input_shape=(3, 32, 32, 1), target_shape=(2, 32, 32, 1), base_units=16, num_heads=2
    ).eval()
    dataset = storms(2, seed=5)
    report = evaluate_pipeline(model, dataset, progress=False, pool_sizes=(1,))
    assert list(report.forecasters) == ["earthformer", "persistence"]
    entry = report.forecasters["earthformer"]
    assert entry.kind == "deterministic" and entry.members == 1 and entry.rank_histogram is None
    frames = physical(dataset, 2)
    with torch.no_grad():
        forecast = model(torch.from_numpy(frames[:, :3] / 255.0).float()).sample.numpy() * 255.0
    metric = ContinuousScore(("mse",))
    metric.update(forecast, frames[:, 3:])
    assert entry.scores["mse"] == pytest.approx(metric.compute()["mse"], rel=1e-4)
    assert entry.scores["crps"] == pytest.approx(entry.scores["mae"], rel=1e-9)
    with pytest.raises(ValueError, match="knowledge control needs a PreDiff pipeline"):
        evaluate_pipeline(model, dataset, knowledge_control=IntensityControlSpec(target=10.0), progress=False)


def test_bad_datasets(pipe):
    with pytest.raises(ValueError, match=r"frames are \(H, W, C\) = \(16, 16, 1\).*\(32, 32, 1\)"):
        evaluate_pipeline(pipe, SyntheticStormDataset(1, 5, 16, 16, progress=False), progress=False)
    with pytest.raises(ValueError, match="T >= 5"):
        evaluate_pipeline(pipe, SyntheticStormDataset(1, 4, 32, 32, progress=False), progress=False)
    values = np.full((1, 5, 32, 32, 1), 900.0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"outside the pipeline's value_range \[0, 255\]"):
        evaluate_pipeline(pipe, ArraySequenceDataset(values, 5, value_range=(0, 1000)), progress=False)
    with pytest.raises(ValueError, match="num_sequences=5 exceeds"):
        evaluate_pipeline(pipe, storms(2), num_sequences=5, progress=False)
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate_pipeline(pipe, storms(1), baselines=("climatology",), progress=False)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset", "sevir"], "--dataset sevir needs --root"),
        (["--dataset", "no/such/file.h5"], "must be one of .* or an existing HDF5/zarr data file"),
        (["--dataset", "storms", "--thresholds", "a,b"], "--thresholds must be comma-separated floats"),
        (["--dataset", "storms", "--n-sigma", 2], "--n-sigma only apply with --knowledge-control"),
        (["--dataset", "storms", "--knowledge-control", "intensity", "--n-sigma", 2], "--intensity-mean"),
        (["--dataset", "storms", "--out", "EXISTING"], "already exist.*--overwrite"),
        (["--dataset", "NOT_HDF5"], r"cannot read .*notreally\.h5 as HDF5"),
        (["--dataset", "storms", "--event-probability", 0], r"event_probability must be in \(0, 1\], got 0"),
    ],
)
def test_command_errors(extra, message, pipe_dir, tmp_path, capsys):
    existing = tmp_path / "report.json"
    existing.write_text("{}")
    not_hdf5 = tmp_path / "notreally.h5"
    not_hdf5.write_text("text, not HDF5")
    extra = [{"EXISTING": existing, "NOT_HDF5": not_hdf5}.get(a, a) for a in extra]
    argv = ["evaluate", "--pipeline", pipe_dir, "--members", 1, "--steps", 1, "--num-sequences", 1]
    assert run_cli(argv + extra + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prediff evaluate: error:") and re.search(message, err), err
    assert existing.read_text() == "{}"


def test_pysteps_baselines_without_pysteps_fail_before_any_forecast(pipe, pipe_dir, capsys):
    if importlib.util.find_spec("pysteps") is not None:
        pytest.skip("pysteps is installed")
    # Values outside the pipeline's range: reading the first batch would raise a ValueError.
    values = np.full((1, 5, 32, 32, 1), 900.0, dtype=np.float32)
    dataset = ArraySequenceDataset(values, 5, value_range=(0, 1000))
    with pytest.raises(ImportError, match=r"'steps' baseline needs pysteps: pip install \"prediff\[pysteps\]\""):
        evaluate_pipeline(pipe, dataset, baselines=("persistence", "steps"), progress=False)
    argv = ["evaluate", "--pipeline", pipe_dir, "--dataset", "storms", "--baselines", "extrapolation"]
    assert run_cli(argv + ["--members", 1, "--steps", 1, "--num-sequences", 1, "--no-progress"]) == 2
    assert "prediff evaluate: error: the 'extrapolation' baseline needs pysteps" in capsys.readouterr().err


def test_pysteps_baselines_match_their_functions(pipe):
    pytest.importorskip("pysteps")
    from prediff.baselines import extrapolation, steps

    dataset = storms(2, seed=6)
    report = evaluate_pipeline(
        pipe,
        dataset,
        num_ensemble_members=2,
        num_inference_steps=1,
        baselines=("extrapolation", "steps"),
        pool_sizes=(1,),
        progress=False,
    )
    frames = physical(dataset, 2)
    expected, _ = direct_scores(extrapolation(frames[:, :3], 2), frames[:, 3:])
    assert report.forecasters["extrapolation"].scores["mae"] == pytest.approx(expected["mae"], rel=1e-5)
    ensemble = steps(frames[:, :3], 2, num_members=2, num_cascade_levels=3, seed=0, show_progress=False)
    crps = EnsembleCRPS()
    crps.update(ensemble, frames[:, 3:])
    entry = report.forecasters["steps"]
    assert entry.kind == "ensemble" and entry.members == 2
    assert entry.scores["crps"] == pytest.approx(crps.compute()["crps"], rel=1e-5)
