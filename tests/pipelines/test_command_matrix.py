"""Every way in works: `prediff forecast`, `prediff evaluate` (1 and 2 processes) and `load_forecast_pipeline`
with every kind of pipeline a user can name.

The cases: each pipeline shipped with the package; saved PreDiff pipelines with and without a motion
extrapolator and with and without a knowledge-alignment network; a saved Earthformer pipeline and a bare
`EarthformerModel` folder; and a Hub repository id served offline from a local Hugging Face cache. Every case
writes a forecast (netCDF and the pysteps `.npy`) or a score file (JSON) that is read back and checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from prediff.data.io import write_sequences
from prediff.metrics.defaults import RAIN_RATE_THRESHOLDS
from prediff.models import EarthformerModel, EarthformerUNetModel, MotionExtrapolator
from prediff.pipelines import EarthformerPipeline, PreDiffPipeline
from prediff.pipelines.loading import carries_weights, load_forecast_pipeline
from prediff.pipelines.processes import member_generators
from prediff.pretrained import SHIPPED_PIPELINES, load_shipped_pipeline
from prediff.schedulers import prediff_scheduler
from tests.conftest import run_cli
from tests.evaluation.test_distributed import accelerate_launch
from tests.training.test_distributed import ENV

#: Pipelines saved by the tests (tiny, untrained, 3 -> 2 frames of 32x32), by case name.
SAVED = (
    "saved-prediff",
    "saved-prediff+knowledge",
    "saved-prediff+extrapolator",
    "saved-prediff+extrapolator+knowledge",
    "saved-earthformer",
    "bare-earthformer-model",
)
#: The Hub case serves this saved pipeline (the README's recipe: an extrapolator and a knowledge model).
HUB = "hub-offline"
HUB_SOURCE = "saved-prediff+extrapolator+knowledge"
HUB_REPO = "prediff-tests/storms-extrapolating"
HUB_PARTIAL_REPO = "prediff-tests/partly-cached"
CASES = (*SHIPPED_PIPELINES, *SAVED, HUB)
#: 2-process evaluation is slow (two interpreters): the shipped default, which has an extrapolator and a knowledge
#: model (tests/evaluation/test_distributed.py evaluates a saved folder on two processes).
TWO_PROCESS_CASES = {"prediff-storms-tiny": 29571}

FORECAST_OPTIONS = ["--members", 2, "--steps", 2, "--seed", 0, "--no-plots", "--no-progress"]
EVALUATE_OPTIONS = [
    "--dataset", "storms", "--num-sequences", 2, "--members", 2, "--steps", 2, "--batch-size", 2, "--no-progress",
]  # fmt: skip


@dataclass
class Case:
    """A pipeline as a user names it (`pipeline`), and what loading it must give (`reference`)."""

    pipeline: str
    reference: PreDiffPipeline | EarthformerPipeline

    @property
    def is_prediff(self) -> bool:
        return isinstance(self.reference, PreDiffPipeline)

    @property
    def members(self) -> int:
        return 2 if self.is_prediff else 1  # an Earthformer forecast is deterministic: one member

    def context(self, seed: int = 0) -> np.ndarray:
        """`(T_in, H, W)` context frames in the pipeline's range (VIL levels 0-200)."""
        t_in, height, width, _ = self.reference.context_shape
        return (np.random.default_rng(seed).random((t_in, height, width)) * 200).astype(np.float32)


def _save(pipeline: PreDiffPipeline | EarthformerPipeline, folder: Path) -> PreDiffPipeline | EarthformerPipeline:
    pipeline.save_pretrained(folder)
    return pipeline


