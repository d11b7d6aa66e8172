"""The page of `prediff app`: a Gradio Blocks layout around [`prediff.app.forecast`].

The page only lays out the functions of `prediff.app.forecast` and turns what they refuse into a message on the
page (`gr.Error`). Pipelines are picked by label among the shipped ones and the folders given on the command line
([`pipeline_choices`]); nothing on the page names a path on the server. One forecast runs at a time
(`queue(default_concurrency_limit=1)`): two users share the model, not the CPU.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..demo import DEMO_SEED
from ..visualization.what_if import DEFAULT_N_SIGMAS
from .forecast import (
    DEFAULT_MAX_UPLOAD_MB,
    radar_context,
    render_forecast,
    render_what_if,
    run_app_forecast,
    score_forecast,
    short_units,
    storm_context,
    uploaded_context,
    write_forecast_netcdf,
)

__all__ = ["CONTEXT_SOURCES", "CONTROL_CHOICES", "build_page"]

#: Where a context comes from.
CONTEXT_SOURCES = ("synthetic storm", "context file", "radar files")
#: Knowledge control: none, or the anticipated-intensity control's method.
CONTROL_CHOICES = ("none", "analytic", "learned")
#: How the anticipated intensity is given.
TARGET_KINDS = ("n sigma", "value")
#: The sampler entry that keeps the pipeline's own scheduler.
OWN_SAMPLER = "pipeline's own"
#: Upload types of a context file (a zarr store is uploaded zipped).
CONTEXT_FILE_TYPES = [".npy", ".nc", ".nc4", ".h5", ".hdf5", ".zip"]


def _error_message(error: BaseException) -> str:
    from ..cli import _one_line

    return _one_line(error) if isinstance(error, Exception) else type(error).__name__


def _pysteps_importers() -> list[str]:
    """The names of pysteps' importers, empty without pysteps."""
    try:
        from ..data.radar import _pysteps

        return sorted(_pysteps().io.interface._importer_methods)
    except ImportError:
        return []


