"""Hostile files and careless hands, model side: pipelines, saved folders, sizes, the command line, training runs.

Every case expects a clear error (naming the field, file, option or size) or a clear warning, and checks that
nothing outside the intended folder was written or changed.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from prediff.cli import _one_line
from prediff.models import EarthformerModel, EarthformerUNetModel
from prediff.models.autoencoder import autoencoder_from_preset
from prediff.models.modeling_utils import check_model_config_memory
from prediff.pipelines import PREDIFF_PIPELINE_PRESETS, EarthformerPipeline, PreDiffPipeline
from prediff.schedulers import prediff_scheduler
from prediff.training import EarthformerTrainer, list_checkpoints
from prediff.training.utils import load_checkpoint, move_into, remove_stale_temporaries, save_checkpoint
from tests.conftest import run_cli
from tests.test_training import TINY, tiny

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
        move_into(src, out)
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
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541",
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
