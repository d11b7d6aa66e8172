"""PreDiff's scheduler presets on top of the stock Diffusers schedulers."""

from .scheduling_prediff import (
    DEFAULT_INFERENCE_STEPS,
    PORTABLE_SCHEDULER_SETTINGS,
    PREDIFF_NOISE_SCHEDULE,
    SCHEDULER_PRESETS,
    default_inference_steps,
    official_betas,
    prediff_scheduler,
    prediff_training_scheduler,
    record_portable_settings,
)

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
