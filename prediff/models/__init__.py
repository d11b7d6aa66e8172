"""Every trainable network of prediff (Diffusers ``ModelMixin`` + ``ConfigMixin``)."""

from .alignment import KnowledgeAlignmentModel, KnowledgeAlignmentOutput
from .earthformer_unet import EarthformerUNetModel, EarthformerUNetOutput

__all__ = [
    "EarthformerUNetModel",
    "EarthformerUNetOutput",
    "KnowledgeAlignmentModel",
    "KnowledgeAlignmentOutput",
]
