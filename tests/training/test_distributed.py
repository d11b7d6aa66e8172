"""prediff.training across processes: a real 2-process run on CPU (gloo) and a run killed and resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prediff.training import list_checkpoints

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "configs" / "synthetic-tiny"

# One thread per process: two processes share the two cores of a small machine without oversubscription.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    """An untrained tiny autoencoder folder (the latent trainers only need a frozen one)."""
    from prediff.models.autoencoder import autoencoder_from_preset

    root = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    autoencoder_from_preset("prediff-tiny").save_pretrained(root)
    return root


# Runs on every process under `accelerate launch`: records what the process saw and did.
_SCRIPT = """
import json, sys, hashlib
import torch
from prediff.training import DenoiserTrainer, load_config
from prediff.training import checkpointing as checkpointing_module
from prediff.data import SyntheticStormDataset

out, vae, record = sys.argv[1], sys.argv[2], sys.argv[3]
seen, saves = [], []

class Recording(torch.utils.data.Dataset):
    def __init__(self, base):
        self.base = base
    def __len__(self):
        return len(self.base)
    def __getitem__(self, i):
        seen.append(int(i))
        return self.base[i]

original = checkpointing_module.save_checkpoint
def recording_save(*args, **kwargs):
    saves.append(args[1])
    return original(*args, **kwargs)
checkpointing_module.save_checkpoint = recording_save

config = load_config("denoiser", sys.argv[4], {
    "output_dir": out, "vae": vae, "max_train_steps": 3, "checkpointing_steps": 2,
    "num_validation_batches": 1, "num_validation_samples": 1, "validation_inference_steps": 2,
})
data = Recording(SyntheticStormDataset(8, 5, 32, 32, seed=0))
trainer = DenoiserTrainer(config, train_dataset=data, val_dataset=SyntheticStormDataset(2, 5, 32, 32, seed=9))
trainer.train()
unet = trainer.unwrap("denoiser")
digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in unet.parameters())).hexdigest()
rank = trainer.accelerator.process_index
with open(f"{record}-{rank}.json", "w") as f:
    # seen[0] is the shape probe of the trainer's constructor.
    json.dump({"seen": seen[1:], "saves": saves, "params": digest,
               "world": trainer.accelerator.num_processes}, f)
"""


def test_two_process_run_on_cpu(tmp_path, vae_dir):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "run"
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        str(script), str(out), str(vae_dir), str(tmp_path / "record"), str(TINY / "denoiser.yaml"),
    ]  # fmt: skip
    # Accelerate's multi-process launcher (torchrun); ACCELERATE_USE_CPU makes every process a CPU rank of a
    # gloo process group (`accelerate launch --cpu` alone starts a single process unless MPI is set up).
    env = {**ENV, "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / f"record-{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in records] == [2, 2]
    # Different data on the two processes, identical parameters at the end.
    for step in range(3):
        a = set(records[0]["seen"][2 * step : 2 * step + 2])
        b = set(records[1]["seen"][2 * step : 2 * step + 2])
        assert a and b and not a & b, records
    assert records[0]["params"] == records[1]["params"]
    # Only the main process wrote checkpoints and logs.
    assert records[0]["saves"] == [2, 3] and records[1]["saves"] == []
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
    pids = {p.name.split(".")[-2] for p in (out / "logs").rglob("events.out.tfevents.*")}
    assert len(pids) == 1, pids
    assert (out / "model_index.json").is_file()


def _train(out: Path, vae: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "prediff", "train", "alignment", "--config", str(TINY / "alignment.yaml"),
        "--output_dir", str(out), "--vae", str(vae), "--max_train_steps", "40", "--checkpointing_steps", "4",
        "--gradient_accumulation_steps", "2", "--use_ema", "true", "--report_to", "none",
        "--num_validation_batches", "1", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_with_the_same_steps_and_data(tmp_path, vae_dir):
    reference = _train(tmp_path / "straight", vae_dir)
    killed_dir = tmp_path / "killed"
    killed = _train(killed_dir, vae_dir)
    deadline = time.monotonic() + 240
    while not list_checkpoints(killed_dir) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert not (killed_dir / "config.json").exists(), "the run finished before it could be killed"
    saved = list_checkpoints(killed_dir)
    assert saved, "no checkpoint was written before the kill"
    step = json.loads((saved[-1] / "training_state.json").read_text())["step"]
    assert 0 < step < 40

    resumed = _train(killed_dir, vae_dir, "--resume_from_checkpoint", "latest")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert f"at step {step}" in out
    ref_out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err[-3000:]

    # Same step counter and data position at the end, and the same weights (hence data order, noise,
    # optimizer, learning-rate schedule and EMA) as the uninterrupted run.
    final = [
        json.loads((d / "checkpoint-40" / "training_state.json").read_text())
        for d in (tmp_path / "straight", killed_dir)
    ]
    for key in ("step", "micro_step", "epoch", "batch_in_epoch"):
        assert final[0][key] == final[1][key]
    a = load_file(str(tmp_path / "straight" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(killed_dir / "diffusion_pytorch_model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
