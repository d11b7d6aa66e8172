"""The result of an evaluation: every score per lead time for every forecaster, as a terminal table, Markdown
and JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..utils.files import atomic_output

__all__ = ["HEADLINE_SCORES", "EvaluationReport", "ForecasterScores"]

#: Scores shown by default in the terminal table and the per-lead-time Markdown tables (when present).
HEADLINE_SCORES: tuple[str, ...] = (
    "csi_m",
    "csi_m_pool4",
    "csi_m_pool16",
    "csi_16",
    "csi_74",
    "csi_133",
    "bias_74",
    "mse",
    "mae",
    "ssim",
    "crps",
    "crps_pool4",
    "spread_skill_ratio",
    "fss_74_scale16",
    "kc_mae",
)

SCORE_LABELS = {
    "csi_m": "CSI-M",
    "mse": "MSE",
    "rmse": "RMSE",
    "mae": "MAE",
    "ssim": "SSIM",
    "crps": "CRPS",
    "spread": "spread",
    "rmse_mean": "RMSE of the mean",
    "spread_skill_ratio": "spread-skill ratio",
    "kc_mae": "intensity error (MAE)",
    "kc_rmse": "intensity error (RMSE)",
    "kc_bias": "intensity bias",
}


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _cell(value: float | None, width: int = 0) -> str:
    text = "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
    return text.rjust(width) if width else text


@dataclass
class ForecasterScores:
    """The scores of one forecaster.

    Attributes:
        kind: "ensemble" or "deterministic"; the deterministic scores of an ensemble (CSI, MSE, MAE, SSIM,
            FSS) are those of its ensemble mean, its probabilistic scores (CRPS, spread-skill, rank
            histogram) those of the members; a deterministic forecast's CRPS equals its MAE.
        members: ensemble size (1 for deterministic forecasts).
        scores: score name -> value over all lead times (None where undefined, e.g. FSS with no event).
        per_lead_time: score name -> one value per lead time.
        rank_histogram: frequencies of the observation's rank among the members (length `members + 1`).
        knowledge_control: description of the control that steered this forecast, if any.
    """

    kind: str
    members: int
    scores: dict[str, float | None] = field(default_factory=dict)
    per_lead_time: dict[str, list[float | None]] = field(default_factory=dict)
    rank_histogram: list[float] | None = None
    knowledge_control: str | None = None


@dataclass
class EvaluationReport:
    """Scores of a pipeline and its reference forecasts on a data set.

    Attributes:
        forecasters: name (e.g. "prediff", "prediff+intensity", "persistence") -> [`ForecasterScores`].
        lead_times: lead times in frames, `[1, ..., T_out]`.
        settings: what was evaluated and how (pipeline, data set, members, steps, seed, thresholds, ...).
        units: units of the scores' data (e.g. VIL 0-255).
        lead_time_minutes: lead times in minutes when the frame interval is known.
        seconds: wall time of the evaluation.

    Examples:
        >>> report = evaluate_pipeline(pipe, dataset, num_sequences=16)
        >>> print(report.to_table())
        >>> report.score("prediff", "crps"), report.score("persistence", "csi_m", lead_time=1)
        >>> report.save("report.json"); report.save("report.md")
    """

    forecasters: dict[str, ForecasterScores]
    lead_times: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    units: str = ""
    lead_time_minutes: list[float] | None = None
    seconds: float = 0.0

    # ------------------------------------------------------------------ access

    def score(self, forecaster: str, name: str, lead_time: int | None = None) -> float | None:
        """The score `name` of `forecaster` over all lead times, or at `lead_time` (1-based, in frames)."""
        if forecaster not in self.forecasters:
            raise ValueError(f"unknown forecaster {forecaster!r}; the report has {sorted(self.forecasters)}")
        entry = self.forecasters[forecaster]
        if name not in entry.scores:
            raise ValueError(f"{forecaster} has no score {name!r}; it has {sorted(entry.scores)}")
        if lead_time is None:
            return entry.scores[name]
        if lead_time not in self.lead_times:
            raise ValueError(f"lead_time must be one of {self.lead_times}, got {lead_time}")
        if name not in entry.per_lead_time:
            raise ValueError(f"{name!r} scores whole sequences and has no per-lead-time values")
        return entry.per_lead_time[name][self.lead_times.index(lead_time)]

    def score_names(self) -> list[str]:
        """Every score name that some forecaster has, in a stable order."""
        names: list[str] = []
        for entry in self.forecasters.values():
            names += [n for n in entry.scores if n not in names]
        return names

    def _selected(self, scores: str | list[str] | tuple[str, ...] | None) -> list[str]:
        available = self.score_names()
        if scores is None:
            return [s for s in HEADLINE_SCORES if s in available]
        if scores == "all":
            return available
        unknown = [s for s in scores if s not in available]
        if unknown:
            raise ValueError(f"unknown scores {unknown}; the report has {available}")
        return list(scores)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data (NaN becomes None)."""
        data = asdict(self)
        for entry in data["forecasters"].values():
            entry["scores"] = {k: _finite_or_none(v) for k, v in entry["scores"].items()}
            entry["per_lead_time"] = {k: [_finite_or_none(x) for x in v] for k, v in entry["per_lead_time"].items()}
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (strict: no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        """Rebuild a report from [`to_dict`]'s output."""
        try:
            forecasters = {name: ForecasterScores(**entry) for name, entry in data["forecasters"].items()}
            fields = {k: data[k] for k in ("lead_times", "settings", "units", "lead_time_minutes", "seconds")}
        except (KeyError, TypeError) as error:
            raise ValueError(f"not an evaluation report: {error}") from None
        return cls(forecasters=forecasters, **fields)

    @classmethod
    def from_json(cls, text: str) -> EvaluationReport:
        """Rebuild a report from [`to_json`]'s output."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as error:
            raise ValueError(f"not an evaluation report: {error}") from None

    # ------------------------------------------------------------------ rendering

    def _lead_labels(self) -> list[str]:
        if self.lead_time_minutes is not None:
            return [f"+{m:g} min" for m in self.lead_time_minutes]
        return [f"+{t}" for t in self.lead_times]

    def to_table(self, scores: str | list[str] | tuple[str, ...] | None = None) -> str:
        """A plain-text table for the terminal: one row per score and forecaster, one column per lead time and
        one for all lead times. `scores`: names, "all", or None for the headline scores."""
        names = self._selected(scores)
        leads = self._lead_labels()
        score_width = max([len("score")] + [len(n) for n in names])
        name_width = max([len("forecaster")] + [len(n) for n in self.forecasters])
        col = max(9, *(len(label) + 1 for label in leads))
        header = f"{'score':<{score_width}}  {'forecaster':<{name_width}}" + "".join(
            label.rjust(col) for label in leads + ["all"]
        )
        lines = [self._title(), header, "-" * len(header)]
        for name in names:
            first = True
            for forecaster, entry in self.forecasters.items():
                if name not in entry.scores:
                    continue
                per_lead = entry.per_lead_time.get(name, [None] * len(self.lead_times))
                row = f"{name if first else '':<{score_width}}  {forecaster:<{name_width}}"
                row += "".join(_cell(v, col) for v in per_lead) + _cell(entry.scores[name], col)
                lines.append(row)
                first = False
        lines += self._notes()
        return "\n".join(lines)

    def _title(self) -> str:
        s = self.settings
        parts = [f"{s.get('num_sequences', '?')} sequences of {s.get('dataset', 'the data set')}"]
        if "members" in s:
            parts.append(f"{s['members']} members")
        if s.get("num_inference_steps") is not None:
            parts.append(f"{s['num_inference_steps']} steps")
        if "seed" in s:
            parts.append(f"seed {s['seed']}")
        return f"Evaluation of {s.get('pipeline', 'the pipeline')}: " + ", ".join(parts) + f" ({self.units})"

    def _notes(self) -> list[str]:
        notes = [
            "Deterministic scores of an ensemble are those of its mean; a deterministic forecast's CRPS is its MAE.",
        ]
        for name, entry in self.forecasters.items():
            if entry.knowledge_control:
                notes.append(f"{name}: {entry.knowledge_control}")
        if self.settings.get("anticipated_intensity"):
            notes.append(
                f"Intensity errors (kc_*) are against the anticipated mean intensity: "
                f"{self.settings['anticipated_intensity']}."
            )
        return notes

    def to_markdown(self, scores: str | list[str] | tuple[str, ...] | None = None) -> str:
        """Markdown: the settings, a summary table of every score over all lead times (forecasters as
        columns), then one table per selected score with its values per lead time, and the rank histograms.
        `scores` selects the per-lead-time tables: names, "all", or None for the headline scores."""
        names = list(self.forecasters)
        lines = ["# Evaluation report", "", self._title(), ""]
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        for key, value in self.settings.items():
            text = json.dumps(value) if not isinstance(value, str) else value
            lines.append(f"| {key} | {text.replace('|', '/')} |")
        lines += ["", "## All lead times", "", "| score | " + " | ".join(names) + " |"]
        lines.append("|---|" + "---:|" * len(names))
        for score in self.score_names():
            cells = [_cell(self.forecasters[n].scores.get(score)) for n in names]
            lines.append(f"| {score} | " + " | ".join(cells) + " |")
        leads = self._lead_labels()
        lines += ["", "## Per lead time", ""]
        for score in self._selected(scores):
            label = SCORE_LABELS.get(score, score)
            rows = [(n, e) for n, e in self.forecasters.items() if score in e.per_lead_time]
            if not rows:
                continue
            lines += [f"### {label}" + (f" (`{score}`)" if label != score else ""), ""]
            lines.append("| forecaster | " + " | ".join(leads) + " | all |")
            lines.append("|---|" + "---:|" * (len(leads) + 1))
            for name, entry in rows:
                cells = [_cell(v) for v in entry.per_lead_time[score]] + [_cell(entry.scores[score])]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        histograms = [(n, e.rank_histogram) for n, e in self.forecasters.items() if e.rank_histogram]
        if histograms:
            lines += [
                "## Rank histograms",
                "",
                "Frequency of the observation's rank among the members (flat = reliable).",
                "",
            ]
            for name, hist in histograms:
                lines.append(f"- {name}: " + ", ".join(f"{v:.3f}" for v in hist))
            lines.append("")
        lines += ["## Notes", ""] + [f"- {note}" for note in self._notes()]
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the report atomically: JSON for `.json`, Markdown for `.md`, the plain table otherwise."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")
        suffix = path.suffix.lower()
        text = (
            self.to_json() + "\n"
            if suffix == ".json"
            else self.to_markdown()
            if suffix in (".md", ".markdown")
            else self.to_table() + "\n"
        )
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path
