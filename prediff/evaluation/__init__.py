"""Evaluation: a pipeline and its reference forecasts scored on a data set, per lead time.

[`evaluate_pipeline`] runs the loop and returns an [`EvaluationReport`], which renders as a terminal table
(`to_table`), Markdown (`to_markdown`) and JSON (`to_json`); `prediff evaluate` is its command line.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .evaluate import IntensityControlSpec, ScoreSet, evaluate_forecasts, evaluate_pipeline, load_sequences
    from .report import HEADLINE_SCORES, EvaluationReport, ForecasterScores

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".evaluate": ["IntensityControlSpec", "ScoreSet", "evaluate_forecasts", "evaluate_pipeline", "load_sequences"],
        ".report": ["HEADLINE_SCORES", "EvaluationReport", "ForecasterScores"],
    },
)

__all__ = [
    "HEADLINE_SCORES",
    "EvaluationReport",
    "ForecasterScores",
    "IntensityControlSpec",
    "ScoreSet",
    "evaluate_forecasts",
    "evaluate_pipeline",
    "load_sequences",
]
