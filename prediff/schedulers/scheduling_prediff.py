"""PreDiff's noise schedule as stock Diffusers schedulers: the training DDPM schedule and fast inference
presets.

The official model was trained with LDM's "linear" schedule, which is Diffusers' ``scaled_linear``:
``beta_t = linspace(sqrt(1e-4), sqrt(2e-2), 1000) ** 2``, epsilon prediction, fixed-small posterior variance.
Every preset below is built from these same betas, so a denoiser trained with [`prediff_training_scheduler`]
can be sampled with any of them.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

__all__ = [
    "DEFAULT_INFERENCE_STEPS",
    "PORTABLE_SCHEDULER_SETTINGS",
    "PREDIFF_NOISE_SCHEDULE",
    "SCHEDULER_PRESETS",
    "default_inference_steps",
    "official_betas",
    "prediff_scheduler",
    "prediff_training_scheduler",
    "record_portable_settings",
]

#: The official training schedule, shared by every preset.
PREDIFF_NOISE_SCHEDULE: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=1e-4,
    beta_end=2e-2,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
)

#: Scheduler presets: name -> (class, keyword arguments on top of the noise schedule).
SCHEDULER_PRESETS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    # The official sampler: ancestral DDPM with the fixed-small posterior variance, no clipping. With 1000
    # steps every spacing gives t = 999..0, the official loop; with fewer, "trailing" still starts at t=999
    # where Diffusers' default "leading" would start at 1000 - 1000 / steps (t=980 for 50 steps).
    "ddpm": (DDPMScheduler, dict(variance_type="fixed_small", clip_sample=False, timestep_spacing="trailing")),
    # Deterministic DDIM; "trailing" spacing starts at t=999 (the noise level the model was trained to start
    # from) and the final step lands on the clean estimate (alpha_bar = 1).
    "ddim": (DDIMScheduler, dict(clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")),
    # Second-order multistep DPM-Solver++ (data prediction), deterministic.
    "dpmsolver++": (
        DPMSolverMultistepScheduler,
        dict(
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            final_sigmas_type="zero",
        ),
    ),
    # Its stochastic (SDE) variant, the default for inference: fresh noise at every step like ancestral DDPM,
    # whose skill it keeps in 20 steps (10 measured as good), where the deterministic solvers lose some.
    "sde-dpmsolver++": (
        DPMSolverMultistepScheduler,
        dict(
            algorithm_type="sde-dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            final_sigmas_type="zero",
        ),
    ),
    "unipc": (UniPCMultistepScheduler, dict(solver_order=2, timestep_spacing="trailing")),
    "euler": (EulerDiscreteScheduler, dict(timestep_spacing="trailing")),
    # Multistep consistency sampling, for a denoiser distilled with `prediff train distill` (a plain denoiser
    # gives blurred forecasts with it): each step maps the sample to the student's clean estimate and noises it
    # again to the next timestep, on a grid of `original_inference_steps` levels ending at t=999.
    "lcm": (
        LCMScheduler,
        # LCM itself ignores the spacing; recorded so that other classes built from its config start at t=999.
        dict(clip_sample=False, original_inference_steps=20, timestep_scaling=10.0, timestep_spacing="trailing"),
    ),
}

#: Settings every preset records in its config, whether or not its own class uses them, so that the Diffusers
#: idiom `OtherScheduler.from_config(pipe.scheduler.config)` samples the way the presets do. Without them DDPM
#: and DDIM fall back to `clip_sample=True`, which clips latents that were never scaled to [-1, 1], and most
#: classes to a spacing that skips the noisiest trained level.
PORTABLE_SCHEDULER_SETTINGS: dict[str, Any] = dict(
    clip_sample=False,
    thresholding=False,
    timestep_spacing="trailing",
    set_alpha_to_one=True,
    final_sigmas_type="zero",
)

#: Number of inference steps each preset is meant for, the pipeline's default. Never the 1000-step loop:
#: DDPM defaults to 50 strided ancestral steps; pass `num_inference_steps=1000` for the official sampler.
DEFAULT_INFERENCE_STEPS: dict[str, int] = {
    "ddpm": 50,
    "ddim": 50,
    "dpmsolver++": 20,
    "sde-dpmsolver++": 20,
    "unipc": 20,
    "euler": 50,
    "lcm": 4,
}


def default_inference_steps(scheduler: SchedulerMixin) -> int:
    """The step count `scheduler` is meant for: that of the preset it was built from ([`DEFAULT_INFERENCE_STEPS`]),
    recognised by class and, where presets share a class, by the preset's own arguments; else 50. Never the
    1000-step loop, which is asked for explicitly."""
    if not isinstance(scheduler, SchedulerMixin):
        raise ValueError(f"scheduler must be a Diffusers scheduler, got {type(scheduler).__name__}")
    config = scheduler.config
    same_class = [name for name, (cls, _) in SCHEDULER_PRESETS.items() if type(scheduler) is cls]
    for name in same_class:
        if all(config.get(key) == value for key, value in SCHEDULER_PRESETS[name][1].items()):
            return DEFAULT_INFERENCE_STEPS[name]
    return DEFAULT_INFERENCE_STEPS[same_class[0]] if same_class else 50


def official_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """The betas exactly as the official code computes them (float64 arithmetic, stored as float32), shape
    `(T,)`."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return betas.to(torch.float32)