def build_page(
    choices: dict[str, str],
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    load: Callable[[str], Any] | None = None,
) -> Any:
    """The Gradio Blocks of `prediff app`.

    Args:
        choices: pipeline label -> what [`load_forecast_pipeline`] loads ([`pipeline_choices`]).
        max_upload_mb: largest upload accepted, MiB (also given to `launch(max_file_size=...)`).
        load: loads a pipeline from `choices`' values (default: [`load_forecast_pipeline`] on CPU, the last two
            kept loaded).

    Returns:
        The `gr.Blocks`, queued with one forecast at a time; call `.launch()` on it.
    """
    import gradio as gr

    from ..pipelines.commands import forecast_units
    from ..schedulers import SCHEDULER_PRESETS

    if load is None:
        from ..pipelines.loading import load_forecast_pipeline

        load = lru_cache(maxsize=2)(lambda source: load_forecast_pipeline(source, device="cpu"))

    def pipeline(label: str) -> Any:
        if label not in choices:
            raise ValueError(f"unknown pipeline {label!r}; pick one of {list(choices)}")
        return load(choices[label])

    # Every request writes its pictures and netCDF into its own folder under one that the handlers keep alive
    # (removed when the process ends); Gradio serves copies from its cache, which it empties of files older than
    # an hour.
    outputs = tempfile.TemporaryDirectory(prefix="prediff-app-")

    def request_folder() -> Path:
        return Path(tempfile.mkdtemp(dir=outputs.name))

    importers = _pysteps_importers()
    sources = [s for s in CONTEXT_SOURCES if s != "radar files" or importers]

    def context_of(pipe: Any, source: str, seed: float, upload: Any, radar_files: Any, importer: str) -> tuple:
        if source == "synthetic storm":
            return storm_context(pipe, int(seed))
        if source == "context file":
            if not upload:
                raise ValueError("upload a context file (.npy, .nc, .h5, or a zarr store as .zip)")
            return uploaded_context(_path(upload), pipe, max_upload_mb), None
        if source == "radar files":
            if not radar_files:
                raise ValueError("upload the radar files of the context, one composite per file")
            if importer not in importers:
                raise ValueError(f"pick a pysteps importer among {importers}")
            return radar_context([_path(f) for f in radar_files], importer, pipe, max_mb=max_upload_mb), None
        raise ValueError(f"unknown context source {source!r}")

    def forecast(
        label: str,
        source: str,
        seed: float,
        upload: Any,
        radar_files: Any,
        importer: str,
        members: float,
        sampler: str,
        steps: float,
        control: str,
        target_kind: str,
        n_sigmas: Sequence[float],
        target: float | None,
        progress: Any,
    ) -> tuple[Any, Any, Any, str]:
        """Load, read, forecast; the pipeline, its context and the forecast."""
        pipe = pipeline(label)
        context, observed = context_of(pipe, source, seed, upload, radar_files, importer)
        method = None if control == "none" else control
        by_value = method is not None and target_kind == "value"
        if by_value and target is None:
            raise ValueError("give the anticipated mean intensity (the target value)")
        result = run_app_forecast(
            pipe,
            context,
            members=int(members),
            steps=int(steps),
            seed=int(seed),
            sampler=None if sampler == OWN_SAMPLER else sampler,
            control_method=method,
            n_sigmas=None if by_value else n_sigmas,
            target=float(target) if by_value else None,
            observed=observed,
            progress=lambda done, total: progress((done, total), desc="denoising", unit="steps"),
        )
        return pipe, context, result, short_units(pipe, forecast_units(pipe, context))

    def run(*args: Any, progress: Any = gr.Progress()) -> tuple:  # noqa: B008 - Gradio's way to ask for a bar
        *inputs, n_sigma, with_scores = args
        try:
            pipe, context, result, units = forecast(*inputs[:11], [n_sigma], inputs[11], progress)
            folder = request_folder()
            pictures = render_forecast(result, pipe, folder, units)
            scores = score_forecast(result, pipe, units) if with_scores else ""
            netcdf = write_forecast_netcdf(result, pipe, context, folder / "ensemble.nc")
        except (ValueError, OSError, ImportError, MemoryError) as error:
            raise gr.Error(_error_message(error)) from None
        summary = _markdown_lines(result.summary(units))
        if result.observed is None:
            scores = scores or "No observation to score against: scores need a synthetic storm."
        return (
            summary,
            str(pictures["panel"]),
            str(pictures["exceedance"]) if "exceedance" in pictures else None,
            str(pictures["gif"]),
            scores,
            gr.DownloadButton(value=str(netcdf), interactive=True),
        )

    def what_if(*args: Any, progress: Any = gr.Progress()) -> tuple:  # noqa: B008
        *inputs, n_values = args
        try:
            if inputs[9] == "none":
                raise ValueError("the what-if view steers the forecast: pick a knowledge-control method")
            if not n_values:
                raise ValueError("tick at least one n for the what-if view")
            inputs[10] = "n sigma"
            ns = sorted(float(n) for n in n_values)
            pipe, _, result, units = forecast(*inputs[:11], ns, None, progress)
            path = render_what_if(result, pipe, request_folder() / "what_if.png", units)
        except (ValueError, OSError, ImportError, MemoryError) as error:
            raise gr.Error(_error_message(error)) from None
        return _markdown_lines(result.summary(units)), str(path)

    samplers = [OWN_SAMPLER, *sorted(SCHEDULER_PRESETS)]
    with gr.Blocks(title="prediff app", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
        gr.Markdown(
            "# prediff: steer a precipitation nowcast\n"
            "Pick a pipeline and a context, set the ensemble and the anticipated mean intensity, and run. "
            "Targets `μ + nσ` come from the pipeline's training distribution of the future mean intensity."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                label = gr.Dropdown(list(choices), value=next(iter(choices)), label="pipeline", elem_id="pipeline")
                source = gr.Radio(sources, value=sources[0], label="context", elem_id="source")
                seed = gr.Number(
                    DEMO_SEED,
                    precision=0,
                    minimum=0,
                    label="storm seed (held-out storms; the shipped pipelines trained on seed 0), also the noise seed",
                    elem_id="seed",
                )
                upload = gr.File(
                    label=f"context file (.npy, .nc, .h5, zarr as .zip; at most {max_upload_mb:g} MiB)",
                    file_types=CONTEXT_FILE_TYPES,
                    visible=False,
                    elem_id="upload",
                )
                with gr.Group(visible=False) as radar_group:
                    radar_files = gr.File(
                        label="radar files, one composite each (rain-rate pipelines)",
                        file_count="multiple",
                        elem_id="radar-files",
                    )
                    importer = gr.Dropdown(
                        importers, value=importers[0] if importers else None, label="pysteps importer"
                    )
                members = gr.Slider(1, 16, value=4, step=1, label="members", elem_id="members")
                sampler = gr.Dropdown(samplers, value=OWN_SAMPLER, label="sampler", elem_id="sampler")
                steps = gr.Slider(1, 50, value=10, step=1, label="denoising steps", elem_id="steps")
                control = gr.Radio(CONTROL_CHOICES, value="analytic", label="knowledge control", elem_id="control")
                target_kind = gr.Radio(TARGET_KINDS, value=TARGET_KINDS[0], label="anticipated mean intensity as")
                n_sigma = gr.Slider(-4, 4, value=0, step=0.5, label="n (target μ + nσ)", elem_id="n-sigma")
                target = gr.Number(None, label="target value (physical units)", elem_id="target")
                with_scores = gr.Checkbox(True, label="score against the observation, STEPS and extrapolation")
                run_button = gr.Button("Run forecast", variant="primary", elem_id="run")
                n_values = gr.CheckboxGroup(
                    [float(n) for n in DEFAULT_N_SIGMAS], value=[float(n) for n in DEFAULT_N_SIGMAS], label="what-if n"
                )
                what_if_button = gr.Button("What-if: one forecast per n, side by side", elem_id="what-if")
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="summary")
                panel = gr.Image(label="context, observation, members and mean", type="filepath", elem_id="panel")
                exceedance = gr.Image(label="exceedance probability", type="filepath", elem_id="exceedance")
                gif = gr.Image(label="animation", type="filepath", elem_id="gif")
                scores = gr.Code(label="scores", language=None, interactive=False, elem_id="scores")
                download = gr.DownloadButton("Download the ensemble (netCDF)", interactive=False, elem_id="download")
                what_if_image = gr.Image(label="what-if", type="filepath", elem_id="what-if-image")

        def show(source: str) -> tuple:
            return gr.update(visible=source == "context file"), gr.update(visible=source == "radar files")

        source.change(show, source, [upload, radar_group])
        common = [label, source, seed, upload, radar_files, importer, members, sampler, steps, control, target_kind]
        run_button.click(
            run, [*common, target, n_sigma, with_scores], [summary, panel, exceedance, gif, scores, download]
        )
        what_if_button.click(what_if, [*common, n_values], [summary, what_if_image])
    page.queue(default_concurrency_limit=1, max_size=16)
    return page


def _markdown_lines(text: str) -> str:
    """Lines of text as Markdown paragraphs (single newlines would join them)."""
    return "\n\n".join(text.splitlines())


def _path(upload: Any) -> str:
    """The server's copy of an upload (Gradio gives a path or an object with `.name`)."""
    return os.fspath(upload if isinstance(upload, (str, os.PathLike)) else upload.name)
