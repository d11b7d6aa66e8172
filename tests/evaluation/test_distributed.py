"""prediff evaluate and forecast across processes: real 2-process `accelerate launch` runs on CPU (gloo) score and
forecast like one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prediff.metrics import CategoricalScore, ContinuousScore, EnsembleCRPS, RankHistogram, SpreadSkill
from tests.conftest import run_cli
from tests.training.test_distributed import ENV

# Two processes and one compute the same functions, but not in the same float32 order: a process runs with a
# different number of threads (oneDNN/MKL split their reductions by thread) and on different batches (the same
# sequence lands in a batch of 2 in one run and of 1 in the other). Each re-ordered sum of n float32 terms moves by
# up to about n * 2**-24 of the sum of their magnitudes; through the encoder, the denoiser's steps and the decoder
# such differences reached 2e-4 levels on values of a few levels (relative 5e-4) between thread counts. Forecasts
# are therefore compared to FORECAST_ATOL = 1e-3 levels (4e-6 of the 0-255 range, 5 x the largest difference
# seen) plus FORECAST_RTOL = 1e-5 of their value. A score averages such values but its thresholds count pixels: a
# value within 1e-3 of a threshold may land on the other side, which moves a CSI of a few thousand pixels by
# about 1e-3, so scores are compared to SCORE_RTOL = 2e-3. A real split bug (a sequence dropped or doubled, a
# member seeded twice) moves them by tens of percent.
FORECAST_ATOL, FORECAST_RTOL, SCORE_RTOL = 1e-3, 1e-5, 2e-3
#: What a process prints when it aborts with a C++ thread still running at exit.
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"

# 3 sequences: the processes get 2 and 1, and batches of 2 and 1 differ from the single process's batches of 1.
EVALUATE = [
    "evaluate", "--dataset", "storms", "--num-sequences", "3", "--members", "2", "--steps", "2",
    "--knowledge-control", "intensity", "--no-progress",
]  # fmt: skip


def accelerate_launch(argv: list[str], port: int) -> subprocess.CompletedProcess:
    """`accelerate launch` of `prediff ARGV` on 2 CPU processes (gloo); skips without the launcher."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    launch = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "prediff",
    ]  # fmt: skip

    def run(*more: str) -> subprocess.CompletedProcess:
        # PYTHONFAULTHANDLER: a process that aborts prints where Python was.
        env = {**ENV, "ACCELERATE_USE_CPU": "true", "PYTHONFAULTHANDLER": "1"}
        command = launch + [str(a) for a in argv] + list(more)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)

    done = run()
    if done.returncode != 0 and GLOO_TEARDOWN_ABORT in done.stderr:
        # Known and not yet understood: on a loaded 2-core machine a process now and then aborts in gloo's C++
        # teardown (seen in 2 of 5 CI runs of the whole suite, never in 80 launches alone). Run once more, and say
        # so in the output; any other failure, or the abort twice, fails the test.
        print(f"retried after a gloo teardown abort:\n{done.stderr[-2000:]}")
        done = run("--overwrite")  # what the aborted run may have written completely
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_merged_metric_states_score_like_one_accumulation():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 255, (3, 2, 2, 16, 16, 1)).astype(np.float32)
    target = rng.uniform(0, 255, (3, 2, 16, 16, 1)).astype(np.float32)
    for make, ensemble in (
        (lambda: CategoricalScore((16.0, 74.0), (1, 4)), False),
        (lambda: ContinuousScore(), False),
        (lambda: EnsembleCRPS((1, 4)), True),
        (lambda: SpreadSkill(), True),
    ):
        forecast = pred if ensemble else pred.mean(axis=1)
        whole, first, second = make(), make(), make()
        whole.update(forecast, target)
        first.update(forecast[:2], target[:2])
        second.update(forecast[2:], target[2:])
        first.merge(second)
        for name, value in whole.compute(per_lead_time=True).items():
            np.testing.assert_allclose(first.compute(per_lead_time=True)[name], value, rtol=1e-12, err_msg=name)
    with pytest.raises(ValueError, match="cannot merge state 'counts' of shape"):
        histogram = RankHistogram()
        histogram.update(pred, target)
        other = RankHistogram()
        other.update(pred[:, :1], target)
        histogram.merge(other)
    # A correlation is not a sum over samples: such a metric says it cannot be merged.
    from prediff.metrics.enso import Nino34Score

    with pytest.raises(TypeError, match="Nino34Score cannot be merged across processes"):
        Nino34Score().merge(Nino34Score())


