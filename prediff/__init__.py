"""prediff: probabilistic Earth-system forecasting with latent diffusion (PreDiff) and cuboid attention
(Earthformer), in the style of Diffusers. Public API only; see the sub-packages for the rest."""

from .baselines import get_baseline, persistence
from .data import (
    ArraySequenceDataset,
    ENSODataset,
    NBodyDataset,
    RandomFlipRotate,
    SEVIRDataset,
    SyntheticStormDataset,
    future_intensity_stats,
)
from .knowledge import (
    AnticipatedIntensityControl,
    EnergyConservationControl,
    FunctionControl,
    KnowledgeControl,
    KnowledgeControlState,
)
from .metrics import get_metric
from .models import (
    EarthformerModel,
    EarthformerModelOutput,
    EarthformerUNetModel,
    EarthformerUNetOutput,
    KnowledgeAlignmentModel,
    KnowledgeAlignmentOutput,
    MotionExtrapolator,
    autoencoder_from_preset,
    decode_sequence,
    encode_sequence,
)
from .pipelines import EarthformerPipeline, EarthformerPipelineOutput, PreDiffPipeline, PreDiffPipelineOutput
from .schedulers import prediff_scheduler, prediff_training_scheduler

__version__ = "0.1.0"

__all__ = [
    "AnticipatedIntensityControl",
    "ArraySequenceDataset",
    "ENSODataset",
    "EarthformerPipeline",
    "EarthformerModel",
    "EarthformerModelOutput",
    "EarthformerPipelineOutput",
    "EarthformerUNetModel",
    "EarthformerUNetOutput",
    "EnergyConservationControl",
    "FunctionControl",
    "KnowledgeAlignmentModel",
    "KnowledgeAlignmentOutput",
    "KnowledgeControl",
    "KnowledgeControlState",
    "MotionExtrapolator",
    "NBodyDataset",
    "PreDiffPipeline",
    "PreDiffPipelineOutput",
    "RandomFlipRotate",
    "SEVIRDataset",
    "SyntheticStormDataset",
    "autoencoder_from_preset",
    "decode_sequence",
    "encode_sequence",
    "future_intensity_stats",
    "get_baseline",
    "get_metric",
    "persistence",
    "prediff_scheduler",
    "prediff_training_scheduler",
]
