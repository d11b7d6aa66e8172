"""prediff.training in one process: configurations, checkpoints, losses, data order, and the tiny recipes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from prediff.data import SyntheticStormDataset
from prediff.knowledge import AnticipatedIntensityControl
from prediff.training import (
    AlignmentTrainer,
    DenoiserTrainer,
    DiffusionLoss,
    EarthformerTrainer,
    NonFiniteGradientError,
    NonFiniteLossError,
    PatchGANDiscriminator,
    ShardedBatchSampler,
    VAETrainer,
    list_checkpoints,
    load_config,
    parse_override_args,
)
from prediff.training.checkpointing import load_state, save_checkpoint, save_state
from prediff.training.config import CONFIG_CLASSES
from prediff.training.losses import adaptive_adversarial_weight, gaussian_kl, hinge_discriminator_loss

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "configs" / "synthetic-tiny"
RECIPES = sorted((REPO / "examples" / "configs").rglob("*.yaml"))


def tiny(kind: str, tmp_path: Path, **overrides):
    """A tiny recipe, shortened for tests (no tensorboard, few validation batches)."""
    values = {"output_dir": str(tmp_path / kind), "report_to": "none", "num_validation_batches": 1}
    values.update(overrides)
    return load_config(kind, TINY / f"{kind}.yaml", values)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    """A trained tiny autoencoder (4 steps, the adversarial term on from step 2)."""
    root = tmp_path_factory.mktemp("vae")
    config = load_config(
        "vae",
        TINY / "vae.yaml",
        {
            "output_dir": str(root),
            "max_train_steps": 4,
            "disc_start": 2,
            "checkpointing_steps": 2,
            "num_validation_batches": 1,
        },
    )
    trainer = VAETrainer(config)
    trainer.train()
    assert "train/disc_loss" in trainer.last_logs and "train/adv_weight" in trainer.last_logs
    return root


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_are_valid(path, tmp_path):
    kind = path.stem.split("-")[0]  # a recipe's kind, e.g. alignment-robust.yaml is an alignment recipe
    # The published recipes name data folders of the user's machine; point them at an existing folder.
    overrides = {"data.path": str(tmp_path)} if "dataset: storms" not in path.read_text() else {}
    if kind in ("denoiser", "alignment"):
        vae = tmp_path / "vae"
        vae.mkdir()
        overrides["vae"] = str(vae)
    if kind == "distill" and "teacher: runs/" in path.read_text():
        # A later stage distils the output folder of an earlier one.
        teacher = tmp_path / "teacher"
        teacher.mkdir()
        overrides["teacher"] = str(teacher)
    if "init_weights: runs/" in path.read_text():
        # A fine-tuning recipe starts from the output folder of an earlier one.
        start = tmp_path / "start"
        start.mkdir()
        overrides["init_weights"] = str(start)
    if "knowledge_model:" in path.read_text():
        knowledge_model = tmp_path / "knowledge_model"
        knowledge_model.mkdir()
        overrides["knowledge_model"] = str(knowledge_model)
    config = load_config(kind, path, overrides)
    assert isinstance(config, CONFIG_CLASSES[kind])
    assert isinstance(config.learning_rate, float)


def test_scientific_notation_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 5e-6\nkl_weight: 1e-6\ndata:\n  num_sequences: 3\n")
    config = load_config("vae", path, parse_override_args(["--max_train_steps", "4", "--data.height=64", "--use_ema"]))
    assert config.learning_rate == 5e-6 and config.kl_weight == 1e-6
    assert config.max_train_steps == 4 and config.data.height == 64 and config.use_ema is True
    assert config.data.num_sequences == 3


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"max_train_step": 3}, ValueError, "did you mean 'max_train_steps'"),
        ({"data.num_sequence": 3}, ValueError, "'data.num_sequence'; did you mean 'data.num_sequences'"),
        ({"learning_rate": "fast"}, ValueError, "learning_rate must be a number"),
        ({"train_batch_size": 0}, ValueError, "train_batch_size must be an integer >= 1"),
        ({"mixed_precision": "fp8"}, ValueError, "mixed_precision must be one of"),
        (
            {"data.dataset": "sevir", "data.path": "/nonexistent/sevir"},
            FileNotFoundError,
            "/nonexistent/sevir",
        ),
        ({"data.dataset": "file"}, ValueError, "data.path is required"),
    ],
)
def test_bad_configurations_fail_clearly(overrides, error, match):
    with pytest.raises(error, match=match):
        load_config("earthformer", TINY / "earthformer.yaml", overrides)


@pytest.mark.parametrize(
    "arguments, message",
    [
        # Prefixes of real keys are not expanded to them (argparse's allow_abbrev would have).
        (["--max_train_step", "2"], "'max_train_step'; did you mean 'max_train_steps'"),
        (["--data.num_sequence=3"], "'data.num_sequence'; did you mean 'data.num_sequences'"),
        # Typos that are no prefix get the same suggestion instead of "unrecognized arguments".
        (["--max_trian_steps", "2"], "'max_trian_steps'; did you mean 'max_train_steps'"),
        (["--model.base_unit", "8"], "'model.base_unit' for EarthformerModel; did you mean 'model.base_units'"),
        (["stray"], "expected a --key value override, got 'stray'"),
        # Keys spelt with hyphens still reach their field.
        (["--max-train-steps", "0"], "max_train_steps must be null or an integer >= 1, got 0"),
    ],
)
def test_command_line_keys_are_exact(arguments, message, tmp_path, capsys):
    from prediff.cli import main

    out = tmp_path / "run"
    base = ["train", "earthformer", "--config", str(TINY / "earthformer.yaml"), "--output_dir", str(out)]
    assert main([*base, "--report_to", "none", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_latent_trainers_need_a_vae(tmp_path):
    with pytest.raises(ValueError, match="--vae DIR"):
        load_config("denoiser", None, {"vae": None})
    with pytest.raises(FileNotFoundError, match="missing-vae"):
        load_config("alignment", None, {"vae": str(tmp_path / "missing-vae")})


def test_shapes_that_do_not_fit_the_data_fail_before_training(tmp_path, vae_dir):
    config = tiny("denoiser", tmp_path, vae=str(vae_dir), **{"model.input_shape": [3, 16, 16, 4]})
    with pytest.raises(ValueError, match=r"model.input_shape = \(3, 16, 16, 4\) does not fit the data"):
        DenoiserTrainer(config)
    config = tiny("denoiser", tmp_path, vae=str(vae_dir), **{"model.base_unit": 8})
    with pytest.raises(ValueError, match="unknown configuration key 'model.base_unit'"):
        DenoiserTrainer(config)
    config = tiny("vae", tmp_path, **{"data.height": 34, "data.width": 34})
    with pytest.raises(ValueError, match="does not fit the data"):
        VAETrainer(config)
    assert not (tmp_path / "denoiser").exists() and not (tmp_path / "vae").exists()


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"train_batch_size": 7}, ValueError, "6 items, fewer than one global batch"),
        ({"resume_from_checkpoint": "checkpoint-3"}, FileNotFoundError, "'checkpoint-3' is not a checkpoint"),
        ({"resume_from_checkpoint": "OTHER"}, ValueError, r"is from `train vae`, not `train earthformer`"),
    ],
)
def test_errors_found_when_training_starts_write_nothing(overrides, error, match, tmp_path):
    other = save_checkpoint(tmp_path / "other", 1, {}, {}, {"kind": "vae"})
    if overrides.get("resume_from_checkpoint") == "OTHER":
        overrides = {"resume_from_checkpoint": str(other)}
    trainer = EarthformerTrainer(tiny("earthformer", tmp_path, **{"data.num_sequences": 8}, **overrides))
    with pytest.raises(error, match=match):
        trainer.train()
    assert not (tmp_path / "earthformer").exists()


# ------------------------------------------------------------------------------------------ building blocks


def test_sharded_batches_are_disjoint_complete_and_resumable():
    n, bs, world, seed = 23, 3, 2, 7
    ranks = [ShardedBatchSampler(n, bs, world, r, seed) for r in range(world)]
    per_epoch = ranks[0].batches_per_epoch
    assert per_epoch == n // (bs * world)
    seen = []
    for b in range(per_epoch):
        a, c = ranks[0].indices(b), ranks[1].indices(b)
        assert len(a) == len(c) == bs and not set(a) & set(c)
        seen += a + c
    assert len(set(seen)) == per_epoch * bs * world
    # Epochs reshuffle; starting in the middle gives exactly what iterating from 0 gives.
    assert ranks[0].indices(0) != ranks[0].indices(per_epoch)
    it = iter(ranks[1])
    full = [next(it) for _ in range(3 * per_epoch)]
    resumed = iter(ShardedBatchSampler(n, bs, world, 1, seed, start_batch=5))
    assert [next(resumed) for _ in range(3 * per_epoch - 5)] == full[5:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatchSampler(5, 3, 2, 0, 0)


def test_optimizer_state_round_trip_continues_identically(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(8, 4)
    for _ in range(3):
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    save_state(tmp_path, "opt", opt.state_dict())
    assert not list(tmp_path.glob("*.pt")) and json.loads((tmp_path / "opt.json").read_text())
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(clone.parameters(), lr=1e-2)
    opt2.load_state_dict(load_state(tmp_path, "opt"))
    for m, o in ((model, opt), (clone, opt2)):
        m(x).pow(2).mean().backward()
        o.step()
    torch.testing.assert_close(clone.weight, model.weight, rtol=0, atol=0)


class _Boom(torch.nn.Module):
    def state_dict(self, *args, **kwargs):
        raise OSError("disk full")


def test_checkpoint_save_is_atomic(tmp_path):
    good = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, 1, {"net": good}, {"opt": {"a": torch.ones(2)}}, {"kind": "x"})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"net": good, "bad": _Boom()}, {}, {"kind": "x"})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]  # no temporary left
    # An incomplete folder (no training state) is never taken for a checkpoint; rotation keeps the newest.
    (tmp_path / "checkpoint-9").mkdir()
    for step in (3, 4):
        save_checkpoint(tmp_path, step, {"net": good}, {}, {"kind": "x"}, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    state = load_file(str(tmp_path / "checkpoint-4" / "net.safetensors"))
    torch.testing.assert_close(state["weight"], good.weight.detach())


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_get_the_permissions_of_plain_ones(tmp_path, umask):
    from prediff.training.config_loading import save_config

    previous = os.umask(umask)
    try:
        checkpoint = save_checkpoint(tmp_path / "run", 1, {"net": torch.nn.Linear(2, 2)}, {}, {"kind": "x"})
        save_config(load_config("earthformer"), tmp_path / "run" / "training_config.yaml")
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain.txt").write_text("")
    finally:
        os.umask(previous)
    folder_mode, file_mode = 0o777 & ~umask, 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE(checkpoint.stat().st_mode) == folder_mode
    for file in (
        checkpoint / "training_state.json",
        checkpoint / "net.safetensors",
        tmp_path / "run" / "training_config.yaml",
    ):
        assert stat.S_IMODE(file.stat().st_mode) == file_mode, file


def test_losses_against_plain_definitions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    dist = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    reference = torch.distributions.kl_divergence(dist, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), reference, rtol=1e-5, atol=1e-5)
    real, fake = torch.randn(10), torch.randn(10)
    expected = 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), expected)
    # Adaptive weight: ratio of gradient norms at the last layer.
    w = torch.randn(5, requires_grad=True)
    rec, adv = (w**2).sum(), (3 * w).sum()
    weight = adaptive_adversarial_weight(rec, adv, w, 0.5)
    torch.testing.assert_close(weight, 0.5 * (2 * w).norm().detach() / (torch.full((5,), 3.0).norm() + 1e-4))
    # Learned log-variance: at 0 it is the plain MSE; its gradient pulls logvar toward log(mse).
    loss_fn = DiffusionLoss(10, learn_logvar=True)
    pred, noise, t = torch.randn(4, 2, 3), torch.randn(4, 2, 3), torch.tensor([0, 3, 3, 9])
    loss, mse = loss_fn(pred, noise, t)
    torch.testing.assert_close(loss, ((pred - noise) ** 2).mean())
    loss.backward()
    per_sample = ((pred - noise) ** 2).mean(dim=(1, 2))
    expected_grad = torch.zeros(10).index_add_(0, t, (1 - per_sample) / 4)
    torch.testing.assert_close(loss_fn.logvar.grad, expected_grad)


def test_patchgan_has_the_official_layout():
    disc = PatchGANDiscriminator()
    # conv 1->64 (+bias), 64->128, 128->256, 256->512 (no bias, batch norm), 512->1 (+bias); 4x4 kernels.
    expected = (1 * 64 * 16 + 64) + 64 * 128 * 16 + 256 + 128 * 256 * 16 + 512 + 256 * 512 * 16 + 1024 + 512 * 16 + 1
    assert sum(p.numel() for p in disc.parameters()) == expected
    assert disc(torch.rand(2, 1, 128, 128)).shape == (2, 1, 14, 14)


# ------------------------------------------------------------------------------------------ tiny recipes


def test_vae_result_loads_and_logs(vae_dir):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir)
    assert vae.config.latent_channels == 4
    assert sorted(p.name for p in list_checkpoints(vae_dir)) == ["checkpoint-2", "checkpoint-4"]
    assert list((vae_dir / "validation").glob("reconstruction-*.png"))
    assert list((vae_dir / "logs").rglob("events.out.tfevents.*"))
    state = json.loads((vae_dir / "checkpoint-4" / "training_state.json").read_text())
    assert state["step"] == 4 and state["kind"] == "vae" and state["config"]["disc_start"] == 2


class _NaNAfter(Dataset):
    """Items of `base`, NaN from the `clean`-th read on."""

    def __init__(self, base: Dataset, clean: int) -> None:
        self.base, self.clean, self.reads = base, clean, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        self.reads += 1
        item = dict(self.base[index])
        if self.reads > self.clean:
            item["frames"] = torch.full_like(item["frames"], float("nan"))
        return item


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = _NaNAfter(SyntheticStormDataset(4, 2, 32, 32, seed=1), clean=5)  # 1 shape probe + 2 steps
    config = tiny("vae", tmp_path, max_train_steps=6, checkpointing_steps=2, **{"data.seq_len": 2})
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*last good checkpoint is .*checkpoint-2"):
        VAETrainer(config, train_dataset=data).train()
    out = tmp_path / "vae"
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert not (out / "config.json").exists()


def test_non_finite_gradients_stop_before_the_optimizer_step(tmp_path):
    # From step 2 on, one parameter's gradient is NaN while the loss stays finite; without max_grad_norm the
    # norm is still checked, and with gradient accumulation only on the step's last micro-batch.
    config = tiny(
        "earthformer",
        tmp_path,
        max_train_steps=4,
        checkpointing_steps=1,
        gradient_accumulation_steps=2,
        max_grad_norm=None,
        num_validation_samples=0,
        **{"data.num_sequences": 8},
    )
    trainer = EarthformerTrainer(config)
    model = trainer.train_modules["earthformer"]
    first = next(model.parameters())
    first.register_hook(lambda grad: grad * float("nan") if trainer.global_step >= 1 else grad)
    with pytest.raises(
        NonFiniteGradientError, match=r"step 2 \(micro-batch 3.*last good checkpoint is .*checkpoint-1"
    ):
        trainer.train()
    # No optimizer step ran after the NaN gradients: the weights and the kept checkpoint are finite.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    out = tmp_path / "earthformer"
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    files = sorted((out / "checkpoint-1").rglob("*.safetensors"))
    assert files and all(torch.isfinite(t).all() for f in files for t in load_file(str(f)).values())
    assert not (out / "config.json").exists() and not (out / "model_index.json").exists()
    assert issubclass(NonFiniteGradientError, NonFiniteLossError)  # the command line reports both alike


def test_gradients_are_clipped_to_max_grad_norm_by_accelerate(tmp_path):
    class Recording(EarthformerTrainer):
        def _clip_and_check_gradients(self, micro_step):
            norms = super()._clip_and_check_gradients(micro_step)
            params = [p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]]
            clipped.append((norms["earthformer"], float(torch.nn.utils.get_total_norm([p.grad for p in params]))))
            return norms

    clipped = []
    config = tiny("earthformer", tmp_path, max_train_steps=2, max_grad_norm=1e-3, num_validation_samples=0)
    Recording(config).train()
    assert len(clipped) == 2
    for before, after in clipped:
        assert before > 1e-2 and after == pytest.approx(1e-3, rel=1e-3)


def test_tiny_earthformer_recipe_exports_a_pipeline_with_its_units(tmp_path, umask_027):
    from prediff.data.storm_generator import VIL_UNITS
    from prediff.models import EarthformerModel
    from prediff.pipelines import EarthformerPipeline

    EarthformerTrainer(tiny("earthformer", tmp_path, max_train_steps=2)).train()
    out = tmp_path / "earthformer"
    pipe = EarthformerPipeline.from_pretrained(out)
    assert pipe.value_range == (0.0, 255.0) and pipe.config.units == VIL_UNITS
    assert "2 steps" in pipe.config.training_data and VIL_UNITS in (out / "README.md").read_text()
    assert list((out / "validation").glob("forecast-*.png")) and (out / "checkpoint-2").is_dir()
    # Everything the run wrote, weights included, is readable by the group as under a plain open() / mkdir().
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o640}
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_dir()} == {0o750}
    # The network alone loads from its subfolder; the pipeline forecasts in physical units with it.
    model = EarthformerModel.from_pretrained(out, subfolder="model").eval()
    context = torch.rand(1, 3, 32, 32, 1) * 255
    frames = pipe(context, output_type="pt").frames
    assert frames.shape == (1, 2, 32, 32, 1) and torch.isfinite(frames).all()
    with torch.no_grad():
        torch.testing.assert_close(frames, model(context / 255).sample * 255)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"intensity_gain": [2.0, 1.0]}, "intensity_gain must be null or \\[low, high\\]"),
        ({"intensity_gain": [0.5]}, "intensity_gain must be null or"),
        ({"intensity_gain": "bright"}, "intensity_gain must be a list"),
        ({"clean_fraction": 1.5}, "clean_fraction must be a number in \\[0, 1\\]"),
        ({"robust_step": -1.0}, "robust_step must be a number >= 0"),
        ({"labels": "pixels"}, "labels must be one of \\('data', 'decoded'\\)"),
        ({"gradient_weight": -0.1}, "gradient_weight must be a number >= 0"),
        ({"steered_steps": 0}, "steered_steps must be an integer >= 1"),
    ],
)
def test_alignment_augmentation_options_are_checked(overrides, match, tmp_path, vae_dir):
    with pytest.raises(ValueError, match=match):
        tiny("alignment", tmp_path, vae=str(vae_dir), **overrides)


def test_alignment_augmentation_brightens_and_labels_gradient_steps_by_decoding(tmp_path, vae_dir):
    from prediff.models.autoencoder import decode_sequence

    fixed = SyntheticStormDataset(4, 5, 32, 32, seed=3)
    options = dict(intensity_gain=[0.5, 3.0], clean_fraction=1.0, robust_step=2.0, labels="decoded")
    options["num_validation_samples"] = 0
    config = tiny("alignment", tmp_path, vae=str(vae_dir), max_train_steps=2, **options)
    assert config.intensity_gain == [0.5, 3.0]
    trainer = AlignmentTrainer(config, train_dataset=fixed, val_dataset=fixed)

    frames = torch.stack([fixed[i]["frames"] for i in range(4)])
    torch.manual_seed(0)
    dim = frames[:1] * 0.3 / frames[:1].max()  # no pixel clips below a gain of 3
    bright = trainer.brighten(dim.expand(64, -1, -1, -1, -1))
    gains = bright.amax(dim=(1, 2, 3, 4)) / dim.amax()
    assert bright.max() <= 1 and bright.min() >= 0
    assert gains.min() >= 0.5 - 1e-6 and gains.max() > 1.5 and gains.min() < 0.9

    # A gradient step: along the network's input gradient, of root mean square at most robust_step, labelled
    # with the label plus the decoded change of the per-frame mean.
    latents = trainer.diffusion_latents(frames).target
    label = torch.rand(4, 2, 1)
    moved, moved_label = trainer.gradient_steps(latents, label)
    step = moved - latents
    assert (step.flatten(1).pow(2).mean(dim=1).sqrt() <= 2.0 + 1e-5).all() and step.abs().max() > 0
    probe = latents.clone().requires_grad_(True)
    model = trainer.unwrap("alignment")
    (grad,) = torch.autograd.grad(model(probe, torch.zeros(4, dtype=torch.long)).sample.sum(), probe)
    cosine = torch.nn.functional.cosine_similarity(step.flatten(1), grad.flatten(1)).abs()
    torch.testing.assert_close(cosine, torch.ones(4), rtol=0, atol=1e-4)
    with torch.no_grad():
        before, after = (
            decode_sequence(trainer.vae, z / trainer.scaling_factor).mean(dim=(2, 3, 4))[..., None]
            for z in (latents, moved)
        )
    torch.testing.assert_close(trainer.decoded_statistic(latents), before)
    torch.testing.assert_close(moved_label, after, rtol=1e-4, atol=1e-5)  # labels: decoded
    # With data labels the step's label is the data label plus the decoded change.
    trainer.config.labels = "data"
    torch.manual_seed(1)
    moved, moved_label = trainer.gradient_steps(latents, label)
    with torch.no_grad():
        after = decode_sequence(trainer.vae, moved / trainer.scaling_factor).mean(dim=(2, 3, 4))[..., None]
    torch.testing.assert_close(moved_label, label + after - before, rtol=1e-4, atol=1e-5)
    trainer.config.labels = "decoded"

    # The gradient the network is matched to: the decoded statistic's, here against finite differences.
    expected = trainer.decoded_gradient(latents[:1])
    direction = torch.randn_like(latents[:1])
    eps = 1e-2
    change = trainer.decoded_statistic(latents[:1] + eps * direction) - trainer.decoded_statistic(
        latents[:1] - eps * direction
    )
    torch.testing.assert_close((expected * direction).sum(), change.sum() / (2 * eps), rtol=2e-2, atol=1e-5)

    # The matching term adds to the loss (same seed, same rows).
    model = trainer.train_modules["alignment"]
    losses = []
    for weight in (0.0, 1.0):
        trainer.config.gradient_weight = weight
        torch.manual_seed(0)
        losses.append(trainer._loss(frames, model, augment=True).item())
    assert losses[1] > losses[0] + 1e-3, losses

    # Training with every option runs and keeps the augmented rows out of validation.
    trainer.train()
    assert np.isfinite(trainer.last_logs["train/loss"]) and "val/mse" in trainer.last_logs


def test_energy_alignment_learns_the_items_energies_of_the_nbody_digits(tmp_path, vae_dir):
    from prediff.data import NBodyDataset

    data = {"data.dataset": "nbody", "data.num_sequences": 8, "data.val_fraction": 0.25}
    config = tiny("alignment", tmp_path, vae=str(vae_dir), statistic="energy", max_train_steps=2, **data)
    assert config.label_key == "energy"
    trainer = AlignmentTrainer(config)
    # The split is cached with the energies; batches carry them, and the label is the target frames' energies.
    nbody = NBodyDataset(8, 5, seed=0, frame_size=32)
    item = trainer.train_dataset[0]
    assert set(item) == {"frames", "energy", "index"} and item["energy"].shape == (5,)
    match = next(i for i in range(8) if torch.allclose(item["frames"], nbody[i]["frames"]))
    torch.testing.assert_close(item["energy"], torch.as_tensor(nbody[match]["energy"]))
    frames, energies = item["frames"][None], item["energy"][None]
    latents = trainer.diffusion_latents(frames).target
    label = trainer.target_statistic(frames, latents, energies)
    torch.testing.assert_close(label, energies[:, 3:, None])
    with pytest.raises(ValueError, match="needs the items' energies"):
        trainer.target_statistic(frames, latents, None)
    trainer.train()
    assert np.isfinite(trainer.last_logs["train/loss"]) and np.isfinite(trainer.last_logs["val/mse"])


@pytest.mark.parametrize("option", [{"robust_step": 1.0}, {"labels": "decoded"}, {"intensity_gain": [1.0, 2.0]}])
def test_energy_alignment_refuses_frame_statistic_options(option, tmp_path, vae_dir):
    data = {"data.dataset": "nbody", "data.num_sequences": 8}
    with pytest.raises(ValueError, match="need a statistic computed from frames"):
        tiny("alignment", tmp_path, vae=str(vae_dir), statistic="energy", **data, **option)


def test_energy_alignment_on_data_without_energies_names_the_problem(tmp_path, vae_dir):
    config = tiny("alignment", tmp_path, vae=str(vae_dir), statistic="energy", **{"data.num_sequences": 8})
    with pytest.raises(KeyError, match="carry no 'energy'.*data.dataset: nbody"):
        AlignmentTrainer(config)


def test_gradient_checkpointing_recomputes_and_trains_the_same(tmp_path, vae_dir):
    weights, calls = [], []
    for checkpointing in (False, True):
        config = tiny(
            "alignment",
            tmp_path / str(checkpointing),
            vae=str(vae_dir),
            max_train_steps=2,
            gradient_checkpointing=checkpointing,
            num_validation_samples=0,
            **{"data.num_sequences": 8},
        )
        trainer = AlignmentTrainer(config)
        model = trainer.train_modules["alignment"]
        # Counted in forward itself: module hooks do not run when checkpointing recomputes.
        block = model.down_time_embed_blocks[0]
        with_grad: list[bool] = []

        def counting_forward(*args, forward=block.forward, seen=with_grad):
            seen.append(torch.is_grad_enabled())
            return forward(*args)

        block.forward = counting_forward
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
        calls.append(sum(with_grad))
    # With checkpointing every training forward of the block runs again in backward; the result is the same.
    assert calls == [2, 4]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-5, atol=1e-6)


# Accelerate keeps one mixed-precision setting per process, so the bf16 run has a process of its own.
_BF16_SCRIPT = """
import json, sys
import torch
from prediff.training import EarthformerTrainer, load_config

