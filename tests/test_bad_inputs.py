"""Hostile files and careless hands: every bad input a user or an attacker can give prediff.

Model side: pipelines, saved folders, sizes, the command line, training runs. Data side: catalogs, headers and
stores that lie, outputs over inputs; each case builds the real file (CSV catalog, HDF5, netCDF, zarr, .npy /
.npz, YAML). Every case expects a clear error (naming the field, file, line, option or size) or a clear warning,
and checks that nothing outside the intended folder was written or changed.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")
netCDF4 = pytest.importorskip("netCDF4")
zarr = pytest.importorskip("zarr")

from prediff.cli import _one_line  # noqa: E402
from prediff.data import ArraySequenceDataset, ENSODataset, SEVIRDataset  # noqa: E402
from prediff.models import EarthformerModel, EarthformerUNetModel  # noqa: E402
from prediff.models.autoencoder import autoencoder_from_preset  # noqa: E402
from prediff.models.modeling_utils import check_model_config_memory  # noqa: E402
from prediff.pipelines import PREDIFF_PIPELINE_PRESETS, EarthformerPipeline, PreDiffPipeline  # noqa: E402
from prediff.pipelines.context_io import read_context  # noqa: E402
from prediff.schedulers import prediff_scheduler  # noqa: E402
from prediff.training import EarthformerTrainer, list_checkpoints  # noqa: E402
from prediff.training.checkpointing import load_checkpoint, remove_stale_temporaries, save_checkpoint  # noqa: E402
from prediff.training.config_loading import MAX_YAML_VALUES, load_config, parse_override_args  # noqa: E402
from prediff.training.exporting import EXPORT_LAST, EXPORT_PREFIX  # noqa: E402
from prediff.utils.files import move_into  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.training.test_trainers import TINY, tiny  # noqa: E402

# One thread per process: subprocesses share the cores of a small machine without oversubscription.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
#: The tiny Earthformer of the synthetic-tiny recipe, with dropout everywhere.
EARTHFORMER_TINY = dict(
    input_shape=(3, 32, 32, 1),
    target_shape=(2, 32, 32, 1),
    base_units=16,
    num_heads=2,
    enc_depth=(1, 1),
    dec_depth=(1, 1),
    initial_downsample_scale=2,
    initial_downsample_conv_layers=1,
    final_upsample_conv_layers=1,
    attn_drop=0.1,
    proj_drop=0.1,
    ffn_drop=0.1,
)


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`module` with random noise on every parameter: untrained networks zero their residual branches and output
    layers, so dropout would not show in their output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return module


def _fresh_prediff() -> PreDiffPipeline:
    """A tiny PreDiff pipeline of freshly built modules, all in training mode as constructors leave them."""
    torch.manual_seed(0)
    unet = _perturbed(EarthformerUNetModel(**PREDIFF_PIPELINE_PRESETS["prediff-tiny"]["unet"]))
    pipe = PreDiffPipeline(autoencoder_from_preset("prediff-tiny").train(), unet, prediff_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fresh_earthformer(value_range: tuple[float, float] = (0.0, 255.0)) -> EarthformerPipeline:
    torch.manual_seed(0)
    return EarthformerPipeline(_perturbed(EarthformerModel(**EARTHFORMER_TINY)), value_range=value_range)


def _forecast(pipe, context: np.ndarray) -> np.ndarray:
    if isinstance(pipe, EarthformerPipeline):
        return pipe(context).frames
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    return pipe(context, num_inference_steps=2, num_ensemble_members=2, generator=generators).frames


CONTEXT = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32)


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pipe"
    shutil.copytree(folder, target)
    return target


def _edit_json(path: Path, **entries) -> None:
    data = json.loads(path.read_text())
    data.update(entries)
    path.write_text(json.dumps(data))


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode) for p in (folder, *folder.rglob("*"))}


# ------------------------------------------------------------------------------------------ 1. evaluation mode


@pytest.mark.parametrize("build", [_fresh_prediff, _fresh_earthformer], ids=["prediff", "earthformer"])
def test_fresh_pipelines_forecast_without_dropout_and_round_trip(build, tmp_path):
    pipe = build()
    networks = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert all(m.training for m in networks)
    first = _forecast(pipe, CONTEXT)
    np.testing.assert_array_equal(_forecast(pipe, CONTEXT), first)
    # The modules are back in training mode: a training loop that forecasts goes on training.
    assert all(m.training for m in networks)
    pipe.save_pretrained(tmp_path / "saved")
    loaded = type(pipe).from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(_forecast(loaded, CONTEXT), first, rtol=1e-5, atol=1e-3)


def test_every_module_gets_its_own_mode_back():
    pipe = _fresh_earthformer()
    pipe.model.initial_encoder.eval()
    before = {name: m.training for name, m in pipe.model.named_modules()}
    assert True in before.values() and False in before.values()
    _forecast(pipe, CONTEXT)
    assert {name: m.training for name, m in pipe.model.named_modules()} == before


# ------------------------------------------------------------------------------------------ 2. value range


@pytest.mark.parametrize(
    "value_range, context",
    [
        ((0.0, 1.0), CONTEXT),  # VIL 0-255 given to a pipeline of [0, 1] data
        ((0.0, 255.0), CONTEXT / 25.5 - 5.0),  # standardised data given to a 0-255 pipeline
    ],
    ids=["too-large", "negative"],
)
def test_a_context_outside_the_value_range_warns_once_per_call(value_range, context):
    pipe = _fresh_earthformer(value_range)
    expected = f"context values span [{context.min():g}, {context.max():g}], outside the pipeline's value_range "
    expected += f"[{value_range[0]:g}, {value_range[1]:g}]"
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe(torch.from_numpy(context))
        ours = [w for w in caught if "value_range" in str(w.message)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        assert str(ours[0].message).startswith(expected)
        assert ours[0].filename == __file__  # points at the caller's line


def test_a_context_inside_the_value_range_does_not_warn():
    pipe = _fresh_earthformer()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*value_range")
        for context in (CONTEXT, np.zeros_like(CONTEXT), np.full_like(CONTEXT, 255.0)):
            pipe(context)


# ------------------------------------------------------------------------------------------ 4. permissions


@pytest.mark.parametrize("existing", [True, False], ids=["into-a-populated-folder", "into-a-new-folder"])
def test_save_pretrained_touches_only_what_it_writes(existing, tmp_path, umask_027):
    folder = tmp_path / "work"
    if existing:
        (folder / ".git" / "hooks").mkdir(parents=True)
        (folder / "notes").mkdir()
        for path, mode in [
            (folder / "key.pem", 0o600),
            (folder / "run.sh", 0o755),
            (folder / ".git" / "hooks" / "pre-commit", 0o755),
            (folder / "notes" / "todo.txt", 0o604),
        ]:
            path.write_text("mine")
            path.chmod(mode)
        (folder / "notes").chmod(0o700)
        folder.chmod(0o700)
    before = _modes(folder) if existing else {}
    for _ in range(2):  # the second save rewrites the first one's files
        _fresh_earthformer().save_pretrained(folder)
        after = _modes(folder)
        assert {k: after[k] for k in before} == before
        written = {k: v for k, v in after.items() if k not in before}
        assert written and set(written.values()) <= {0o640, 0o750}, written
        assert {"model_index.json", "README.md", "model", "model/config.json"} <= set(written)


# ------------------------------------------------------------------------------------------ 5. model_index.json


def test_a_component_name_cannot_lead_outside_the_pipeline(pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    shutil.copytree(folder / "unet", tmp_path / "other" / "unet")
    index = json.loads((folder / "model_index.json").read_text())
    index["../other/unet"] = index.pop("unet")
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model_index.json has unknown entries \['../other/unet'\]"):
        PreDiffPipeline.from_pretrained(folder)


def test_a_component_folder_linked_outside_the_pipeline_is_refused(pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    shutil.move(folder / "unet", tmp_path / "elsewhere")
    (folder / "unet").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match=r"component folder .*unet leads outside the pipeline folder"):
        PreDiffPipeline.from_pretrained(folder)


@pytest.mark.parametrize(
    "entry",
    [
        ["prediff.__main__", "EarthformerUNetModel"],  # importing it used to run the prediff command
        ["prediff.__main__", "main"],
        ["prediff.training.trainer", "Trainer"],
        ["diffusers", "UNet2DConditionModel"],  # a Diffusers model, but not a part of these pipelines
        ["diffusers", "DiffusionPipeline"],
        ["os", "system"],
    ],
    ids=lambda entry: ".".join(entry),
)
def test_only_known_component_classes_load(entry, pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    _edit_json(folder / "model_index.json", unet=entry)
    with pytest.raises(ValueError, match=rf"component 'unet' is {'.'.join(entry)}; a pipeline loads only .*"):
        PreDiffPipeline.from_pretrained(folder)


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"extra_option": 1}, r"unknown entries \['extra_option'\]; a PreDiffPipeline has the components"),
        ({"unet": "EarthformerUNetModel"}, r"component 'unet' must be \[library, class name\]"),
        ({"units": ["prediff.__main__", "main"]}, None),  # an option, never loaded as a component
    ],
    ids=["extra-key", "malformed-component", "option-shaped-like-a-component"],
)
def test_model_index_entries_are_checked(edit, match, pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    _edit_json(folder / "model_index.json", **edit)
    if match is None:
        assert PreDiffPipeline.from_pretrained(folder).config.units == ["prediff.__main__", "main"]
    else:
        with pytest.raises(ValueError, match=match):
            PreDiffPipeline.from_pretrained(folder)


def test_a_model_index_that_is_not_json_names_the_file(pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    (folder / "model_index.json").write_bytes(b"\x93NUMPY not json")
    with pytest.raises(ValueError, match=r"model_index.json is not valid JSON"):
        PreDiffPipeline.from_pretrained(folder)


def test_importing_prediff_main_does_not_run_the_command():
    module = importlib.import_module("prediff.__main__")
    assert callable(module.main)


# ------------------------------------------------------------------------------------------ 8. sizes


@pytest.mark.parametrize(
    "file, entries, match",
    [
        ("unet/config.json", {"base_units": 10**9}, r"base_units=1000000000.* more than 2\*\*63 bytes"),
        (
            "unet/config.json",
            {"input_shape": [3, 100000, 100000, 4], "target_shape": [2, 100000, 100000, 4]},
            r"EarthformerUNetModel\(.*input_shape=\[3, 100000, 100000, 4\].*\) in .*unet/config.json would need "
            r"[\d.]+ GiB of memory, more than this machine's",
        ),
        (
            "vae/config.json",
            {"block_out_channels": [10**9] * 3},
            r"AutoencoderKL\(block_out_channels=\[1000000000, .*vae/config.json",
        ),
        (
            "scheduler/scheduler_config.json",
            {"num_train_timesteps": 10**9},
            r"num_train_timesteps=1000000000 \(about 59.6 GiB of noise schedule arrays\) must be an integer",
        ),
        ("scheduler/scheduler_config.json", {"num_train_timesteps": "many"}, r"num_train_timesteps='many'"),
    ],
    ids=["base_units", "input_shape", "vae-widths", "train-timesteps", "timesteps-not-a-number"],
)
def test_absurd_sizes_in_a_saved_pipeline_are_refused_before_allocating(file, entries, match, pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    _edit_json(folder / file, **entries)
    with pytest.raises(ValueError, match=match):
        PreDiffPipeline.from_pretrained(folder)


def test_absurd_sizes_are_refused_when_a_network_is_loaded_or_built_directly(pipe_dir, tmp_path):
    folder = _copy(pipe_dir, tmp_path)
    _edit_json(folder / "unet" / "config.json", base_units=10**9)
    with pytest.raises(ValueError, match=r"EarthformerUNetModel\(.*base_units=1000000000"):
        EarthformerUNetModel.from_pretrained(folder / "unet")
    with pytest.raises(ValueError, match=r"EarthformerModel\(input_shape=\(13, 100000, 100000, 1\).* GiB of memory"):
        EarthformerModel(input_shape=(13, 100000, 100000, 1), target_shape=(12, 100000, 100000, 1))


def test_an_absurd_model_size_in_a_training_configuration_is_refused(tmp_path):
    config = tiny("earthformer", tmp_path, **{"data.num_sequences": 8, "model.base_units": 10**9})
    with pytest.raises(ValueError, match=r"EarthformerModel\(.*base_units=1000000000"):
        EarthformerTrainer(config)
    assert not (tmp_path / "earthformer").exists()


def test_the_official_sizes_pass_the_check():
    config = EarthformerUNetModel.presets["prediff-sevirlr"]
    check_model_config_memory(EarthformerUNetModel, config)
    with torch.device("meta"):
        unet = EarthformerUNetModel(**config)
    assert sum(p.numel() for p in unet.parameters()) == 136_817_538


def test_an_absurd_ensemble_is_refused_before_anything_is_drawn(pipe):
    with pytest.raises(ValueError, match=r"num_ensemble_members=1000000000 with 1 context\(s\).* TiB of memory"):
        pipe(CONTEXT, num_ensemble_members=10**9)


def test_forecast_command_refuses_an_absurd_member_count(pipe_dir, tmp_path, capsys):
    np.save(tmp_path / "context.npy", CONTEXT)
    out = tmp_path / "out.nc"
    code = run_cli(["forecast", "--pipeline", pipe_dir, "--input", tmp_path / "context.npy", "--out", out,
                    "--members", 10**9, "--no-plots"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--members=1000000000" in err and "memory" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context.npy"]


# ------------------------------------------------------------------------------------------ 9. command line


def _corrupt_pipeline(pipe_dir: Path, tmp_path: Path) -> Path:
    folder = _copy(pipe_dir, tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return folder


def _forecast_args(folder: Path, tmp_path: Path) -> list:
    np.save(tmp_path / "context.npy", CONTEXT)
    return ["forecast", "--pipeline", folder, "--input", tmp_path / "context.npy", "--out", tmp_path / "out.nc"]


def test_a_corrupted_weights_file_is_one_line_and_exit_status_2(pipe_dir, tmp_path):
    args = _forecast_args(_corrupt_pipeline(pipe_dir, tmp_path), tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "prediff", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("prediff forecast: error: ") and "unet/diffusion_pytorch_model.safetensors" in lines[0]
    assert not (tmp_path / "out.nc").exists()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_traceback_is_shown_on_request(how, pipe_dir, tmp_path, capsys, monkeypatch):
    args = _forecast_args(_corrupt_pipeline(pipe_dir, tmp_path), tmp_path)
    if how == "flag":
        args = ["--traceback", *args]
    else:
        monkeypatch.setenv("PREDIFF_TRACEBACK", "1")
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and err[-1].startswith("prediff forecast: error: ")


@pytest.mark.parametrize(
    "file, entries, match",
    [
        ("model_index.json", {"extra_option": 1}, "unknown entries ['extra_option']"),
        ("unet/config.json", {"base_units": 32}, "expected shape torch.Size([32]), but got torch.Size([16])"),
    ],
    ids=["extra-key", "weights-of-another-shape"],
)
def test_pipeline_mistakes_are_one_line_and_exit_status_2(file, entries, match, pipe_dir, tmp_path, capsys):
    folder = _copy(pipe_dir, tmp_path)
    _edit_json(folder / file, **entries)
    assert run_cli(_forecast_args(folder, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prediff forecast: error: ") and match in err, err


@pytest.mark.parametrize(
    "error, line",
    [
        (MemoryError(), "MemoryError"),
        (KeyError("optimizer"), "KeyError: 'optimizer'"),
        (
            RuntimeError("Error(s) in loading:\n\tsize mismatch for w"),
            "RuntimeError: Error(s) in loading: size mismatch for w",
        ),
        (OSError(28, "No space left on device"), "[Errno 28] No space left on device"),
    ],
    ids=["memory", "key", "multi-line", "disk-full"],
)
def test_every_error_becomes_one_line(error, line):
    assert _one_line(error) == line


def test_a_corrupted_checkpoint_names_its_file(tmp_path):
    net = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path, 1, {"net": net}, {}, {"kind": "x"})
    (path / "net.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ValueError, match=r"cannot read .*checkpoint-1/net.safetensors as safetensors"):
        load_checkpoint(path, {"net": net}, [])
    save_file({"weight": torch.ones(3, 3), "bias": torch.ones(3)}, str(path / "net.safetensors"))
    with pytest.raises(ValueError, match=r"the 'net' weights of checkpoint .*checkpoint-1 do not fit the network"):
        load_checkpoint(path, {"net": net}, [])


# ------------------------------------------------------------------------------------------ 10. one run per folder


def _checkpoint_of_another_run(out: Path) -> Path:
    return save_checkpoint(out, 7, {"net": torch.nn.Linear(2, 2)}, {}, {"kind": "earthformer"})


def test_a_new_run_refuses_a_folder_with_another_runs_checkpoints(tmp_path):
    out = tmp_path / "earthformer"
    other = _checkpoint_of_another_run(out)
    before = _modes(out)
    trainer = EarthformerTrainer(tiny("earthformer", tmp_path, **{"data.num_sequences": 8}))
    with pytest.raises(ValueError, match=r"holds the checkpoints of another run \(checkpoint-7 .*--overwrite"):
        trainer.train()
    assert _modes(out) == before and list_checkpoints(out) == [other]


def test_overwrite_deletes_the_other_runs_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    _checkpoint_of_another_run(out)
    args = ["train", "earthformer", "--config", TINY / "earthformer.yaml", "--output_dir", out, "--overwrite",
            "--max_train_steps", 1, "--data.num_sequences", 8, "--report_to", "none",
            "--num_validation_samples", 0, "--num_validation_batches", 1]  # fmt: skip
    assert run_cli(args) == 0, capsys.readouterr().err
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]


# ------------------------------------------------------------------------------------------ 11. training faults


def test_a_checkpoint_without_optimizer_state_is_refused_clearly(tmp_path):
    config = tiny("earthformer", tmp_path, **{"data.num_sequences": 8})
    trainer = EarthformerTrainer(config)
    out = tmp_path / "earthformer"
    save_checkpoint(out, 3, trainer.checkpoint_models(), {}, {"kind": "earthformer"})
    resumed = EarthformerTrainer(
        tiny("earthformer", tmp_path, resume_from_checkpoint="latest", **{"data.num_sequences": 8})
    )
    with pytest.raises(ValueError, match=r"checkpoint-3 cannot be resumed: it lacks earthformer.optimizer.json"):
        resumed.train()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3"]


def test_checkpoints_are_on_the_disk_before_they_are_renamed_into_place(tmp_path, monkeypatch):
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = save_checkpoint(tmp_path, 1, {"net": torch.nn.Linear(2, 2)}, {"opt": {"a": torch.ones(2)}}, {"kind": "x"})
    written = {p.name for p in path.iterdir()}
    assert written == {"net.safetensors", "opt.safetensors", "opt.json", "training_state.json"}
    in_temporary = {Path(p).name for p in flushed if f"{os.sep}.checkpoint-1." in p}
    assert written <= in_temporary  # flushed while still in the hidden temporary folder
    assert flushed[-1] == str(tmp_path)  # then the rename itself


def test_leftovers_of_a_killed_export_or_checkpoint_are_removed(tmp_path):
    stale = [".export.a1b2.tmp", ".export.c3d4.old", ".checkpoint-4.e5f6.tmp", ".checkpoint-2.g7h8.old"]
    kept = [".git", ".cache.old", "notes.tmp"]
    for name in stale + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_an_export_replaces_the_previous_one_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "run"
    for version in ("old", "new"):
        src = out / f".export.{version}.tmp"
        (src / "unet").mkdir(parents=True)
        (src / "unet" / f"{version}.safetensors").write_text(version)
        (src / "model_index.json").write_text(version)
        move_into(src, out, EXPORT_PREFIX, last=EXPORT_LAST)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "model_index.json",
        "unet",
        "unet/new.safetensors",
    ]
    assert (out / "model_index.json").read_text() == "new"


# Every process of a 2-process CPU run; the main one cannot save (checkpoint-1 is a file, not a folder).
_FAILING_SAVE = """
import sys
from prediff.data import SyntheticStormDataset
from prediff.training import EarthformerTrainer, load_config

