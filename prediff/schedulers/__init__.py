"""PreDiff's scheduler presets on top of the stock Diffusers schedulers."""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".scheduling_prediff": [
            "DEFAULT_INFERENCE_STEPS",
            "PORTABLE_SCHEDULER_SETTINGS",
            "PREDIFF_NOISE_SCHEDULE",
            "SCHEDULER_PRESETS",
            "default_inference_steps",
            "official_betas",
            "prediff_scheduler",
            "prediff_training_scheduler",
            "record_portable_settings",
        ],
    },
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
