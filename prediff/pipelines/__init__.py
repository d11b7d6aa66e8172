"""Forecast pipelines: PreDiff (latent diffusion ensembles with knowledge control) and deterministic
Earthformer."""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .pipeline_earthformer import EarthformerPipeline
    from .pipeline_output import EarthformerPipelineOutput, PreDiffPipelineOutput
    from .pipeline_prediff import PREDIFF_PIPELINE_PRESETS, PreDiffPipeline

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".pipeline_earthformer": ["EarthformerPipeline"],
        ".pipeline_output": ["EarthformerPipelineOutput", "PreDiffPipelineOutput"],
        ".pipeline_prediff": ["PREDIFF_PIPELINE_PRESETS", "PreDiffPipeline"],
    },
)

__all__ = [
    "PREDIFF_PIPELINE_PRESETS",
    "EarthformerPipeline",
    "EarthformerPipelineOutput",
    "PreDiffPipeline",
    "PreDiffPipelineOutput",
]