config = load_config("earthformer", sys.argv[2], {
    "output_dir": sys.argv[1], "max_train_steps": 1, "checkpointing_steps": 1, "report_to": "none",
    "data.num_sequences": 4,
})
EarthformerTrainer(config, train_dataset=SyntheticStormDataset(4, 5, 32, 32, seed=0)).train()
"""


def test_every_process_stops_when_the_main_one_cannot_save(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    script = tmp_path / "run.py"
    script.write_text(_FAILING_SAVE)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint-1").write_text("in the way")
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29549",
        str(script), str(out), str(TINY / "earthformer.yaml"),
    ]  # fmt: skip
    env = {**ENV, "ACCELERATE_USE_CPU": "true"}
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        _, err = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        pytest.fail("the processes waited forever for the main one, which had failed to save")
    assert run.returncode != 0
    assert "NotADirectoryError" in err and "the main process failed while saving checkpoint-1" in err, err[-3000:]
    assert not list(out.glob(".checkpoint-*")) and (out / "checkpoint-1").read_text() == "in the way"


# ----------------------------------------------------------------------------------------------- data side

#: Sizes far beyond the memory of any machine these tests run on: 10^15 float32 values (3.6 PiB).
HUGE_SHAPE = (10**6, 10**6, 10**3)


def tree_state(root: Path) -> dict[str, object]:
    """What lies under `root`: each entry's relative path -> its bytes (files) or link target (links)."""
    state: dict[str, object] = {}
    for entry in sorted(root.rglob("*")):
        key = str(entry.relative_to(root))
        if entry.is_symlink():
            state[key] = ("link", os.readlink(entry))
        elif entry.is_file():
            state[key] = entry.read_bytes()
        else:
            state[key] = "folder"
    return state


