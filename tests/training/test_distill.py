"""`prediff train distill`: the consistency-distillation arithmetic against Diffusers' schedulers, and a tiny run
that trains, resumes exactly and exports a few-step pipeline whose members differ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, DDIMScheduler, LCMScheduler
from safetensors.torch import load_file

from prediff.metrics import EnsembleCRPS, crps_ensemble
from prediff.models import EarthformerUNetModel, MotionExtrapolator
from prediff.pipelines import PreDiffPipeline
from prediff.schedulers import PREDIFF_NOISE_SCHEDULE, default_inference_steps, prediff_scheduler
from prediff.training import DistillTrainer, load_config
from prediff.training.train_distill import (
    boundary_condition_scalings,
    consistency_output,
    ddim_solver_step,
    distillation_loss,
    distillation_timesteps,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def alphas() -> torch.Tensor:
    return prediff_scheduler("ddpm").alphas_cumprod


def test_grid_and_boundary_conditions_are_those_of_lcm_scheduler():
    lcm = prediff_scheduler("lcm", original_inference_steps=20)
    grid = distillation_timesteps(20)
    for steps in (1, 2, 4, 20):
        lcm.set_timesteps(steps)
        assert set(lcm.timesteps.tolist()) <= set(grid.tolist())
    assert grid[-1] == 999 and grid[0] == 49
    timesteps = torch.tensor([0, 1, 49, 500, 999])
    c_skip, c_out = boundary_condition_scalings(timesteps, 10.0)
    for t, skip, out in zip(timesteps.tolist(), c_skip, c_out):
        expected = lcm.get_scalings_for_boundary_condition_discrete(t)
        torch.testing.assert_close(torch.stack([skip, out]), torch.tensor(expected, dtype=torch.float32))
    assert c_skip[0] == 1 and c_out[0] == 0


def test_consistency_output_is_lcm_schedulers_denoised_sample(alphas):
    sample, noise_pred = torch.randn(2, 3, 4, 4, 2), torch.randn(2, 3, 4, 4, 2)
    lcm = LCMScheduler(**PREDIFF_NOISE_SCHEDULE, clip_sample=False, original_inference_steps=20)
    lcm.set_timesteps(2)
    t = int(lcm.timesteps[0])
    denoised = lcm.step(noise_pred, t, sample, return_dict=False)[1]
    ours = consistency_output(sample, noise_pred, alphas, torch.tensor([t, t]), 10.0)
    torch.testing.assert_close(ours, denoised)


def test_ddim_solver_step_is_a_ddim_scheduler_step(alphas):
    sample, noise_pred = torch.randn(1, 2, 4, 4, 2), torch.randn(1, 2, 4, 4, 2)
    # 20 trailing steps: 999, 949, ...: the step from 999 lands on 949, one stride of the distillation grid.
    ddim = DDIMScheduler(**PREDIFF_NOISE_SCHEDULE, clip_sample=False, timestep_spacing="trailing")
    ddim.set_timesteps(20)
    assert ddim.timesteps[:2].tolist() == [999, 949]
    expected = ddim.step(noise_pred, 999, sample, eta=0.0, return_dict=False)[0]
    ours = ddim_solver_step(sample, noise_pred, alphas, torch.tensor([999]), torch.tensor([949]))
    torch.testing.assert_close(ours, expected)


def test_distillation_losses_against_plain_definitions():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(distillation_loss(a, b, "l2", 0.1), torch.nn.functional.mse_loss(a, b))
    c = 0.1
    plain = sum(((x - y) ** 2 + c * c) ** 0.5 - c for x, y in zip(a.flatten().tolist(), b.flatten().tolist()))
    plain /= a.numel()
    assert float(distillation_loss(a, b, "huber", c)) == pytest.approx(plain, rel=1e-5)


@pytest.fixture(scope="module")
def teacher_dir(pipe_dir) -> Path:
    """The teacher: a randomly initialised "prediff-tiny" pipeline (3 + 2 frames of 32x32)."""
    return pipe_dir


def tiny_distill(teacher_dir: Path, out: Path, **overrides):
    values = {
        "output_dir": str(out),
        "teacher": str(teacher_dir),
        "data.num_sequences": 10,
        "data.height": 32,
        "data.width": 32,
        "data.context_length": 3,
        "data.target_length": 2,
        "data.val_fraction": 0.2,
        "train_batch_size": 2,
        "max_train_steps": 4,
        "checkpointing_steps": 2,
        "num_validation_batches": 1,
        "lr_warmup_steps": 0,
        "report_to": "none",
    }
    values.update(overrides)
    return load_config("distill", REPO / "examples" / "configs" / "shipped" / "distill.yaml", values)


def _unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_tiny_distillation_trains_resumes_exactly_and_exports_a_few_step_pipeline(teacher_dir, tmp_path):
    # Training on cached latents; the validation loss encodes frames, so both paths run.
    cache = 6
    out = tmp_path / "student"
    trainer = DistillTrainer(tiny_distill(teacher_dir, out, latent_cache_items=cache))
    trainer.train()
    assert np.isfinite(trainer.last_logs["val/loss"])
    teacher_weights = _unet_weights(teacher_dir)
    exported = _unet_weights(out)
    assert any(not torch.equal(exported[k], teacher_weights[k]) for k in exported), "the student did not move"

    pipe = PreDiffPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert pipe.scheduler.config.original_inference_steps == 20
    assert default_inference_steps(pipe.scheduler) == 4
    pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32)
    frames = pipe(context, num_ensemble_members=2, generator=torch.manual_seed(0)).frames
    assert frames.shape == (1, 2, 2, 32, 32, 1) and np.isfinite(frames).all()
    assert np.abs(frames[0, 0] - frames[0, 1]).mean() > 1e-3, "the members are identical"

    # Resuming from checkpoint-2 repeats steps 3..4 exactly: same data order, noise, optimizer, EMA target.
    shutil.rmtree(out / "checkpoint-4")
    DistillTrainer(tiny_distill(teacher_dir, out, latent_cache_items=cache, resume_from_checkpoint="latest")).train()
    for name, value in _unet_weights(out).items():
        torch.testing.assert_close(value, exported[name], rtol=1e-5, atol=1e-6)
    assert json.loads((out / "checkpoint-4" / "training_state.json").read_text())["step"] == 4


def test_teacher_must_exist_and_fit_the_data(teacher_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher"):
        tiny_distill(teacher_dir, tmp_path / "x", teacher=str(tmp_path / "missing")).validate()
    with pytest.raises(ValueError, match="num_ddim_timesteps"):
        tiny_distill(teacher_dir, tmp_path / "x", num_ddim_timesteps=30).validate()
    with pytest.raises(ValueError, match="the teacher takes contexts"):
        DistillTrainer(tiny_distill(teacher_dir, tmp_path / "x", **{"data.context_length": 2}))


def test_crps_student_draws_its_training_ensemble_exactly_as_its_pipeline(teacher_dir, tmp_path):
    members = 3
    trainer = DistillTrainer(
        tiny_distill(
            teacher_dir, tmp_path / "s", objective="crps", crps_members=members, crps_steps=2, latent_cache_items=0
        )
    )
    frames = torch.rand(2, 5, 32, 32, 1)
    torch.manual_seed(7)
    with torch.no_grad():
        forecast, target = trainer.crps_forecast(frames, trainer.unwrap("student"))
    assert forecast.shape == (2, members, 2, 32, 32, 1)
    torch.testing.assert_close(target, frames[:, 3:])

    # The exported sampler with the same noise: the initial draw, then LCMScheduler's fresh noise between steps.
    pipe = trainer.pipeline()
    pipe.set_progress_bar_config(disable=True)
    assert pipe.default_num_inference_steps == 2
    generator = torch.Generator().manual_seed(7)
    initial = torch.randn((2 * members, *pipe.unet.target_shape), generator=generator)
    drawn = pipe(
        frames[:, :3] * 255, num_ensemble_members=members, latents=initial, generator=generator, output_type="pt"
    ).frames
    torch.testing.assert_close(drawn, forecast * 255, rtol=1e-4, atol=1e-3)
    assert (forecast[:, 0] - forecast[:, 1]).abs().mean() > 1e-3, "the members are identical"

    # The loss is the fair CRPS of that ensemble, in physical units with crps_space "physical".
    for space, scale in (("unit", 1.0), ("physical", 255.0)):
        trainer.config.crps_space = space
        torch.manual_seed(7)
        with torch.no_grad():
            crps, _ = trainer._crps_losses(frames, trainer.unwrap("student"))
        expected = crps_ensemble(
            (forecast if space == "unit" else forecast.clamp(0, 1)) * scale, target * scale, fair=True
        )
        assert float(crps) == pytest.approx(expected, rel=1e-5)

    # With pooled scales, the mean of the per-pixel CRPS and that of the members' and observation's 4 x 4 and
    # 16 x 16 maxima, as EnsembleCRPS pools them.
    trainer.config.crps_space, trainer.config.crps_pool_sizes = "unit", [1, 4, 16]
    torch.manual_seed(7)
    with torch.no_grad():
        crps, _ = trainer._crps_losses(frames, trainer.unwrap("student"))
    pooled = EnsembleCRPS(pool_sizes=(1, 4, 16), fair=True)(forecast, target)
    assert pooled["crps_pool16"] != pytest.approx(pooled["crps"], rel=1e-2)
    assert float(crps) == pytest.approx(np.mean(list(pooled.values())), rel=1e-5)
    trainer.config.crps_pool_sizes = [1, 5]
    with pytest.raises(ValueError, match="crps_pool_sizes: 5 does not divide the frames' size 32x32"):
        trainer._crps_losses(frames, trainer.unwrap("student"))
    trainer.config.crps_pool_sizes = [1]

    # With thresholds (VIL levels here), the threshold-weighted CRPS of members and observation floored at each one
    # is added: a plain pairwise reference on the unit scale.
    def fair_crps(members: np.ndarray, observed: np.ndarray) -> float:
        m = members.shape[1]
        skill = np.abs(members - observed[:, None]).mean(axis=1)
        spread = np.abs(members[:, :, None] - members[:, None, :]).sum(axis=(1, 2)) / (2 * m * (m - 1))
        return float((skill - spread).mean())

    trainer.config.crps_thresholds = [74.0, 133.0]
    torch.manual_seed(7)
    with torch.no_grad():
        weighted, _ = trainer._crps_losses(frames, trainer.unwrap("student"))
    f, y = forecast.double().numpy(), target.double().numpy()
    expected = fair_crps(f, y) + sum(fair_crps(np.maximum(f, u / 255), np.maximum(y, u / 255)) for u in (74, 133))
    assert float(weighted) == pytest.approx(expected, rel=1e-5)
    assert float(weighted) > float(crps) * 1.01
    trainer.config.crps_thresholds = []

    # The loss reaches the student's weights through the chain and the decoder.
    crps, _ = trainer._crps_losses(frames, trainer.unwrap("student"))
    crps.backward()
    grads = [p.grad for p in trainer.unwrap("student").parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_tiny_crps_student_trains_and_samples_with_its_own_step_count(teacher_dir, tmp_path):
    out = tmp_path / "crps"
    trainer = DistillTrainer(
        tiny_distill(teacher_dir, out, objective="crps", crps_members=2, crps_steps=1, latent_cache_items=0)
    )
    trainer.train()
    assert np.isfinite(trainer.last_logs["val/loss"])
    teacher_weights = _unet_weights(teacher_dir)
    assert any(not torch.equal(v, teacher_weights[k]) for k, v in _unet_weights(out).items()), "no update"
    assert json.loads((out / "model_index.json").read_text())["default_inference_steps"] == {"LCMScheduler": 1}

    pipe = PreDiffPipeline.from_pretrained(out)
    assert pipe.default_num_inference_steps == 1
    steps = []
    pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32)
    pipe(context, num_ensemble_members=2, callback_on_step_end=lambda p, i, t, kw: steps.append(int(t)) or kw)
    assert steps == [999]
    # A scheduler of another class is not held to the student's count.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert pipe.default_num_inference_steps == default_inference_steps(pipe.scheduler) == 50


def test_crps_objective_settings_are_checked(teacher_dir, tmp_path):
    def check(**overrides):
        tiny_distill(teacher_dir, tmp_path / "x", **overrides).validate()

    with pytest.raises(ValueError, match="objective"):
        check(objective="adversarial")
    with pytest.raises(ValueError, match="crps_members"):
        check(objective="crps", crps_members=1, latent_cache_items=0)
    with pytest.raises(ValueError, match="crps_space"):
        check(objective="crps", crps_space="log", latent_cache_items=0)
    with pytest.raises(ValueError, match="crps_steps"):
        check(objective="crps", crps_steps=0, latent_cache_items=0)
    for pool_sizes in (4, [], [0], [4, 4], [2.5]):
        with pytest.raises(ValueError, match="crps_pool_sizes"):
            check(objective="crps", crps_pool_sizes=pool_sizes, latent_cache_items=0)
    for thresholds in (5.0, [float("nan")], [5.0, 5.0], [True]):
        with pytest.raises(ValueError, match="crps_thresholds"):
            check(objective="crps", crps_thresholds=thresholds, latent_cache_items=0)
    with pytest.raises(ValueError, match="latent_cache_items"):
        check(objective="crps", latent_cache_items=8)
    with pytest.raises(ValueError, match="default_inference_steps"):
        PreDiffPipeline.from_pretrained(teacher_dir, default_inference_steps={"LCMScheduler": 0})


@pytest.fixture(scope="module")
def few_step_teacher_dir(teacher_dir, tmp_path_factory) -> Path:
    """The tiny teacher, its denoiser's weights perturbed (an untrained one predicts zero noise, which any fresh
    student matches), sampling with LCMScheduler on the 20-level grid: a few-step teacher to imitate."""
    pipe = PreDiffPipeline.from_pretrained(teacher_dir)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe.scheduler = prediff_scheduler("lcm", original_inference_steps=20, timestep_scaling=10.0)
    folder = tmp_path_factory.mktemp("few-step") / "teacher"
    pipe.save_pretrained(folder)
    return folder


def test_imitation_loss_follows_the_teachers_own_lcm_trajectory(few_step_teacher_dir, tmp_path):
    trainer = DistillTrainer(tiny_distill(few_step_teacher_dir, tmp_path / "s", objective="imitation", loss_type="l2"))
    teacher, student = trainer.teacher, trainer.unwrap("student").eval()
    # A copy of the teacher imitates it exactly.
    latents = torch.randn(3, 5, 8, 8, 4)
    with torch.no_grad():
        losses, _ = trainer._imitation_losses(latents, student, None, cached=True)
    assert float(losses["student"]) < 1e-6 and set(losses) == {"student"}

    # Another student against a plain loop over LCMScheduler.step with the teacher's noise predictions, the
    # student's estimate read at every sample the teacher's sampler visits.
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    condition = latents[:, :3]
    torch.manual_seed(11)
    with torch.no_grad():
        losses, _ = trainer._imitation_losses(latents, student, None, cached=True)
    torch.manual_seed(11)
    lcm = trainer.scheduler()
    lcm.set_timesteps(2)
    sample = torch.randn(3, *teacher.target_shape)
    expected = []
    with torch.no_grad():
        for t in lcm.timesteps:
            rows = torch.full((3,), int(t))
            student_estimate = consistency_output(
                sample, student(sample, rows, condition).sample, trainer.alphas_cumprod, rows, 10.0
            )
            sample, teacher_estimate = lcm.step(teacher(sample, rows, condition).sample, t, sample, return_dict=False)
            expected.append(torch.nn.functional.mse_loss(student_estimate, teacher_estimate))
    assert len(expected) == 2 and float(losses["student"]) > 0
    assert float(losses["student"]) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-4)


def test_a_lighter_decoder_learns_what_the_pipeline_decodes(few_step_teacher_dir, tmp_path):
    """With an extrapolator the pipeline decodes the denoiser's residual plus the extrapolation's latents: the lighter
    decoder is scored on those (the teacher's forecast and the observed future) against the teacher's decoding."""
    base = PreDiffPipeline.from_pretrained(few_step_teacher_dir)
    torch.manual_seed(2)
    unet = EarthformerUNetModel(
        input_shape=(5, 8, 8, 4), target_shape=(2, 8, 8, 4), base_units=16, depth=(1, 1), num_heads=2
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path / "extrapolating-teacher"
    PreDiffPipeline(
        vae=base.vae, unet=unet, scheduler=base.scheduler, extrapolator=MotionExtrapolator(num_iterations=5)
    ).save_pretrained(folder)
    settings = dict(
        objective="imitation",
        imitation_steps=1,
        latent_cache_items=0,
        student_decoder={"block_out_channels": [4, 8, 8]},
    )
    trainer = DistillTrainer(tiny_distill(folder, tmp_path / "s", **settings))
    rows = trainer.cache_latents(2).latents
    decoder = trainer.unwrap("decoder").eval()
    torch.manual_seed(3)
    with torch.no_grad():
        losses, _ = trainer._imitation_losses(rows, trainer.unwrap("student"), decoder, cached=True)

    torch.manual_seed(3)
    sample = torch.randn(2, 2, 8, 8, 4)
    lcm = trainer.scheduler()
    lcm.set_timesteps(1)
    frames = torch.stack([trainer.train_dataset[i]["frames"] for i in range(2)]).float()
    offset = trainer.diffusion_latents(frames, sample_target=False).offset
    assert offset.abs().mean() > 0.1, "the extrapolation's latents must matter for this test"
    teacher = PreDiffPipeline.from_pretrained(folder)
    with torch.no_grad():
        rows_t = torch.full((2,), int(lcm.timesteps[0]))
        noise_estimate = teacher.unet(sample, rows_t, rows[:, :5]).sample
        _, residual = lcm.step(noise_estimate, lcm.timesteps[0], sample, return_dict=False)
        decoded = torch.cat([residual, rows[:, 5:]]) + torch.cat([offset, offset])
        expected = (decoder(decoded) - teacher.decode_unit(decoded)).abs().mean()
    assert float(losses["decoder"]) == pytest.approx(float(expected), rel=1e-4)


def test_a_smaller_student_with_a_lighter_decoder_trains_resumes_and_exports(few_step_teacher_dir, tmp_path):
    out = tmp_path / "small"
    settings = dict(
        objective="imitation",
        imitation_steps=2,
        student_model={"base_units": 8, "num_heads": 1},
        student_decoder={"block_out_channels": [4, 8, 8], "layers_per_block": 0},
        learning_rate=1e-3,
    )
    trainer = DistillTrainer(tiny_distill(few_step_teacher_dir, out, **settings))
    trainer.train()
    assert np.isfinite(trainer.last_logs["val/loss"]) and trainer.last_logs["val/decoder_mae"] > 0
    exported = _unet_weights(out)

    pipe = PreDiffPipeline.from_pretrained(out)
    teacher = PreDiffPipeline.from_pretrained(few_step_teacher_dir)
    assert pipe.unet.config.base_units == 8 and pipe.unet.config.num_heads == 1
    assert pipe.unet.config.input_shape == teacher.unet.config.input_shape
    assert isinstance(pipe.vae, AsymmetricAutoencoderKL) and tuple(pipe.vae.config.block_out_channels) == (4, 8, 8)
    assert json.loads((out / "model_index.json").read_text())["default_inference_steps"] == {"LCMScheduler": 2}
    encoder = {k: v for k, v in pipe.vae.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    reference = teacher.vae.state_dict()
    assert encoder and all(torch.equal(v, reference[k]) for k, v in encoder.items()), "the encoder changed"
    pipe.set_progress_bar_config(disable=True)
    context = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32, 1)).astype(np.float32)
    frames = pipe(context, num_ensemble_members=2, generator=torch.manual_seed(0)).frames
    assert frames.shape == (1, 2, 2, 32, 32, 1) and np.isfinite(frames).all()
    assert np.abs(frames[0, 0] - frames[0, 1]).mean() > 1e-3, "the members are identical"

    # Resuming from checkpoint-2 repeats steps 3..4 exactly, the decoder's optimizer included.
    decoder = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    shutil.rmtree(out / "checkpoint-4")
    DistillTrainer(tiny_distill(few_step_teacher_dir, out, resume_from_checkpoint="latest", **settings)).train()
    for name, value in _unet_weights(out).items():
        torch.testing.assert_close(value, exported[name], rtol=1e-5, atol=1e-6)
    resumed = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    for name, value in resumed.items():
        torch.testing.assert_close(value, decoder[name], rtol=1e-5, atol=1e-6)


def test_imitation_settings_are_checked(teacher_dir, few_step_teacher_dir, tmp_path):
    def config(**overrides):
        return tiny_distill(few_step_teacher_dir, tmp_path / "x", **overrides)

    with pytest.raises(ValueError, match=r"student_model: \['input_shape'\] are not settings"):
        config(student_model={"input_shape": [1, 8, 8, 4]}).validate()
    with pytest.raises(ValueError, match="student_decoder: a lighter decoder is trained by objective imitation"):
        config(student_decoder={"block_out_channels": [4, 8, 8]}).validate()
    with pytest.raises(ValueError, match="expected block_out_channels"):
        config(objective="imitation", student_decoder={"layers_per_block": 0}).validate()
    with pytest.raises(ValueError, match="student_decoder.layers_per_block"):
        config(
            objective="imitation", student_decoder={"block_out_channels": [4, 8, 8], "layers_per_block": -1}
        ).validate()
    with pytest.raises(ValueError, match="imitation_steps"):
        config(objective="imitation", imitation_steps=0).validate()
    # Settings of the right name but a value no network can take are named with the builder's reason.
    for bad, reason in (({"base_units": "wide"}, "can't multiply"), ({"num_heads": 5}, "multiple of num_heads=5")):
        with pytest.raises(ValueError, match=f"student_model .*no denoiser can be built.*{reason}"):
            DistillTrainer(config(objective="imitation", student_model=bad))
    # The teacher must itself be a few-step sampler on the run's grid.
    with pytest.raises(ValueError, match="objective imitation needs a few-step teacher"):
        DistillTrainer(tiny_distill(teacher_dir, tmp_path / "x", objective="imitation"))
    with pytest.raises(ValueError, match="objective imitation needs a few-step teacher"):
        DistillTrainer(config(objective="imitation", num_ddim_timesteps=50))