config = load_config("earthformer", sys.argv[1], {
    "output_dir": sys.argv[2], "report_to": "none", "max_train_steps": 2, "mixed_precision": "bf16",
    "num_validation_batches": 1, "num_validation_samples": 0, "data.num_sequences": 8,
})
trainer = EarthformerTrainer(config)
dtypes = set()
for module in trainer.train_modules["earthformer"].modules():
    if isinstance(module, torch.nn.Linear):
        module.register_forward_hook(lambda m, i, o: dtypes.add(str(o.dtype)))
trainer.train()
print(json.dumps({"dtypes": sorted(dtypes), "loss": trainer.last_logs["train/loss"]}))
"""


def test_bf16_mixed_precision_runs_on_the_cpu(tmp_path):
    import subprocess
    import sys

    from prediff.pipelines import EarthformerPipeline

    out = tmp_path / "bf16"
    run = subprocess.run(
        [sys.executable, "-c", _BF16_SCRIPT, str(TINY / "earthformer.yaml"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "torch.bfloat16" in result["dtypes"] and np.isfinite(result["loss"])
    pipe = EarthformerPipeline.from_pretrained(out)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in pipe.model.parameters())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_denoiser_learns_exports_a_pipeline_and_resumes_exactly(tmp_path, vae_dir):
    from prediff.pipelines import PreDiffPipeline

    fixed = SyntheticStormDataset(4, 5, 32, 32, seed=3)
    align = tiny("alignment", tmp_path, vae=str(vae_dir), max_train_steps=2, num_validation_samples=0)
    AlignmentTrainer(align, train_dataset=fixed, val_dataset=fixed).train()

    overrides = dict(vae=str(vae_dir), knowledge_model=str(tmp_path / "alignment"), checkpointing_steps=15)
    config = tiny("denoiser", tmp_path, max_train_steps=30, **overrides)
    trainer = DenoiserTrainer(config, train_dataset=fixed, val_dataset=fixed)
    before = trainer.validate(0)["val/eps_mse"]
    trainer.train()
    after = trainer.last_logs["val/eps_mse"]
    assert after < 0.9 * before, (before, after)

    out = tmp_path / "denoiser"
    pipe = PreDiffPipeline.from_pretrained(out)
    assert pipe.knowledge_model is not None
    context = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32)
    frames = pipe(context, num_inference_steps=4, num_ensemble_members=2, generator=torch.manual_seed(0)).frames
    assert frames.shape == (1, 2, 2, 32, 32, 1) and np.isfinite(frames).all()
    # The exported network holds the EMA weights of the last checkpoint.
    ema = load_file(str(out / "checkpoint-30" / "ema.safetensors"))
    exported = _weights(out / "unet")
    names = [n for n, _ in pipe.unet.named_parameters()]
    for i, name in enumerate(names):
        torch.testing.assert_close(exported[name], ema[f"shadow_params.{i}"])

    # Resuming from checkpoint-15 repeats steps 16..30 exactly: same data order, noise, optimizer, EMA.
    shutil.rmtree(out / "checkpoint-30")
    again = tiny("denoiser", tmp_path, max_train_steps=30, resume_from_checkpoint="latest", **overrides)
    DenoiserTrainer(again, train_dataset=fixed, val_dataset=fixed).train()
    for name, value in _weights(out / "unet").items():
        torch.testing.assert_close(value, exported[name], rtol=1e-5, atol=1e-6)
    assert json.loads((out / "checkpoint-30" / "training_state.json").read_text())["step"] == 30


def test_extrapolation_recipe_scales_residuals_and_exports_an_extrapolating_pipeline(tmp_path, vae_dir):
    from prediff.models import MotionExtrapolator
    from prediff.models.autoencoder import encode_sequence
    from prediff.pipelines import PreDiffPipeline
    from prediff.training.latent import load_vae

    fixed = SyntheticStormDataset(4, 5, 32, 32, seed=3)
    shared = dict(vae=str(vae_dir), extrapolation={"num_iterations": 10}, latent_scaling="std")
    align = tiny("alignment", tmp_path, max_train_steps=2, num_validation_samples=0, **shared)
    AlignmentTrainer(align, train_dataset=fixed, val_dataset=fixed).train()
    config = tiny("denoiser", tmp_path, max_train_steps=2, knowledge_model=str(tmp_path / "alignment"), **shared)
    trainer = DenoiserTrainer(config, train_dataset=fixed, val_dataset=fixed)
    trainer.train()

    # The scaling factor is one over the std of the residuals "future latents - extrapolation latents" (posterior
    # means of the 4 training items), computed here from the public pieces.
    frames = torch.stack([fixed[i]["frames"] for i in range(4)])
    vae = load_vae(vae_dir)
    extrapolated = MotionExtrapolator(num_iterations=10)(frames[:, :3], 2)
    residual = encode_sequence(vae, frames[:, 3:], sample_posterior=False) - encode_sequence(
        vae, extrapolated, sample_posterior=False
    )
    pipe = PreDiffPipeline.from_pretrained(tmp_path / "denoiser")
    assert pipe.scaling_factor == pytest.approx(1 / float(residual.std()), rel=1e-4)
    assert isinstance(pipe.extrapolator, MotionExtrapolator) and pipe.extrapolator.config.num_iterations == 10
    assert pipe.unet.input_shape[0] == 3 + 2 and pipe.context_shape == (3, 32, 32, 1)
    context = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32)
    control = AnticipatedIntensityControl(target=50.0)
    frames = pipe(context, num_inference_steps=3, num_ensemble_members=2, knowledge_controls=control).frames
    assert frames.shape == (1, 2, 2, 32, 32, 1) and (frames >= 0).all() and (frames <= 255).all()


def test_bad_extrapolation_settings_fail_before_training(tmp_path, vae_dir):
    config = tiny("denoiser", tmp_path, vae=str(vae_dir), extrapolation={"grid_spacing": 0}, max_train_steps=1)
    with pytest.raises(ValueError, match="extrapolation: grid_spacing must be an int >= 1"):
        DenoiserTrainer(config)
    with pytest.raises(ValueError, match="latent_scaling must be one of"):
        tiny("denoiser", tmp_path, vae=str(vae_dir), latent_scaling="auto")


def test_alignment_fine_tunes_on_the_clean_estimates_of_a_steered_pipeline(tmp_path, vae_dir):
    """`init_weights` starts from a pipeline's alignment network; `steered_pipeline` adds, per batch, clean
    estimates the network read while steering that pipeline, labelled by decoding; a pipeline in another latent
    space is refused."""
    from prediff.pipelines import PreDiffPipeline

    fixed = SyntheticStormDataset(4, 5, 32, 32, seed=3)
    shared = dict(vae=str(vae_dir), extrapolation={"num_iterations": 10}, latent_scaling="std")
    align = tiny("alignment", tmp_path, max_train_steps=2, num_validation_samples=0, **shared)
    AlignmentTrainer(align, train_dataset=fixed, val_dataset=fixed).train()
    denoiser = tiny("denoiser", tmp_path, max_train_steps=2, knowledge_model=str(tmp_path / "alignment"), **shared)
    DenoiserTrainer(denoiser, train_dataset=fixed, val_dataset=fixed).train()
    pipeline = tmp_path / "denoiser"

    options = dict(init_weights=str(pipeline), steered_pipeline=str(pipeline), steered_steps=2, labels="decoded")
    options |= dict(intensity_gain=[1.0, 3.0], max_train_steps=2, num_validation_samples=0)
    config = tiny("alignment", tmp_path, output_dir=str(tmp_path / "steered"), **shared, **options)
    trainer = AlignmentTrainer(config, train_dataset=fixed, val_dataset=fixed)
    shipped = PreDiffPipeline.from_pretrained(pipeline).knowledge_model.state_dict()
    for name, weight in trainer.unwrap("alignment").state_dict().items():
        torch.testing.assert_close(weight, shipped[name])

    frames = torch.stack([fixed[i]["frames"] for i in range(4)])
    seen = []
    model = trainer.unwrap("alignment")
    hook = model.register_forward_hook(lambda module, args, output: seen.append(args[0].detach()))
    try:
        torch.manual_seed(0)
        latents, labels = trainer.steered_rows(frames)
    finally:
        hook.remove()
    # As many rows as the batch, each one the network read during the steered forecast (3 iterations of the
    # control at 2 steps: more than the batch's rows), labelled with its decoded per-frame mean.
    read = torch.cat(seen)
    assert latents.shape == (4, *model.input_shape) and read.shape[0] > 4
    assert all(bool((read - row).abs().amax(dim=(1, 2, 3, 4)).min() == 0) for row in latents)
    torch.testing.assert_close(labels, trainer.decoded_statistic(latents))
    assert model.training
    trainer.train()
    assert np.isfinite(trainer.last_logs["train/loss"])

    other = tiny("alignment", tmp_path, vae=str(vae_dir), steered_pipeline=str(pipeline), max_train_steps=1)
    with pytest.raises(ValueError, match=f"steered_pipeline '{pipeline}'"):
        AlignmentTrainer(other, train_dataset=fixed, val_dataset=fixed)
