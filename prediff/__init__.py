"""prediff: probabilistic Earth-system forecasting with latent diffusion (PreDiff) and cuboid attention
(Earthformer), in the style of Diffusers. Public API only; see the sub-packages for the rest.

The names below are imported from their sub-packages on first use (see [`~prediff.utils.lazy`]), so that
``import prediff`` and the ``prediff`` command's help do not load torch, Diffusers or Accelerate."""

from typing import TYPE_CHECKING

from .utils.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".baselines": ["get_baseline", "persistence"],
        ".data": [
            "ArraySequenceDataset",
            "ENSODataset",
            "NBodyDataset",
            "RandomFlipRotate",
            "SEVIRDataset",
            "SyntheticStormDataset",
            "future_intensity_stats",
        ],
        ".knowledge": [
            "AnticipatedIntensityControl",
            "EnergyConservationControl",
            "FunctionControl",
            "KnowledgeControl",
            "KnowledgeControlState",
        ],
        ".metrics": ["get_metric"],
        ".models": [
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
        ],
        ".pipelines": ["EarthformerPipeline", "EarthformerPipelineOutput", "PreDiffPipeline", "PreDiffPipelineOutput"],
        ".schedulers": ["prediff_scheduler", "prediff_training_scheduler"],
    },
)

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
