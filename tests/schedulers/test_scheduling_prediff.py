"""PreDiff's noise schedule: the official betas, and every preset built on them."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

from prediff.schedulers import (
    DEFAULT_INFERENCE_STEPS,
    PORTABLE_SCHEDULER_SETTINGS,
    SCHEDULER_PRESETS,
    default_inference_steps,
    official_betas,
    prediff_scheduler,
    prediff_training_scheduler,
    record_portable_settings,
)


def test_training_schedule_equals_the_official_betas():
    scheduler = prediff_training_scheduler()
    assert isinstance(scheduler, DDPMScheduler)
    cfg = scheduler.config
    assert (cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end) == (1000, 1e-4, 2e-2)
    assert (cfg.beta_schedule, cfg.prediction_type, cfg.variance_type) == (
        "scaled_linear",
        "epsilon",
        "fixed_small",
    )
    assert cfg.clip_sample is False
    betas = official_betas()
    assert (scheduler.betas - betas).abs().max() < 1e-8
    # Plain float64 reference of the official alpha_bar.
    ref = torch.cumprod(1 - betas.double(), dim=0)
    assert ((scheduler.alphas_cumprod.double() - ref).abs() / ref).max() < 2e-6
    assert abs(scheduler.alphas_cumprod[0].item() - 0.9999) < 1e-7
    assert abs(scheduler.alphas_cumprod[999].item() - 7.334e-4) / 7.334e-4 < 1e-3


def test_posterior_variance_matches_official_values():
    scheduler = prediff_training_scheduler()
    scheduler.set_timesteps(1000)
    a = scheduler.alphas_cumprod.double()
    for t, expected in [(1, 5.07e-5), (999, 0.0200)]:
        beta_tilde = (1 - a[t - 1]) / (1 - a[t]) * (1 - a[t] / a[t - 1])
        assert abs(beta_tilde.item() - expected) / expected < 5e-3
        assert abs(scheduler._get_variance(t).item() - beta_tilde.item()) / beta_tilde.item() < 1e-3


@pytest.mark.parametrize("name", sorted(SCHEDULER_PRESETS))
def test_every_preset_shares_the_training_noise_levels(name):
    scheduler = prediff_scheduler(name)
    reference = prediff_training_scheduler()
    assert torch.equal(scheduler.alphas_cumprod, reference.alphas_cumprod)
    assert scheduler.config.prediction_type == "epsilon"
    scheduler.set_timesteps(DEFAULT_INFERENCE_STEPS[name])
    timesteps = scheduler.timesteps
    assert len(timesteps) == DEFAULT_INFERENCE_STEPS[name]
    # Sampling starts from the noisiest trained level, where z_T ~ N(0, I) is what the model saw.
    assert float(timesteps[0]) == 999.0
    assert all(float(a) > float(b) for a, b in zip(timesteps[:-1], timesteps[1:]))


@pytest.mark.parametrize("name", sorted(SCHEDULER_PRESETS))
@pytest.mark.parametrize("steps", [1, 3, 5, 20, 50, 1000])
def test_sampling_starts_at_the_noisiest_level_for_any_step_count(name, steps):
    scheduler = prediff_scheduler(name)
    grid = scheduler.config.get("original_inference_steps")
    if name == "lcm" and steps > grid:
        # Consistency sampling steps lie on the distillation grid: more steps than its levels are refused.
        with pytest.raises(ValueError):
            scheduler.set_timesteps(steps)
        return
    scheduler.set_timesteps(steps)
    assert len(scheduler.timesteps) == steps
    assert float(scheduler.timesteps[0]) == 999.0


def test_ddpm_preset_keeps_the_official_1000_step_loop():
    # Diffusers' default spacing is what the official loop is: t = 999, 998, ..., 0 on the same betas.
    trailing = prediff_scheduler("ddpm")
    leading = prediff_scheduler("ddpm", timestep_spacing="leading")
    assert torch.equal(trailing.betas, leading.betas)
    trailing.set_timesteps(1000)
    leading.set_timesteps(1000)
    assert torch.equal(trailing.timesteps, torch.arange(999, -1, -1)) and torch.equal(
        trailing.timesteps, leading.timesteps
    )
    # The training noise of prediff_training_scheduler is unchanged.
    x, noise, t = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 10, 500, 999])
    assert torch.equal(prediff_training_scheduler().add_noise(x, noise, t), leading.add_noise(x, noise, t))
    # With fewer steps the official strides are kept, shifted to end at 0 and start at 999.
    trailing.set_timesteps(5)
    assert trailing.timesteps.tolist() == [999, 799, 599, 399, 199]


@pytest.mark.parametrize("name", sorted(SCHEDULER_PRESETS))
def test_default_step_counts_are_fast_and_documented(name):
    steps = DEFAULT_INFERENCE_STEPS[name]
    assert 1 <= steps <= 50
    lines = [line for line in prediff_scheduler.__doc__.splitlines() if line.strip().startswith(f'- "{name}"')]
    assert len(lines) == 1 and f"{steps} steps" in lines[0], lines


def test_fast_presets_and_overrides():
    assert isinstance(prediff_scheduler(), DPMSolverMultistepScheduler)
    assert prediff_scheduler().config.algorithm_type == "sde-dpmsolver++"
    assert DEFAULT_INFERENCE_STEPS["dpmsolver++"] <= 50 and DEFAULT_INFERENCE_STEPS["ddim"] <= 50
    ddim = prediff_scheduler("ddim")
    assert isinstance(ddim, DDIMScheduler) and ddim.final_alpha_cumprod.item() == 1.0
    sde = prediff_scheduler("dpmsolver++", algorithm_type="sde-dpmsolver++")
    assert sde.config.algorithm_type == "sde-dpmsolver++"
    # Two presets share DPMSolverMultistepScheduler; each is recognised by its own arguments.
    assert default_inference_steps(prediff_scheduler("sde-dpmsolver++")) == DEFAULT_INFERENCE_STEPS["sde-dpmsolver++"]
    with pytest.raises(ValueError, match="unknown scheduler preset 'pndm'"):
        prediff_scheduler("pndm")


@pytest.mark.parametrize(
    "cls",
    [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler],
)
@pytest.mark.parametrize("preset", sorted(SCHEDULER_PRESETS))
def test_from_config_idiom_inherits_the_safe_settings(preset, cls):
    # The Diffusers way of switching samplers: every class built from any preset's config neither clips nor
    # thresholds, and starts at the noisiest trained level.
    other = cls.from_config(prediff_scheduler(preset).config)
    for key, value in PORTABLE_SCHEDULER_SETTINGS.items():
        assert other.config.get(key, value) == value, key
    assert other.config.get("clip_sample", False) is False and other.config.get("thresholding", False) is False
    other.set_timesteps(20)
    assert int(other.timesteps[0]) == 999


def test_record_portable_settings_keeps_what_a_config_has():
    scheduler = DDIMScheduler(clip_sample=True, timestep_spacing="leading")
    record_portable_settings(scheduler)
    assert scheduler.config.clip_sample is True and scheduler.config.timestep_spacing == "leading"
    bare = DPMSolverMultistepScheduler()
    assert "clip_sample" not in bare.config
    record_portable_settings(bare)
    assert bare.config.clip_sample is False and bare.config.set_alpha_to_one is True


def test_default_inference_steps_recognises_presets_sharing_a_class():
    assert default_inference_steps(prediff_scheduler("dpmsolver++")) == DEFAULT_INFERENCE_STEPS["dpmsolver++"]
    # A scheduler built outside the presets: the preset of its class, else 50.
    assert default_inference_steps(LMSDiscreteScheduler()) == 50
    with pytest.raises(ValueError, match="must be a Diffusers scheduler, got str"):
        default_inference_steps("ddim")