@pytest.fixture(scope="module")
def cases(pipe_dir, tmp_path_factory) -> dict[str, Case]:
    """Every case, each folder saved once."""
    root = tmp_path_factory.mktemp("matrix")
    torch.manual_seed(0)
    found = {name: Case(name, load_shipped_pipeline(name)) for name in SHIPPED_PIPELINES}
    # `pipe_dir` is the "prediff-tiny" preset: a knowledge model, no extrapolator.
    base = PreDiffPipeline.from_pretrained(pipe_dir)
    found["saved-prediff+knowledge"] = Case(str(pipe_dir), base)
    plain = PreDiffPipeline(base.vae, base.unet, base.scheduler)
    found["saved-prediff"] = Case(str(root / "plain"), _save(plain, root / "plain"))
    # With an extrapolator the denoiser is conditioned on 3 context + 2 extrapolated frames.
    unet = EarthformerUNetModel(
        input_shape=(5, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=16, depth=(1, 1), num_heads=2
    ).eval()
    extrapolator = MotionExtrapolator(num_iterations=5)
    for name, knowledge in (("extrapolator", None), ("extrapolator+knowledge", base.knowledge_model)):
        pipeline = PreDiffPipeline(
            base.vae, unet, prediff_scheduler("ddim"), knowledge_model=knowledge, extrapolator=extrapolator
        )
        found[f"saved-prediff+{name}"] = Case(str(root / name), _save(pipeline, root / name))
    model = EarthformerModel(
        input_shape=(3, 32, 32, 1), target_shape=(2, 32, 32, 1), base_units=16, num_heads=2,
        enc_depth=(1, 1), dec_depth=(1, 1),
    ).eval()  # fmt: skip
    earthformer = _save(EarthformerPipeline(model), root / "earthformer")
    found["saved-earthformer"] = Case(str(root / "earthformer"), earthformer)
    model.save_pretrained(root / "model")
    found["bare-earthformer-model"] = Case(str(root / "model"), EarthformerPipeline(model))
    found[HUB] = Case(HUB_REPO, found[HUB_SOURCE].reference)
    assert set(found) == set(CASES)
    return found


# ------------------------------------------------------------------------------------------------ the Hub case


#: Run in a fresh interpreter, where the Hugging Face environment variables are read at import time.
HUB_SCRIPT = """
import json, sys
import numpy as np, torch
from prediff import cli
from prediff.pipelines.loading import load_forecast_pipeline

repo, context, out = sys.argv[1:4]
forecast_options, evaluate_options = map(json.loads, sys.argv[4:6])
forecast = ["forecast", "--pipeline", repo, "--input", context, "--out", out + "/forecast.nc"]
evaluate = ["evaluate", "--pipeline", repo, "--out", out + "/scores.json"]
status = {"forecast": cli.main(forecast + forecast_options), "evaluate": cli.main(evaluate + evaluate_options)}
pipeline = load_forecast_pipeline(repo)
pipeline.set_progress_bar_config(disable=True)
frames = pipeline(np.load(context)[None, ..., None], num_inference_steps=2, num_ensemble_members=2).frames
np.save(out + "/python.npy", frames)
modules = {n: c for n, c in pipeline.components.items() if isinstance(c, torch.nn.Module)}
torch.save({f"{n}.{k}": v for n, c in modules.items() for k, v in c.state_dict().items()}, out + "/state.pt")
try:  # a cached snapshot that holds only part of its repository
    load_forecast_pipeline(sys.argv[6])
    partial = None
except (FileNotFoundError, ValueError) as error:
    partial = f"{type(error).__name__}: {error}"
record = {
    "partial": partial,
    "status": status,
    "class": type(pipeline).__name__,
    "name_or_path": pipeline.config._name_or_path,
    "components": {n: type(c).__name__ for n, c in pipeline.components.items() if c is not None},
}
with open(out + "/python.json", "w") as f:
    json.dump(record, f)
"""


@pytest.fixture(scope="module")
def hub_run(cases, tmp_path_factory) -> Path:
    """Forecast, evaluate and load `HUB_REPO` in one offline subprocess; returns the folder of its outputs.

    The cache is laid out as `huggingface_hub` writes it: `models--owner--name/refs/main` holds the commit,
    `models--owner--name/snapshots/<commit>/` the files. No endpoint is reachable, and HF_HUB_OFFLINE=1.
    """
    root = tmp_path_factory.mktemp("hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo in (HUB_REPO, HUB_PARTIAL_REPO):
        repo_cache = root / "home" / "hub" / f"models--{repo.replace('/', '--')}"
        snapshot = repo_cache / "snapshots" / commit
        if repo == HUB_REPO:
            shutil.copytree(cases[HUB_SOURCE].pipeline, snapshot)
        else:  # what a download interrupted after the index leaves
            snapshot.mkdir(parents=True)
            shutil.copy(Path(cases[HUB_SOURCE].pipeline) / "model_index.json", snapshot)
        (repo_cache / "refs").mkdir()
        (repo_cache / "refs" / "main").write_text(commit)
    out = root / "out"
    out.mkdir()
    np.save(root / "ctx.npy", cases[HUB].context())
    env = {
        **ENV,
        "HF_HOME": str(root / "home"),
        "HF_HUB_CACHE": str(root / "home" / "hub"),
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # the discard port: any request that slipped through would fail
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [HUB_REPO, root / "ctx.npy", out, json.dumps(list(map(str, FORECAST_OPTIONS)))]
    argv += [json.dumps(list(map(str, EVALUATE_OPTIONS))), HUB_PARTIAL_REPO]
    # Run from an empty folder, so the repository id cannot be read as a local path.
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, *map(str, argv)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


# ------------------------------------------------------------------------------------------------ checks


def check_forecast(case: Case, out: Path, context: np.ndarray) -> None:
    """The netCDF forecast and its pysteps `.npy` array: shapes, the context, the pipeline, and the values of the
    reference pipeline's own forecast with the command's seeds (so the command loaded that pipeline)."""
    t_out, height, width, _ = case.reference.forecast_shape
    steps_layout = np.load(out.with_suffix(".npy"), allow_pickle=False)
    assert steps_layout.shape == (case.members, t_out, height, width)
    np.testing.assert_allclose(steps_layout, reference_forecast(case, context), rtol=1e-5, atol=1e-3)
    xr = pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    with xr.open_dataset(out) as ds:
        assert ds["forecast"].dims == ("member", "time", "y", "x")
        np.testing.assert_array_equal(ds["forecast"].values, steps_layout)
        np.testing.assert_array_equal(ds["context"].values, context)
        assert ds.attrs["pipeline_class"] == type(case.reference).__name__
        assert ds.attrs["members"] == case.members and list(ds.attrs["lead_times"]) == list(range(1, t_out + 1))


def reference_forecast(case: Case, context: np.ndarray) -> np.ndarray:
    """`(members, T_out, H, W)`: the forecast of `case.reference` from `(T_in, H, W)` frames, seeded as the
    command seeds member m of sample 0 with `--seed 0`."""
    reference = case.reference
    if not case.is_prediff:
        return reference(context[None, ..., None]).frames[..., 0]
    reference.set_progress_bar_config(disable=True)
    generators = member_generators(0, [0], case.members)
    frames = reference(context[None, ..., None], num_inference_steps=2, num_ensemble_members=2, generator=generators)
    return frames.frames[0, ..., 0]


def rain_rate_file(case: Case, path: Path) -> Path:
    """A sequence file of 2 sequences of rain rate in mm/h (0-50, a third dry) at the pipeline's grid and clock,
    recording no value range, as `prediff data radar` writes them."""
    t_in, height, width, channels = case.reference.context_shape
    shape = (t_in + case.reference.forecast_shape[0], height, width, channels)
    rng = np.random.default_rng(0)
    rates = (rng.random((2, *shape)) * 50).astype(np.float32)
    rates[rng.random(rates.shape) < 0.33] = 0.0
    metadata = {"units": "mm/h", "pixel_size_km": case.reference.pixel_size_km}
    metadata["frame_interval_minutes"] = case.reference.frame_interval_minutes
    return write_sequences(path, iter(rates), 2, shape, dtype=np.float32, metadata=metadata, progress=False)


def check_report(case: Case, path: Path, num_processes: int = 1) -> dict[str, Any]:
    """The JSON score file: settings, the forecasters, finite scores with one value per lead time."""
    report = json.loads(path.read_text())
    settings = report["settings"]
    t_out, height, width, channels = case.reference.forecast_shape
    assert settings["pipeline"] == case.pipeline and settings["pipeline_class"] == type(case.reference).__name__
    assert settings["num_processes"] == num_processes and settings["num_sequences"] == 2
    assert settings["context_frames"] == case.reference.context_shape[0] and settings["forecast_frames"] == t_out
    assert settings["frame_shape"] == [height, width, channels]
    name = "prediff" if case.is_prediff else "earthformer"
    assert list(report["forecasters"]) == [name, "persistence"]
    entry = report["forecasters"][name]
    assert entry["members"] == case.members
    assert entry["kind"] == ("ensemble" if case.is_prediff else "deterministic")
    for score in ("mse", "mae", "crps", "csi_m"):
        assert np.isfinite(entry["scores"][score]) and len(entry["per_lead_time"][score]) == t_out, score
    return report


# ------------------------------------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("case", CASES)
def test_forecast(case, cases, request, tmp_path):
    matrix_case = cases[case]
    context = matrix_case.context()
    if case == HUB:
        hub_run = request.getfixturevalue("hub_run")  # one subprocess serves the three Hub tests
        assert json.loads((hub_run / "python.json").read_text())["status"]["forecast"] == 0
        out = hub_run / "forecast.nc"
    else:
        np.save(tmp_path / "ctx.npy", context)
        out = tmp_path / "forecast.nc"
        argv = ["forecast", "--pipeline", matrix_case.pipeline, "--input", tmp_path / "ctx.npy", "--out", out]
        assert run_cli(argv + FORECAST_OPTIONS) == 0
    check_forecast(matrix_case, out, context)


@pytest.mark.parametrize("case", CASES)
def test_evaluate(case, cases, request, tmp_path):
    matrix_case = cases[case]
    if case == HUB:
        hub_run = request.getfixturevalue("hub_run")  # one subprocess serves the three Hub tests
        assert json.loads((hub_run / "python.json").read_text())["status"]["evaluate"] == 0
        out = hub_run / "scores.json"
    else:
        out = tmp_path / "scores.json"
        options = list(EVALUATE_OPTIONS)
        if matrix_case.reference.value_transform is not None:
            # A rain-rate pipeline is scored on a sequence file of rain rate in mm/h, not on VIL storms.
            options[options.index("storms")] = rain_rate_file(matrix_case, tmp_path / "rain.h5")
        assert run_cli(["evaluate", "--pipeline", matrix_case.pipeline, "--out", out, *options]) == 0
    report = check_report(matrix_case, out)
    if matrix_case.reference.value_transform is not None:
        assert report["settings"]["thresholds"] == list(RAIN_RATE_THRESHOLDS)
        assert report["settings"]["value_range"] == pytest.approx(matrix_case.reference.physical_range)


@pytest.mark.parametrize("case", CASES)
def test_load_forecast_pipeline(case, cases, request):
    matrix_case = cases[case]
    reference = matrix_case.reference
    expected_components = {name: type(c).__name__ for name, c in reference.components.items() if c is not None}
    if case == HUB:
        hub_run = request.getfixturevalue("hub_run")
        record = json.loads((hub_run / "python.json").read_text())
        assert record["class"] == type(reference).__name__ and record["components"] == expected_components
        assert record["name_or_path"] == HUB_REPO
        state = torch.load(hub_run / "state.pt", weights_only=True)
        frames = np.load(hub_run / "python.npy")
    else:
        pipeline = load_forecast_pipeline(matrix_case.pipeline)
        assert type(pipeline) is type(reference)
        assert {name: type(c).__name__ for name, c in pipeline.components.items() if c is not None} == (
            expected_components
        )
        state = {
            f"{name}.{key}": value
            for name, component in pipeline.components.items()
            if isinstance(component, torch.nn.Module)
            for key, value in component.state_dict().items()
        }
        context = matrix_case.context()[None, ..., None]
        if matrix_case.is_prediff:
            pipeline.set_progress_bar_config(disable=True)
            frames = pipeline(context, num_inference_steps=2, num_ensemble_members=2).frames
        else:
            frames = pipeline(context).frames
    # The weights are those that were saved (or shipped), every one of them.
    expected = {
        f"{name}.{key}": value
        for name, component in reference.components.items()
        if isinstance(component, torch.nn.Module)
        for key, value in component.state_dict().items()
    }
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    leading = (1, 2) if matrix_case.is_prediff else (1,)
    assert frames.shape == (*leading, *reference.forecast_shape) and np.isfinite(frames).all()
    # The completeness check asks each component class whether it carries weights: the answer must be true.
    for name, component in reference.components.items():
        if component is not None:
            has_state = isinstance(component, torch.nn.Module) and bool(component.state_dict())
            assert carries_weights(type(component)) == has_state, name


@pytest.mark.parametrize("case", list(TWO_PROCESS_CASES))
def test_evaluate_on_two_processes(case, cases, tmp_path):
    matrix_case = cases[case]
    argv = ["evaluate", "--pipeline", matrix_case.pipeline, *EVALUATE_OPTIONS, "--out"]
    assert run_cli(argv + [tmp_path / "one.json"]) == 0
    done = accelerate_launch(argv + [tmp_path / "two.json"], TWO_PROCESS_CASES[case])
    assert done.stdout.count("wrote ") == 1, done.stdout  # the main process alone writes the report
    one = check_report(matrix_case, tmp_path / "one.json")
    two = check_report(matrix_case, tmp_path / "two.json", num_processes=2)
    # Each process forecasts 1 of the 2 sequences: float32 sums in another order and batch make forecasts that
    # differ by a few 1e-4 relative, and errors averaged over many pixels move by no more than that. Threshold
    # scores (CSI) can flip where a pixel sits on a threshold, so only the continuous scores are compared.
    for name, entry in one["forecasters"].items():
        for score in ("mse", "mae", "crps"):
            assert two["forecasters"][name]["scores"][score] == pytest.approx(entry["scores"][score], rel=2e-3)


# ------------------------------------------------------------------------------------------------ the folder check


def test_a_partly_cached_hub_repository_is_named(request):
    partial = json.loads((request.getfixturevalue("hub_run") / "python.json").read_text())["partial"]
    assert partial is not None and partial.startswith("FileNotFoundError: pipeline folder"), partial
    assert partial.endswith(
        "is incomplete: missing extrapolator/config.json, knowledge_model/config.json, "
        "scheduler/scheduler_config.json, unet/config.json, vae/config.json"
    ), partial


def _drop(*patterns: str):
    def edit(folder: Path) -> None:
        for pattern in patterns:
            for path in folder.glob(pattern):
                path.unlink()

    return edit


def _record(**entries: Any):
    def edit(folder: Path) -> None:
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, **entries}))

    return edit


