"""Forecast pipelines: PreDiff (latent diffusion ensembles with knowledge control) and deterministic
Earthformer."""

from .pipeline_earthformer import EarthformerPipeline
from .pipeline_output import EarthformerPipelineOutput, PreDiffPipelineOutput
from .pipeline_prediff import PREDIFF_PIPELINE_PRESETS, PreDiffPipeline

__all__ = [
    "PREDIFF_PIPELINE_PRESETS",
    "EarthformerPipeline",
    "EarthformerPipelineOutput",
    "PreDiffPipeline",
    "PreDiffPipelineOutput",
]
