"""Two `prediff forecast` processes aimed at the same `--out`: one writes, the other refuses with one line and
exit status 2, and no torn or mixed file is left; a writer killed with SIGKILL blocks no later run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# One thread per process: two forecasts share two cores, and their floats do not depend on the thread count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
for _name in ("PREDIFF_FAULT_INJECT", "PREDIFF_FAULT_SIGNAL", "PREDIFF_TRACEBACK"):
    ENV.pop(_name, None)
LOCKED = "is being written by process"


def _forecast(pipe_dir: Path, context: Path, out: Path, *extra: str, **env: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "prediff", "forecast", "--pipeline", str(pipe_dir), "--input", str(context),
        "--out", str(out), "--members", "2", "--steps", "2", "--seed", "3", "--no-plots", "--no-progress", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def _outputs(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The forecast of `out` (netCDF) and its pysteps array; both must be complete, readable files."""
    import xarray as xr

    with xr.open_dataset(out) as ds:
        forecast = ds["forecast"].values
    return forecast, np.load(out.with_suffix(".npy"))


def _assert_same(out: Path, alone: Path) -> None:
    for got, expected in zip(_outputs(out), _outputs(alone)):
        np.testing.assert_array_equal(got, expected)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ctx") / "ctx.npy"
    np.save(path, np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def alone(pipe_dir, context, tmp_path_factory) -> Path:
    """The forecast made by one process with no other writer around."""
    out = tmp_path_factory.mktemp("alone") / "ens.nc"
    status, err = _finish(_forecast(pipe_dir, context, out))
    assert status == 0, err
    return out


def _assert_refused(status: int, err: str, *reasons: str) -> str:
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("prediff forecast: error: "), err
    assert any(reason in lines[0] for reason in reasons), err
    return lines[0]


@pytest.mark.slow
def test_two_forecasts_started_together_one_writes_and_the_other_refuses(pipe_dir, context, alone, tmp_path):
    out = tmp_path / "ens.nc"
    first, second = _forecast(pipe_dir, context, out), _forecast(pipe_dir, context, out)
    results = [_finish(first), _finish(second)]
    assert sorted(status for status, _ in results) == [0, 2], results
    # The loser met the lock if it came while the winner was writing, else the finished output (no
    # --overwrite); either way it wrote nothing.
    _assert_refused(*max(results), LOCKED, "already exist")
    _assert_same(out, alone)
    assert _hidden(tmp_path) == []  # no lock file, no temporary left


@pytest.mark.slow
def test_a_forecast_started_while_another_writes_refuses_and_a_killed_writer_blocks_nothing(
    pipe_dir, context, alone, tmp_path
):
    out = tmp_path / "ens.nc"
    lock = tmp_path / ".ens.nc.lock"
    # The first writer stops itself half-way: its forecast file is written, its pysteps array is not.
    first = _forecast(pipe_dir, context, out, PREDIFF_FAULT_INJECT="forecast-write", PREDIFF_FAULT_SIGNAL="SIGSTOP")
    _, status = os.waitpid(first.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), first.communicate()
    assert out.is_file() and not out.with_suffix(".npy").exists()
    assert lock.read_text().strip() == str(first.pid)

    # A second one, even with --overwrite, refuses at once and touches nothing.
    before = out.stat()
    status, err = _finish(_forecast(pipe_dir, context, out, "--overwrite"))
    line = _assert_refused(status, err, f"{LOCKED} {first.pid}")
    assert str(out) in line and str(lock) in line
    assert out.stat().st_ino == before.st_ino and not out.with_suffix(".npy").exists()

    first.send_signal(signal.SIGCONT)
    assert _finish(first)[0] == 0
    _assert_same(out, alone)
    assert _hidden(tmp_path) == []

    # A writer killed while it holds the lock leaves its lock file, unlocked, and whole files: the old pysteps
    # array and the new forecast. The next run is not blocked.
    killed = _forecast(pipe_dir, context, out, "--overwrite", "--seed", "4", PREDIFF_FAULT_INJECT="forecast-write")
    assert _finish(killed)[0] == -signal.SIGKILL
    assert lock.exists()
    forecast, pysteps = _outputs(out)
    assert not np.array_equal(forecast, _outputs(alone)[0]) and np.array_equal(pysteps, _outputs(alone)[1])
    status, err = _finish(_forecast(pipe_dir, context, out, "--overwrite"))
    assert status == 0, err
    _assert_same(out, alone)
    assert _hidden(tmp_path) == []
