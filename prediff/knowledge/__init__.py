"""Knowledge control: steer diffusion sampling with what is known about the future."""

from .base import (
    CONTROL_FORMS,
    DEFAULT_CONTROL_SCALE,
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
