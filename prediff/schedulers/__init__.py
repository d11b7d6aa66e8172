"""PreDiff's scheduler presets on top of the stock Diffusers schedulers."""

from .scheduling_prediff import (
    DEFAULT_INFERENCE_STEPS,
    PREDIFF_NOISE_SCHEDULE,
    SCHEDULER_PRESETS,
    official_betas,
    prediff_scheduler,
    prediff_training_scheduler,
)

__all__ = [
    "DEFAULT_INFERENCE_STEPS",
    "PREDIFF_NOISE_SCHEDULE",
    "SCHEDULER_PRESETS",
    "official_betas",
    "prediff_scheduler",
    "prediff_training_scheduler",
]
