"""prediff: probabilistic Earth-system forecasting with latent diffusion and cuboid attention."""

from .models import (
    EarthformerUNetModel,
    EarthformerUNetOutput,
    KnowledgeAlignmentModel,
    KnowledgeAlignmentOutput,
)

__version__ = "0.1.0"

__all__ = [
    "EarthformerUNetModel",
    "EarthformerUNetOutput",
    "KnowledgeAlignmentModel",
    "KnowledgeAlignmentOutput",
]