def prediff_scheduler(name: str = "sde-dpmsolver++", **overrides: Any) -> SchedulerMixin:
    """A Diffusers scheduler on PreDiff's noise schedule.

    Every preset starts sampling at t=999, whatever the number of steps. The step count each is meant for
    ([`DEFAULT_INFERENCE_STEPS`], the pipeline's default):

    - "sde-dpmsolver++" (default): 20 steps of second-order multistep SDE-DPM-Solver++, which adds fresh noise
      at every step as the official ancestral sampler does; it keeps the skill of the official 1000-step
      sampler (the deterministic samplers lose about 5% of CRPS on the shipped pipeline).
    - "dpmsolver++": 20 steps of deterministic second-order multistep DPM-Solver++.
    - "unipc": 20 steps of second-order UniPC.
    - "ddim": 50 steps of deterministic DDIM.
    - "euler": 50 steps of the Euler ODE sampler.
    - "lcm": 4 steps of multistep consistency sampling, for distilled students (`prediff train distill`).
    - "ddpm": 50 steps of ancestral DDPM; also the training schedule, and with `num_inference_steps=1000`
      the official 1000-step sampler.

    Args:
        name: one of the presets above.
        overrides: replace any scheduler argument, e.g. `algorithm_type="sde-dpmsolver++"`.

    Returns:
        A fresh scheduler instance.
    """
    if name not in SCHEDULER_PRESETS:
        raise ValueError(f"unknown scheduler preset {name!r}; expected one of {sorted(SCHEDULER_PRESETS)}")
    cls, kwargs = SCHEDULER_PRESETS[name]
    return record_portable_settings(cls(**{**PREDIFF_NOISE_SCHEDULE, **kwargs, **overrides}))


def record_portable_settings(scheduler: SchedulerMixin) -> SchedulerMixin:
    """Add the [`PORTABLE_SCHEDULER_SETTINGS`] that `scheduler.config` lacks (those it has are kept) and return
    it, so that any scheduler built with `from_config(scheduler.config)` inherits them."""
    if not isinstance(scheduler, ConfigMixin):
        return scheduler
    if isinstance(scheduler, LCMScheduler):
        # A consistency-distilled student samples only with its LCMScheduler (the preset sets what it takes);
        # the settings it does not take would be warned about at every load of the saved pipeline.
        return scheduler
    missing = {key: value for key, value in PORTABLE_SCHEDULER_SETTINGS.items() if key not in scheduler.config}
    if missing:
        scheduler.register_to_config(**missing)
    return scheduler


def prediff_training_scheduler(**overrides: Any) -> DDPMScheduler:
    """The official training schedule: `DDPMScheduler` (1000 steps, scaled_linear 1e-4..2e-2, epsilon,
    fixed_small)."""
    return prediff_scheduler("ddpm", **overrides)
