"""Kill-anywhere training: `prediff train denoiser` is killed with SIGKILL at random moments and at the worst
ones (in the middle of a checkpoint save, of the export and of its publication), and resumed each time with
`--resume_from_checkpoint latest`. It must end with the weights of an uninterrupted run, bit for bit; after
every kill each visible checkpoint must be complete, and the output folder must hold no pipeline or a complete
one, never a mix."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prediff.training.checkpointing import find_checkpoint, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "configs" / "synthetic-tiny"
# One thread per process: the reference run and the killed ones share two cores without oversubscription.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("PREDIFF_FAULT_INJECT", None)
STEPS = 10
#: What every checkpoint of the denoiser holds; one that lacks a file is partial.
CHECKPOINT_FILES = {
    "denoiser.lr_scheduler.json",
    "denoiser.optimizer.json",
    "denoiser.optimizer.safetensors",
    "diffusion_loss.safetensors",
    "ema.json",
    "ema.safetensors",
    "training_state.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    """An untrained tiny autoencoder folder (the denoiser only needs a frozen one)."""
    from prediff.models.autoencoder import autoencoder_from_preset

    root = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    autoencoder_from_preset("prediff-tiny").save_pretrained(root)
    return root


def _start(out: Path, vae: Path, log: Path, fault: str | None = None, steps: int = STEPS) -> subprocess.Popen:
    """`prediff train denoiser`, checkpointing every step (rotation keeps 2), resuming from the latest one."""
    command = [
        sys.executable, "-m", "prediff", "train", "denoiser", "--config", str(TINY / "denoiser.yaml"),
        "--output_dir", str(out), "--vae", str(vae), "--max_train_steps", str(steps), "--checkpointing_steps", "1",
        "--report_to", "none", "--num_validation_batches", "1", "--num_validation_samples", "0",
        "--data.num_sequences", "8", "--resume_from_checkpoint", "latest",
    ]  # fmt: skip
    env = {**ENV, "PREDIFF_FAULT_INJECT": fault} if fault else ENV
    with open(log, "w") as f:
        return subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT)


def _latest_step(out: Path) -> int:
    path = find_checkpoint(out, "latest")
    return -1 if path is None else int(path.name.split("-")[1])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in `folder`, by `file:name`; hidden folders and checkpoints left out."""
    tensors = {}
    for file in sorted(folder.rglob("*.safetensors")):
        relative = file.relative_to(folder)
        if relative.parts[0].startswith((".", "checkpoint-")):
            continue
        tensors.update({f"{relative}:{name}": value for name, value in load_file(str(file)).items()})
    return tensors


def _assert_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    different = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ, e.g. {different[:3]}"


def _check_after_kill(out: Path) -> int:
    """What a kill may leave: only complete checkpoints are visible (their files all there and readable), and
    the output folder holds no pipeline or a complete one. Returns the step `latest` resumes from (-1: none)."""
    for folder in out.glob("checkpoint-*"):
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        assert files == CHECKPOINT_FILES, f"{folder.name} is partial: {sorted(CHECKPOINT_FILES ^ files)}"
        assert json.loads((folder / "training_state.json").read_text())["step"] == int(folder.name.split("-")[1])
        for file in folder.rglob("*.safetensors"):
            load_file(str(file))
    if (out / "model_index.json").exists():
        from prediff.pipelines import PreDiffPipeline

        PreDiffPipeline.from_pretrained(out)
    return _latest_step(out)


def _wait(process: subprocess.Popen, condition) -> float:
    """Poll until `condition()` holds or the process ends; returns the time it first held."""
    deadline = time.monotonic() + 240
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return time.monotonic()


def _kill(process: subprocess.Popen, what: str) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended ({process.returncode}) before {what}"


def _kill_in_the_loop(process: subprocess.Popen, out: Path, target: int, fraction: float) -> None:
    """SIGKILL `process` `fraction` of a step after checkpoint-`target` appeared (a step: the time from
    checkpoint-`target - 1` to it, so `target - 1` must be saved by this run): while it trains the next step,
    saves it or rotates the oldest checkpoint away. At least two steps remain after `target`, so the kill always
    comes before the end, however fast the machine."""
    before = _wait(process, lambda: _latest_step(out) >= target - 1)
    at = _wait(process, lambda: _latest_step(out) >= target)
    time.sleep(fraction * (at - before))
    _kill(process, f"the kill after checkpoint-{target}")


def _killed_by_itself(process: subprocess.Popen, log: Path) -> None:
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]