# ---------------------------------------------------------------------------------------------- SEVIR catalogs


def write_vil(path: Path, events: int = 2, size: int = 12, frames: int = 13, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(seed).integers(0, 256, (events, size, size, frames), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("vil", data=values)


def write_catalog(root: Path, rows: list[dict[str, object]]) -> Path:
    """`root/CATALOG.csv` with the columns prediff reads; each row defaults to a complete VIL event of
    `vil/a.h5`."""
    root.mkdir(parents=True, exist_ok=True)
    defaults = {"img_type": "vil", "time_utc": "2018-03-01 10:00:00", "file_name": "vil/a.h5", "pct_missing": 0.0}
    frame = pd.DataFrame(
        [{"id": f"E{n + 1}", "file_index": n % 2, **defaults, **row} for n, row in enumerate(rows)],
        columns=["id", "file_name", "file_index", "img_type", "time_utc", "pct_missing"],
    )
    frame.to_csv(root / "CATALOG.csv", index=False)
    return root / "CATALOG.csv"


def escaping_name(kind: str, target: Path) -> str:
    """A catalog file_name that leads from `root/data` to `target` (two folders above it)."""
    return {
        "dotdot": f"../../{target.name}",
        "nested_dotdot": f"vil/../../../{target.name}",
        "absolute": str(target),
    }[kind]


@pytest.mark.parametrize("kind", ["dotdot", "nested_dotdot", "absolute"])
def test_sevir_dataset_refuses_file_names_leaving_the_root(tmp_path, kind):
    outside = tmp_path / "outside.h5"
    write_vil(outside)
    root = tmp_path / "sevir"
    write_vil(root / "data" / "vil" / "a.h5")
    name = escaping_name(kind, outside)
    write_catalog(root, [{}, {"file_name": name}])
    before = tree_state(tmp_path)
    pattern = rf"CATALOG\.csv: file_name {re.escape(repr(name))} of event E2 \(line 3\) is not a relative path inside"
    with pytest.raises(ValueError, match=pattern):
        SEVIRDataset(root, seq_len=13)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_downsample_never_writes_outside_dst_nor_into_src(tmp_path, capsys, kind):
    src, dst = tmp_path / "src", tmp_path / "dst"
    source_file = src / "data" / "vil" / "a.h5"
    write_vil(source_file)
    # From src/data, ../../src/data/vil/a.h5 is the source file; from dst/data it is the same file too.
    name = "../../src/data/vil/a.h5" if kind == "dotdot" else str(source_file)
    write_catalog(src, [{}, {"file_name": name}])
    before = tree_state(tmp_path)
    assert run_cli(["data", "downsample-sevir", src, dst, "--quiet", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"CATALOG\.csv: file_name {re.escape(repr(name))} of event E2 \(line 3\)", err), err
    assert tree_state(tmp_path) == before and not dst.exists()


@pytest.mark.parametrize("dst_below_src", ["lr", "data/lr"])
def test_downsample_refuses_a_destination_inside_the_source(tmp_path, capsys, dst_below_src):
    src = tmp_path / "src"
    write_vil(src / "data" / "vil" / "a.h5")
    write_catalog(src, [{}])
    before = tree_state(tmp_path)
    assert run_cli(["data", "downsample-sevir", src, src / dst_below_src, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"DST {re.escape(str(src / dst_below_src))} lies inside SRC {re.escape(str(src))}", err), err
    assert tree_state(tmp_path) == before


def test_downsample_writes_a_file_of_two_image_types_once_with_both(tmp_path):
    """Written once per image type, the second write replaced the first (overwrite was forced)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    path = src / "data" / "both.h5"
    write_vil(path, events=1, size=6, frames=4)
    with h5py.File(path, "a") as f:
        f.create_dataset("ir069", data=np.full((1, 6, 6, 4), -5000, dtype=np.int16))
    write_catalog(src, [{"file_name": "both.h5", "file_index": 0}, {"file_name": "both.h5", "img_type": "ir069"}])
    argv = ["data", "downsample-sevir", src, dst, "--img-type", "vil", "--img-type", "ir069", "--quiet"]
    assert run_cli(argv) == 0
    with h5py.File(dst / "data" / "both.h5", "r") as f:
        assert f["vil"].shape == f["ir069"].shape == (1, 2, 2, 2)


@pytest.mark.parametrize(
    "column, value, shown, problem",
    [
        ("file_name", "", "nan", "is not a relative path inside data/"),
        ("file_index", 1.5, "1.5", "is not an integer >= 0"),
        ("file_index", -1, "-1", "is not an integer >= 0"),
        ("file_index", "", "nan", "is not an integer >= 0"),
        ("pct_missing", "abc", "'abc'", "is not a number"),
    ],
)
def test_catalog_values_are_refused_naming_the_line(tmp_path, column, value, shown, problem):
    root = tmp_path / "sevir"
    write_vil(root / "data" / "vil" / "a.h5")
    write_catalog(root, [{}, {column: value}])
    before = tree_state(tmp_path)
    pattern = rf"CATALOG\.csv: {column} {re.escape(shown)} of event E2 \(line 3\) {re.escape(problem)}"
    with pytest.raises(ValueError, match=pattern):
        SEVIRDataset(root, seq_len=13)
    assert tree_state(tmp_path) == before


def test_inspect_refuses_a_catalog_pointing_outside_the_root(tmp_path, capsys):
    outside = tmp_path / "outside.h5"
    write_vil(outside)
    root = tmp_path / "sevir"
    write_catalog(root, [{"file_name": str(outside)}])
    assert run_cli(["data", "inspect", root]) == 2
    err = capsys.readouterr().err
    assert re.search(r"CATALOG\.csv: file_name .*outside\.h5' of event E1 \(line 2\)", err), err
    assert "outside.h5: vil shape" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- zarr with pickle


class TouchWhenUnpickled:
    """Unpickling this creates `marker`: proof that a reader decoded a chunk with pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def write_pickle_store(store: Path, kind: str, marker: Path) -> None:
    """A zarr store whose array `frames` (3, 32, 32) is decoded with pickle, its metadata written by hand (the
    installed zarr refuses to create such stores); its only chunk creates `marker` when unpickled."""
    payload = pickle.dumps(TouchWhenUnpickled(marker))
    frames = store / "frames"
    frames.mkdir(parents=True)
    v2 = {"zarr_format": 2, "shape": [3, 32, 32], "chunks": [3, 32, 32], "order": "C", "compressor": None}
    pickled = {**v2, "dtype": "|O", "fill_value": None, "filters": [{"id": "pickle", "protocol": 5}]}
    if kind == "v3_pickle_codec":
        (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
        metadata = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [3, 32, 32],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, 32, 32]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0.0,
            "codecs": [{"name": "numcodecs.pickle"}, {"name": "bytes", "configuration": {"endian": "little"}}],
            "attributes": {},
        }
        (frames / "zarr.json").write_text(json.dumps(metadata))
        (frames / "c" / "0" / "0").mkdir(parents=True)
        (frames / "c" / "0" / "0" / "0").write_bytes(payload)
        return
    (store / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    array = {
        "object_dtype": pickled,
        "floats_with_pickle_filter": {**v2, "dtype": "<f4", "fill_value": 0.0, "filters": [{"id": "pickle"}]},
        # Clean per-array metadata; the consolidated copy, which zarr and xarray prefer, is the pickled one.
        "consolidated": {**v2, "dtype": "<f4", "fill_value": 0.0, "filters": None},
    }[kind]
    (frames / ".zarray").write_text(json.dumps(array))
    if kind == "consolidated":
        consolidated = {
            "zarr_consolidated_format": 1,
            "metadata": {".zgroup": {"zarr_format": 2}, "frames/.zarray": pickled},
        }
        (store / ".zmetadata").write_text(json.dumps(consolidated))
    (frames / "0.0.0").write_bytes(payload)


def read_with(reader: str, store: Path, capsys) -> str:
    """Read `store` as `reader` does and return the error message."""
    if reader == "inspect":
        assert run_cli(["data", "inspect", store]) == 2
        return capsys.readouterr().err
    with pytest.raises(ValueError) as error:
        if reader == "context":
            read_context(store)
        else:
            ArraySequenceDataset.from_file(store, value_range=(0, 255))
    return str(error.value)


#: What each pickled store is refused for.
PICKLE_STORE_MESSAGES = {
    "object_dtype": r"ctx\.zarr:frames holds Python objects \(dtype '\|O'\)",
    "floats_with_pickle_filter": r"ctx\.zarr:frames is encoded with pickle",
    "consolidated": r"ctx\.zarr:frames \(consolidated metadata\) holds Python objects",
    "v3_pickle_codec": r"ctx\.zarr:frames is encoded with pickle \(\['numcodecs\.pickle', 'bytes'\]\)",
}


@pytest.mark.parametrize("reader", ["context", "inspect", "sequence_file"])
@pytest.mark.parametrize("kind", sorted(PICKLE_STORE_MESSAGES))
def test_zarr_stores_decoded_with_pickle_are_refused_before_any_chunk_is_read(tmp_path, capsys, reader, kind):
    store, marker = tmp_path / "ctx.zarr", tmp_path / "unpickled"
    write_pickle_store(store, kind, marker)
    before = tree_state(tmp_path)
    assert re.search(PICKLE_STORE_MESSAGES[kind], read_with(reader, store, capsys))
    assert not marker.exists()
    assert tree_state(tmp_path) == before


# ---------------------------------------------------------------------------------------------- sizes from headers


def write_npy_header(path: Path, shape: tuple[int, ...], data_bytes: int) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(b"\0" * data_bytes)


def write_huge(kind: str, folder: Path) -> Path:
    """A small file whose metadata claims an array of `HUGE_SHAPE` (or, for `npy_truncated`, a few bytes more
    than it holds)."""
    if kind == "npy":
        path = folder / "ctx.npy"
        write_npy_header(path, HUGE_SHAPE, 1000)
    elif kind == "npy_truncated":
        path = folder / "ctx.npy"
        write_npy_header(path, (3, 32, 32), 3 * 32 * 32 * 4 - 1)
    elif kind == "hdf5":
        path = folder / "ctx.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("frames", shape=HUGE_SHAPE, dtype="f4", chunks=(1, 100, 100), compression="gzip")
    elif kind == "netcdf_variable":
        path = folder / "ctx.nc"
        with netCDF4.Dataset(path, "w") as f:
            for name, size in zip(("time", "y", "x"), HUGE_SHAPE):
                f.createDimension(name, size)
            f.createVariable("frames", "f4", ("time", "y", "x"), chunksizes=(1, 100, 100))
    elif kind == "netcdf_coordinate":
        # xarray reads the coordinates of every dimension when it opens a file.
        path = folder / "ctx.nc"
        with netCDF4.Dataset(path, "w") as f:
            f.createDimension("time", 10**12)
            f.createVariable("time", "f8", ("time",), chunksizes=(1000,))
    else:
        path = folder / "ctx.zarr"
        zarr.create_array(store=str(path), shape=HUGE_SHAPE, chunks=(1, 1000, 1000), dtype="f4")
    assert sum(p.stat().st_size for p in [path, *path.rglob("*")] if p.is_file()) < 20_000
    return path


#: What each file of `write_huge` is refused for: the file, the array, the shape and the memory or bytes needed.
HUGE_FILE_MESSAGES = {
    "npy": r"ctx\.npy: the \.npy header declares shape \(1000000, 1000000, 1000\) of float32, "
    r"4,000,000,000,000,000 bytes \(3\.6 PiB\), but the file holds 1,000 bytes of data",
    "npy_truncated": r"ctx\.npy: the \.npy header declares shape \(3, 32, 32\) of float32, 12,288 bytes "
    r"\(12\.0 KiB\), but the file holds 12,287 bytes",
    "hdf5": r"ctx\.h5:frames: reading \(1000000, 1000000, 1000\) float32 values at once would need 3\.6 PiB of memory",
    "netcdf_variable": r"ctx\.nc:frames: reading \(1000000, 1000000, 1000\) float32 values at once would need "
    r"3\.6 PiB of memory",
    "netcdf_coordinate": r"ctx\.nc:time: reading \(1000000000000,\) float64 values at once would need 7\.3 TiB of "
    r"memory",
    "zarr": r"ctx\.zarr: reading \(1000000, 1000000, 1000\) float32 values at once would need 3\.6 PiB of memory",
}


@pytest.mark.parametrize("kind", sorted(HUGE_FILE_MESSAGES))
def test_context_headers_claiming_petabytes_are_refused_before_allocating(tmp_path, kind):
    path = write_huge(kind, tmp_path)
    before = tree_state(tmp_path)
    with pytest.raises(ValueError, match=HUGE_FILE_MESSAGES[kind]):
        read_context(path)
    assert tree_state(tmp_path) == before


def test_inspect_refuses_an_npz_member_claiming_petabytes(tmp_path, capsys):
    path = tmp_path / "archive.npz"
    header = tmp_path / "member.npy"
    write_npy_header(header, HUGE_SHAPE, 64)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(header, "frames.npy")
    header.unlink()
    before = tree_state(tmp_path)
    assert run_cli(["data", "inspect", path]) == 2
    err = capsys.readouterr().err
    assert re.search(r"archive\.npz:frames: the \.npy header declares shape \(1000000, 1000000, 1000\)", err), err
    assert tree_state(tmp_path) == before


def test_sevir_file_claiming_huge_frames_is_refused_when_opened(tmp_path):
    root = tmp_path / "sevir"
    path = root / "data" / "vil" / "a.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("vil", shape=(1, 10**7, 10**7, 13), dtype="u1", chunks=(1, 100, 100, 13))
    write_catalog(root, [{"file_index": 0}])
    with pytest.raises(ValueError, match=r"a\.h5:vil: reading \(10000000, 10000000, 13\) uint8 values .* 1\.2 PiB"):
        SEVIRDataset(root, seq_len=13)


def test_data_set_file_claiming_huge_items_is_refused_when_opened(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", shape=(2, *HUGE_SHAPE, 1), dtype="u1", chunks=(1, 1, 100, 100, 1))
        f.attrs["prediff_metadata"] = json.dumps({"value_range": [0, 255]})
    with pytest.raises(ValueError, match=r"data\.h5:frames: reading \(1000000, 1000000, 1000, 1\) uint8 values"):
        ArraySequenceDataset.from_file(path)


def test_enso_labels_stored_as_text_are_refused(tmp_path):
    layout = {"cmip6_models": 1, "cmip6_years": 1, "cmip5_models": 1, "cmip5_years": 1}
    coords = {"year": [1, 2], "month": np.arange(1, 37)}
    sst = np.zeros((2, 36, 24, 72), dtype=np.float32)
    lat, lon = np.arange(-55, 65, 5.0), np.arange(0, 360, 5.0)
    xr.Dataset({"sst": (("year", "month", "lat", "lon"), sst)}, coords={**coords, "lat": lat, "lon": lon}).to_netcdf(
        tmp_path / "CMIP_train.nc"
    )
    labels = np.full((2, 36), "0.5", dtype=object)
    xr.Dataset({"nino": (("year", "month"), labels)}, coords=coords).to_netcdf(tmp_path / "CMIP_label.nc")
    with pytest.raises(ValueError, match=r"CMIP_label\.nc:nino holds \S+ values; prediff reads integer or float"):
        ENSODataset(tmp_path, split="all", **layout)


# ---------------------------------------------------------------------------------------------- prediff forecast


def write_context(path: Path) -> None:
    frames = (np.random.default_rng(0).random((3, 32, 32)) * 200).astype(np.float32)
    if path.suffix == ".zarr":
        xr.Dataset({"frames": (("time", "y", "x"), frames)}).to_zarr(path, mode="w")
    else:
        np.save(path, frames)


@pytest.mark.parametrize(
    "case, message",
    [
        ("default_pysteps", r"the pysteps output \(--pysteps-out\) .*ctx\.npy is --input .*ctx\.npy"),
        ("pysteps_link", r"the pysteps output \(--pysteps-out\) .*link\.npy is --input .*ctx\.npy"),
        ("out_is_input_store", r"--out .*ctx\.zarr is --input .*ctx\.zarr"),
        ("pysteps_inside_input_store", r"the pysteps output \(--pysteps-out\) .*ctx\.zarr/x\.npy lies inside --input"),
    ],
)
def test_forecast_refuses_outputs_that_are_its_input(pipe_dir, tmp_path, capsys, case, message):
    work = tmp_path / "work"
    work.mkdir()
    context = work / ("ctx.zarr" if "store" in case else "ctx.npy")
    write_context(context)
    out = {"default_pysteps": work / "ctx.nc", "out_is_input_store": context}.get(case, work / "ens.nc")
    argv = ["forecast", "--pipeline", pipe_dir, "--input", context, "--out", out, "--overwrite"]
    if case == "pysteps_link":
        (work / "link.npy").symlink_to(context)
        argv += ["--pysteps-out", work / "link.npy"]
    elif case == "pysteps_inside_input_store":
        argv += ["--pysteps-out", context / "x.npy"]
    before = tree_state(tmp_path)
    assert run_cli(argv + ["--members", 1, "--steps", 1, "--no-plots", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("minutes", ["nan", "inf", "-inf", "0", "-10"])
def test_forecast_refuses_interval_minutes_that_are_no_duration(pipe_dir, tmp_path, capsys, minutes):
    context = tmp_path / "ctx.npy"
    write_context(context)
    argv = ["forecast", "--pipeline", pipe_dir, "--input", context, "--out", tmp_path / "ens.nc"]
    argv += [f"--interval-minutes={minutes}", "--members", 1, "--steps", 1, "--no-plots", "--no-progress"]
    before = tree_state(tmp_path)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert f"--interval-minutes must be a finite number of minutes > 0, got {float(minutes)}" in err, err
    assert tree_state(tmp_path) == before


# ---------------------------------------------------------------------------------------------- YAML configurations

#: 342 bytes that stand for 9^9 (387 million) strings through nested aliases.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "model:\n" + "".join(f"  {line}\n" for line in ALIAS_BOMB.splitlines()),
            rf"'.*bomb\.yaml': YAML aliases expand it to [\d,]+ values, more than the {MAX_YAML_VALUES:,}",
        ),
        (
            "model:\n  blocks: &b [1, *b]\n",
            r"'.*bomb\.yaml', line 2: the YAML alias \*b refers to a value that contains it",
        ),
    ],
    ids=["billion_laughs", "self_reference"],
)
def test_yaml_aliases_that_expand_without_end_are_refused(tmp_path, text, message):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        load_config("vae", path)
    assert time.perf_counter() - start < 2.0


def test_yaml_alias_bomb_in_an_override_names_the_option():
    with pytest.raises(ValueError, match=r"--model\.blocks: YAML aliases expand it to [\d,]+ values"):
        parse_override_args(["--model.blocks", ALIAS_BOMB])
    assert parse_override_args(["--model.x", "{a: &n 3, b: *n}"]) == {"model.x": {"a": 3, "b": 3}}
