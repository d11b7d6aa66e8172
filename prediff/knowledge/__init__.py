"""Knowledge control: steer diffusion sampling with what is known about the future (DESIGN.md section 7)."""

from .base import (
    CONTROL_FORMS,
    KnowledgeControl,
    KnowledgeControlState,
    knowledge_gradients,
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
    "AnticipatedIntensityControl",
    "EnergyConservationControl",
    "FunctionControl",
    "KnowledgeControl",
    "KnowledgeControlState",
    "LearnedStatisticControl",
    "knowledge_gradients",
    "per_sample_values",
]