def test_two_processes_give_the_scores_of_one(pipe_dir, tmp_path):
    single = subprocess.run(
        [sys.executable, "-m", "prediff", *EVALUATE, "--batch-size", "1", "--pipeline", str(pipe_dir)]
        + ["--out", str(tmp_path / "single.json")],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    double = accelerate_launch(
        [*EVALUATE, "--batch-size", "2", "--pipeline", pipe_dir, "--out", tmp_path / "two.json"], port=29537
    )
    # The main process alone prints the table and writes the report.
    assert double.stdout.count("wrote ") == 1 and double.stdout.count("Evaluation of ") == 1, double.stdout
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("single.json", "two.json"))
    assert one["settings"]["num_processes"] == 1 and two["settings"]["num_processes"] == 2
    assert two["settings"]["num_sequences"] == 3
    assert list(two["forecasters"]) == ["prediff", "prediff+intensity", "persistence"]
    for name, expected in one["forecasters"].items():
        actual = two["forecasters"][name]
        assert actual["scores"].keys() == expected["scores"].keys()
        for score, value in expected["scores"].items():
            assert actual["scores"][score] == pytest.approx(value, rel=SCORE_RTOL, abs=1e-6), (name, score)
        for score, values in expected["per_lead_time"].items():
            np.testing.assert_allclose(actual["per_lead_time"][score], values, rtol=SCORE_RTOL, atol=1e-6)
        if expected["rank_histogram"] is not None:
            np.testing.assert_allclose(
                actual["rank_histogram"], expected["rank_histogram"], rtol=SCORE_RTOL, atol=1e-6
            )


def test_two_processes_forecast_a_folder_and_a_data_file_like_one(pipe_dir, tmp_path):
    rng = np.random.default_rng(0)
    contexts = (rng.uniform(0, 255, (3, 1, 3, 32, 32, 1))).astype(np.float32)
    folder = tmp_path / "contexts"
    folder.mkdir()
    for name, context in zip("abc", contexts):
        np.save(folder / f"{name}.npy", context)
    np.save(tmp_path / "many.npy", contexts[:, 0])  # one data file of 3 sequences
    options = ["--pipeline", pipe_dir, "--members", 2, "--steps", 2, "--no-plots", "--no-progress"]
    assert run_cli(["forecast", "--input", folder, "--out", tmp_path / "one", *options]) == 0
    assert run_cli(["forecast", "--input", tmp_path / "many.npy", "--out", tmp_path / "one.nc", *options]) == 0

    # A glob pattern over the folder, split across the processes, each file written once by one of them.
    done = accelerate_launch(["forecast", "--input", folder / "*.npy", "--out", tmp_path / "two", *options], 29541)
    assert done.stdout.count("wrote 3 forecasts into") == 1, done.stdout
    names = {p.name for p in (tmp_path / "two").iterdir()}
    assert names == {f"{n}.{suffix}" for n in "abc" for suffix in ("nc", "npy")}, names
    for name in "abc":
        np.testing.assert_allclose(
            np.load(tmp_path / "two" / f"{name}.npy"),
            np.load(tmp_path / "one" / f"{name}.npy"),
            rtol=FORECAST_RTOL,
            atol=FORECAST_ATOL,
        )

    # The sequences of one file, split across the processes and gathered into one output.
    done = accelerate_launch(
        ["forecast", "--input", tmp_path / "many.npy", "--out", tmp_path / "two.nc", *options], 29543
    )
    assert done.stdout.count("wrote ") == 2, done.stdout  # the forecast and its pysteps array, once
    two, one = np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy")
    assert two.shape == one.shape == (3, 2, 2, 32, 32)
    np.testing.assert_allclose(two, one, rtol=FORECAST_RTOL, atol=FORECAST_ATOL)
