"""Every network of prediff (Diffusers ``ModelMixin`` + ``ConfigMixin``), the motion extrapolator, and the VAE
helpers."""

from .alignment import KnowledgeAlignmentModel, KnowledgeAlignmentOutput
from .autoencoder import autoencoder_from_preset, decode_sequence, encode_sequence
from .earthformer import EarthformerModel, EarthformerModelOutput
from .earthformer_unet import EarthformerUNetModel, EarthformerUNetOutput
from .extrapolation import MotionExtrapolator

__all__ = [
    "EarthformerModel",
    "EarthformerModelOutput",
    "EarthformerUNetModel",
    "EarthformerUNetOutput",
    "KnowledgeAlignmentModel",
    "KnowledgeAlignmentOutput",
    "MotionExtrapolator",
    "autoencoder_from_preset",
    "decode_sequence",
    "encode_sequence",
]