def _pickle_only(folder: Path) -> None:
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop("knowledge_model/*.safetensors"), r"missing knowledge_model/\*\.safetensors \(weights of Knowledge"),
        (_drop("extrapolator/config.json"), r"missing extrapolator/config\.json$"),
        (_drop("scheduler/*"), r"missing scheduler/scheduler_config\.json$"),
        (_pickle_only, r"missing unet/\*\.safetensors .*\(only pickle \.bin files, which are not loaded\)$"),
        (
            _record(extrapolator=["prediff.models.extrapolation", "MotionExtrapolatorV2"]),
            r"component 'extrapolator' is prediff\.models\.extrapolation\.MotionExtrapolatorV2; a pipeline loads",
        ),
        (_record(extrapolator=["os", "system"]), r"component 'extrapolator' is os\.system; a pipeline loads only"),
    ],
    ids=[
        "no-knowledge-weights",
        "no-extrapolator-config",
        "no-scheduler-config",
        "pickle-only",
        "unknown-class",
        "unknown-library",
    ],
)
def test_a_broken_folder_is_named_in_one_line(edit, message, cases, tmp_path, capsys):
    folder = tmp_path / "pipeline"
    shutil.copytree(cases["saved-prediff+extrapolator+knowledge"].pipeline, folder)
    edit(folder)
    np.save(tmp_path / "ctx.npy", cases["saved-prediff+extrapolator+knowledge"].context())
    out = tmp_path / "forecast.nc"
    argv = ["forecast", "--pipeline", folder, "--input", tmp_path / "ctx.npy", "--out", out, *FORECAST_OPTIONS]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prediff forecast: error:") and "\n" not in err, err
    assert re.search(message, err), err
    # The extrapolator has no weights to miss: it is never named for them.
    assert "extrapolator/*.safetensors" not in err
    assert not out.exists()


def test_an_option_shaped_like_a_component_is_not_a_file(cases, tmp_path):
    # `units` is an option of the pipeline, whatever its value looks like: no units/ folder is wanted.
    folder = tmp_path / "pipeline"
    shutil.copytree(cases["saved-prediff+extrapolator"].pipeline, folder)
    _record(units=["prediff.__main__", "main"])(folder)
    assert load_forecast_pipeline(folder).config.units == ["prediff.__main__", "main"]
