"""Knowledge control: steer diffusion sampling with what is known about the future."""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .base import (
        CONTROL_FORMS,
        KnowledgeControl,
        KnowledgeControlState,
        knowledge_gradients,
        newton_step_size,
        per_sample_values,
    )
    from .controls import (
        AnticipatedIntensityControl,
        EnergyConservationControl,
        FunctionControl,
        LearnedStatisticControl,
    )
    from .defaults import DEFAULT_CONTROL_SCALE

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".base": [
            "CONTROL_FORMS",
            "KnowledgeControl",
            "KnowledgeControlState",
            "knowledge_gradients",
            "newton_step_size",
            "per_sample_values",
        ],
        ".controls": [
            "AnticipatedIntensityControl",
            "EnergyConservationControl",
            "FunctionControl",
            "LearnedStatisticControl",
        ],
        ".defaults": ["DEFAULT_CONTROL_SCALE"],
    },
)

__all__ = [
    "CONTROL_FORMS",
    "DEFAULT_CONTROL_SCALE",
    "AnticipatedIntensityControl",
    "EnergyConservationControl",
    "FunctionControl",
    "KnowledgeControl",
    "KnowledgeControlState",
    "LearnedStatisticControl",
    "knowledge_gradients",
    "newton_step_size",
    "per_sample_values",
]