@pytest.mark.slow
def test_training_killed_anywhere_resumes_to_the_uninterrupted_weights(tmp_path, vae_dir):
    started = time.monotonic()
    rng = random.Random(18)
    reference = _start(tmp_path / "straight", vae_dir, tmp_path / "straight.log")
    out = tmp_path / "killed"
    logs = iter(tmp_path / f"run-{i}.log" for i in range(100))
    kills, resumed = 0, []

    def checked(step: int) -> int:
        resumed.append(step)
        return step

    def resumes_from(log: Path, step: int) -> None:
        text = log.read_text()
        said = f"resumed from {out / f'checkpoint-{step}'} at step {step}" if step > 0 else "starting a new run"
        assert said in text, text[-3000:]

    # 1. Anywhere in the start-up (imports, data, networks, the first step): a random delay, cut short by the
    # first checkpoint.
    log = next(logs)
    process, launched, delay = _start(out, vae_dir, log), time.monotonic(), rng.uniform(0.5, 2.0)
    _wait(process, lambda: time.monotonic() - launched >= delay or _latest_step(out) >= 1)
    _kill(process, "the kill in the start-up")
    kills += 1
    latest = checked(_check_after_kill(out))

    # 2. At a random moment of the training loop.
    log = next(logs)
    process = _start(out, vae_dir, log)
    target = max(latest, 0) + rng.randint(2, 3)
    _kill_in_the_loop(process, out, target, rng.random())
    kills += 1
    resumes_from(log, latest)
    latest = checked(_check_after_kill(out))
    assert latest >= target

    # 3. In the middle of a checkpoint save: its weights are written, its training state is not.
    log = next(logs)
    save = latest + rng.randint(1, 2)
    _killed_by_itself(_start(out, vae_dir, log, fault=f"checkpoint-save:{save}"), log)
    kills += 1
    resumes_from(log, latest)
    assert list(out.glob(f".checkpoint-{save}.*.tmp")), "the kill did not interrupt the save"
    latest = checked(_check_after_kill(out))
    assert latest == save - 1

    # 4. At a random moment again.
    log = next(logs)
    process = _start(out, vae_dir, log)
    _kill_in_the_loop(process, out, rng.randint(latest + 2, STEPS - 2), rng.random())
    kills += 1
    resumes_from(log, latest)
    latest = checked(_check_after_kill(out))

    # 5. During the export: the pipeline is written in its temporary folder, nothing is published.
    log = next(logs)
    _killed_by_itself(_start(out, vae_dir, log, fault="export"), log)
    kills += 1
    resumes_from(log, latest)
    assert list(out.glob(".export.*.tmp")) and not (out / "model_index.json").exists()
    latest = checked(_check_after_kill(out))
    assert latest == STEPS

    # 6. During its publication: some entries are in place, not `model_index.json` (no pipeline).
    log = next(logs)
    _killed_by_itself(_start(out, vae_dir, log, fault="publish"), log)
    kills += 1
    resumes_from(log, STEPS)
    assert (out / "README.md").exists() and not (out / "model_index.json").exists()
    assert checked(_check_after_kill(out)) == STEPS

    # 7. Uninterrupted to the end: the weights of the run never killed, bit for bit (the exported pipeline and
    # the last checkpoint with its optimizer and EMA states).
    log = next(logs)
    last = _start(out, vae_dir, log)
    assert last.wait(timeout=300) == 0, log.read_text()[-3000:]
    resumes_from(log, STEPS)
    assert reference.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    resumed_at = time.monotonic() - started
    expected = _weights(tmp_path / "straight")
    assert len(expected) > 100
    _assert_equal(_weights(out), expected)
    _assert_equal(_weights(out / f"checkpoint-{STEPS}"), _weights(tmp_path / "straight" / f"checkpoint-{STEPS}"))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]

    # 8. Replacing a complete export (two more steps): killed while the new one is half published, the old
    # complete one is set aside whole, and the next run's clean-up puts the new complete one in place.
    log = next(logs)
    _killed_by_itself(_start(out, vae_dir, log, fault="publish", steps=STEPS + 2), log)
    kills += 1
    assert not (out / "model_index.json").exists()
    (aside,) = out.glob(".export.*.old")
    from prediff.pipelines import PreDiffPipeline

    PreDiffPipeline.from_pretrained(aside)
    _assert_equal(_weights(aside), expected)
    remove_stale_temporaries(out)  # what the next run does first
    assert checked(_check_after_kill(out)) == STEPS + 2
    pipe = PreDiffPipeline.from_pretrained(out)
    ema = load_file(str(out / f"checkpoint-{STEPS + 2}" / "ema.safetensors"))
    new = dict(pipe.unet.named_parameters())
    for i, (name, value) in enumerate(new.items()):
        assert torch.equal(value.detach(), ema[f"shadow_params.{i}"]), name
    old = {k.split(":")[1]: v for k, v in expected.items() if k.startswith("unet/")}
    assert not all(torch.equal(value.detach(), old[name]) for name, value in new.items())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    total = time.monotonic() - started
    print(
        f"{kills} kills (latest checkpoint after each: {resumed}); back to the uninterrupted weights after "
        f"{resumed_at:.0f} s; {total:.0f} s in all"
    )
