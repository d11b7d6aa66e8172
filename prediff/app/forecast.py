"""What `prediff app` computes, without any page: pipelines by name, contexts (held-out synthetic storms, uploaded
files, radar files), forecasts with knowledge control, their pictures, scores and the netCDF download.

Every function here is the same code path as a command line one: uploaded files go through `prediff forecast`'s
reader and checks ([`read_context`], [`check_context`]), storms are made as `prediff demo` makes them, scores and
baselines are the demo's and the download is written by `prediff forecast`'s writer. The page
([`prediff.app.page`]) only lays these out and turns their errors into messages.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .commands import DEFAULT_MAX_UPLOAD_MB

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "AppForecast",
    "check_upload_size",
    "pipeline_choices",
    "radar_context",
    "render_forecast",
    "render_what_if",
    "run_app_forecast",
    "score_forecast",
    "short_units",
    "storm_context",
    "uploaded_context",
    "write_forecast_netcdf",
]


#: Exceedance threshold of the pictures by colour map: 1 mm/h for rain rate, VIL level 74 (a CSI threshold of
#: the demo) for VIL; other units use the middle of the pipeline's physical range.
EXCEEDANCE_THRESHOLDS = {"rainrate": 1.0, "vil": 74.0}
#: Units in picture titles by colour map.
SHORT_UNITS = {"rainrate": "mm/h", "vil": "VIL"}


def pipeline_choices(folders: Sequence[str | os.PathLike] = ()) -> dict[str, str]:
    """What the page offers as pipelines: label -> what [`load_forecast_pipeline`] loads.

    The shipped pipelines by name, then each of `folders` (given on the command line by whoever starts the page;
    a user of the page can only pick among these, never type a path), labelled by its folder name.

    Raises:
        FileNotFoundError: a folder does not exist or holds no saved pipeline (`model_index.json`).
    """
    from ..pretrained import SHIPPED_PIPELINES

    choices = {name: name for name in SHIPPED_PIPELINES}
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"--pipeline {str(folder)!r} is not a folder holding a saved pipeline")
        label = path.name
        while label in choices:  # two folders of one name (or a shipped name): tell them apart by their parent
            label = f"{path.parent.name}/{label}"
            path = path.parent
        choices[label] = str(Path(folder).expanduser().resolve())
    return choices


def check_upload_size(paths: Sequence[str | os.PathLike], max_mb: float) -> None:
    """Refuse uploads larger than `max_mb` MiB in all (a zip is counted by what it unpacks to)."""
    total = 0
    for path in paths:
        path = Path(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                total += sum(info.file_size for info in archive.infolist())
        else:
            total += path.stat().st_size
    if total > max_mb * 2**20:
        raise ValueError(f"the upload holds {total / 2**20:.1f} MiB, more than the page accepts ({max_mb:g} MiB)")


def _unzip_zarr(path: Path, folder: Path) -> Path:
    """The zarr store a zip holds, unpacked into `folder`; members that would land outside it are refused."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        root = folder.resolve()
        for name in names:
            if not (root / name).resolve().is_relative_to(root):
                raise ValueError(f"{path.name} holds {name!r}, a path outside the archive")
        archive.extractall(root)
    # A store zipped as its folder (ctx.zarr/...) or as its content (.zgroup, zarr.json, ... at the top).
    stores = sorted({Path(name).parts[0] for name in names if Path(name).parts[0].lower().endswith(".zarr")})
    if len(stores) == 1:
        return root / stores[0]
    if stores:
        raise ValueError(f"{path.name} holds several zarr stores {stores}; upload one")
    store = root / f"{path.stem}.zarr"
    store.mkdir()
    for entry in list(root.iterdir()):
        if entry != store:
            entry.rename(store / entry.name)
    return store


def uploaded_context(path: str | os.PathLike, pipe: Any, max_mb: float = DEFAULT_MAX_UPLOAD_MB) -> Any:
    """A context file a user uploaded, read and checked as `prediff forecast --use-last-frames` reads it.

    Args:
        path: `.npy`, HDF5 (`.h5`, `.hdf5`), netCDF (`.nc`) or a zarr store zipped (`.zip`).
        pipe: the pipeline it is for.
        max_mb: largest upload accepted, MiB.

    Returns:
        A [`ContextInput`] of the first sample: frames `(1, T_in, H, W, C)` in the pipeline's physical units (the
        last `T_in` frames of a longer sequence).

    Raises:
        ValueError, FileNotFoundError: as `prediff forecast` for the same file, or an upload too large.
    """
    from ..pipelines.commands import check_context
    from ..pipelines.context_io import read_context

    path = Path(path)
    check_upload_size([path], max_mb)
    if path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="prediff-app-") as folder:
            context = read_context(_unzip_zarr(path, Path(folder)))
    else:
        context = read_context(path)
    context.source = Path(path.name)  # the page names the file as the user knows it, not the server's copy
    context.frames = context.frames[:1]
    return check_context(pipe, context, use_last_frames=True)


def radar_context(
    paths: Sequence[str | os.PathLike],
    importer: str | Callable[..., Any],
    pipe: Any,
    importer_kwargs: Mapping[str, Any] | None = None,
    max_mb: float = DEFAULT_MAX_UPLOAD_MB,
) -> Any:
    """Radar files read through pysteps (one composite per file, in time order of their names) as the context of
    a rain-rate pipeline.

    Each file is read with the pysteps `importer` and converted to rain rate by [`read_radar_file`], averaged to
    the pipeline's pixel size; the last `T_in` files are the context.

    Returns:
        A [`ContextInput`] with frames `(1, T_in, H, W, 1)` in mm/h, NaN outside the radar domain.

    Raises:
        ValueError: not a rain-rate pipeline, too few files, files on different grids or unreadable.
    """
    from ..data.radar import read_radar_file
    from ..pipelines.commands import check_context
    from ..pipelines.context_io import ContextInput

    if "mm/h" not in str(pipe.config.get("units")):
        raise ValueError("radar files are read as rain rate (mm/h): pick a radar pipeline (units mm/h)")
    T_in = pipe.context_shape[0]
    paths = sorted((Path(p) for p in paths), key=lambda p: p.name)
    if len(paths) < T_in:
        raise ValueError(f"the pipeline needs {T_in} consecutive radar files, got {len(paths)}")
    check_upload_size(paths, max_mb)
    paths = paths[-T_in:]
    frames = []
    for path in paths:
        frame, grid = read_radar_file(path, importer, importer_kwargs, pipe.pixel_size_km)
        if frames and frame.shape != frames[0].shape:
            raise ValueError(f"{path.name} has a grid of {frame.shape} pixels, {paths[0].name} {frames[0].shape}")
        frames.append(frame)
    context = ContextInput(
        frames=np.stack(frames)[None, ..., None],
        source=Path(", ".join(p.name for p in paths)),
        attrs={"units": "mm/h"},
    )
    return check_context(pipe, context)


def storm_context(pipe: Any, seed: int) -> tuple[Any, np.ndarray]:
    """A held-out synthetic storm, made as `prediff demo` makes its storms, in the pipeline's physical units.

    The storm's frames (VIL / 255 in [0, 1]) are read as the pipeline's [0, 1] scale: VIL levels for a VIL
    pipeline, rain rate through the value transform for a radar one.

    Returns:
        The context ([`ContextInput`], frames `(1, T_in, H, W, C)`) and the observed future `(T_out, H, W, C)`.
    """
    from ..data import SyntheticStormDataset
    from ..pipelines.context_io import ContextInput
    from ..utils.checks import check_seed
    from ..utils.units import to_physical

    seed = check_seed(seed)
    T_in, H, W, C = pipe.context_shape
    T_out = pipe.forecast_shape[0]
    if C != 1:
        raise ValueError(f"synthetic storms have one channel; this pipeline takes {C}")
    storm = SyntheticStormDataset(1, T_in + T_out, H, W, seed=seed, progress=False)[0]["frames"].numpy()
    frames = np.asarray(to_physical(storm, pipe.value_range, pipe.value_transform), dtype=np.float32)
    context = ContextInput(frames=frames[None, :T_in], source=Path(f"synthetic storm, seed {seed}"))
    return context, frames[T_in:]


@dataclass
class AppForecast:
    """A forecast of the page.

    Attributes:
        context: `(T_in, H, W, C)` in physical units.
        ensembles: one ensemble `(M, T_out, H, W, C)` per anticipated intensity (one without control).
        n_sigmas: the `n` of each ensemble's target `mu + n sigma` (None: a target value, or no control).
        anticipated: the target of each ensemble (physical units; None without control).
        achieved: the mean intensity each ensemble reached ([`achieved_intensity`], physical units).
        observed: the observed future `(T_out, H, W, C)` when known (synthetic storms).
        settings: members, steps, seed, sampler and control, as recorded in the download.
    """

    context: np.ndarray
    ensembles: list[np.ndarray]
    n_sigmas: list[float | None]
    anticipated: list[float | None]
    achieved: list[float]
    observed: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self, units: str) -> str:
        """One line per ensemble: the anticipated and the achieved mean intensity."""
        from ..visualization import sigma_label

        lines = []
        for n, target, achieved in zip(self.n_sigmas, self.anticipated, self.achieved):
            if target is None:
                lines.append(f"No control: achieved mean intensity {achieved:.4g} {units}")
                continue
            label = f" ({sigma_label(n)})" if n is not None else ""
            lines.append(f"Anticipated {target:.4g}{label}, achieved {achieved:.4g} {units}")
        return "\n".join(lines)


def _targets(pipe: Any, n_sigmas: Sequence[float] | None, target: float | None) -> list[tuple[float | None, float]]:
    """`(n, target)` per anticipated intensity, targets from the pipeline's `future_intensity.json`.

    As in the demo, targets are clipped to the pipeline's physical range: the intensity distribution is skewed and
    `mu - 2 sigma` may be negative, which no forecast can reach.
    """
    from ..pretrained.intensity import intensity_target

    lo, hi = pipe.physical_range
    if target is not None:
        return [(None, float(np.clip(intensity_target(pipe, target=target)[0], lo, hi)))]
    return [(float(n), float(np.clip(intensity_target(pipe, n_sigma=float(n))[0], lo, hi))) for n in n_sigmas or ()]


def run_app_forecast(
    pipe: Any,
    context: Any,
    members: int = 4,
    steps: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    control_method: str | None = None,
    n_sigmas: Sequence[float] | None = None,
    target: float | None = None,
    observed: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AppForecast:
    """Forecast one context, with one ensemble per anticipated intensity.

    Args:
        pipe: a loaded PreDiff pipeline (an Earthformer one gives one deterministic member and takes no control).
        context: a [`ContextInput`] from [`storm_context`], [`uploaded_context`] or [`radar_context`].
        members, steps, seed: ensemble members, denoising steps (None: the sampler's own count) and noise seed;
            member `m` draws from `SeedSequence([seed, 0, m])` as in `prediff forecast`, whatever the control.
        sampler: a scheduler preset name (`prediff.schedulers.SCHEDULER_PRESETS`; None: the pipeline's own).
        control_method: None for no knowledge control, else the anticipated-intensity control's method
            ("analytic" or "learned").
        n_sigmas: with a control, the targets `mu + n sigma` of the pipeline's training distribution of the
            future mean intensity, one ensemble each (several: the what-if view).
        target: with a control, one target in physical units instead of `n_sigmas`.
        observed: the observed future `(T_out, H, W, C)`, kept for the scores.
        progress: called as `progress(step, total)` after every denoising step of every call.

    Raises:
        ValueError: bad counts, an unknown sampler or method, a control without a target or on a deterministic
            pipeline, a pipeline without the training distribution that `n_sigmas` needs.
    """
    from .. import demo
    from ..knowledge import AnticipatedIntensityControl
    from ..pipelines import PreDiffPipeline
    from ..pipelines.processes import member_generators
    from ..pipelines.tiling import forecast_tiled
    from ..schedulers import SCHEDULER_PRESETS, prediff_scheduler
    from ..utils.checks import check_positive_int, check_seed

    members = check_positive_int("members", members)
    seed = check_seed(seed)
    is_prediff = isinstance(pipe, PreDiffPipeline)
    if control_method is not None:
        if not is_prediff:
            raise ValueError("knowledge control needs a PreDiff pipeline; this one is deterministic (Earthformer)")
        if target is None and not n_sigmas:
            raise ValueError("the intensity control needs a target: an n sigma or a value")
        rows = _targets(pipe, n_sigmas, target)
    else:
        rows = [(None, None)]
    if sampler is not None and sampler not in SCHEDULER_PRESETS:
        raise ValueError(f"sampler must be one of {sorted(SCHEDULER_PRESETS)}, got {sampler!r}")
    frames = context.frames
    # NaN outside a radar domain and frames larger than the tile are forecast as blended tiles, as on the command
    # line.
    whole_domain = bool(np.isnan(frames).any()) or frames.shape[2:4] != tuple(pipe.context_shape[1:3])

    saved_scheduler = getattr(pipe, "scheduler", None)
    ensembles = []
    try:
        if is_prediff:
            if sampler is not None:
                pipe.scheduler = prediff_scheduler(sampler)
            steps = check_positive_int("steps", steps) if steps is not None else pipe.default_num_inference_steps
            pipe.check_forecast_memory(len(rows), members, "members")
        else:
            members, steps = 1, None
        pipe.set_progress_bar_config(disable=True)
        total = len(rows) * (steps or 1)
        done = [0]

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
            done[0] += 1
            if progress is not None:
                progress(min(done[0], total), total)
            return {}

        for _, anticipated in rows:
            kwargs: dict[str, Any] = {}
            if is_prediff:
                kwargs = dict(
                    num_inference_steps=steps,
                    num_ensemble_members=members,
                    generator=member_generators(seed, [0], members),
                    callback_on_step_end=on_step_end,
                )
                if anticipated is not None:
                    kwargs["knowledge_controls"] = [
                        AnticipatedIntensityControl(target=anticipated, method=control_method)
                    ]
            if whole_domain:
                ensemble = forecast_tiled(pipe, frames, progress=False, **kwargs)
            else:
                ensemble = pipe(frames, **kwargs).frames
            ensemble = np.asarray(ensemble, dtype=np.float32)
            ensembles.append(ensemble[0] if is_prediff else ensemble)
    finally:
        if saved_scheduler is not None:
            pipe.scheduler = saved_scheduler
    settings = {
        "members": members,
        "steps": steps,
        "seed": seed,
        "sampler": sampler or (type(saved_scheduler).__name__ if saved_scheduler is not None else None),
        "control_method": control_method,
    }
    return AppForecast(
        context=frames[0],
        ensembles=ensembles,
        n_sigmas=[n for n, _ in rows],
        anticipated=[a for _, a in rows],
        achieved=[demo.achieved_intensity(e) for e in ensembles],
        observed=observed,
        settings=settings,
    )


def score_forecast(result: AppForecast, pipe: Any, units: str) -> str:
    """The scores of the first ensemble against the observation, next to the demo's baselines (persistence,
    pysteps extrapolation and STEPS with as many members), as the demo's table; empty without an observation."""
    from .. import demo

    if result.observed is None:
        return ""
    context, target = result.context[None], result.observed[None]
    members = result.ensembles[0].shape[0]
    seed = int(result.settings.get("seed", 0))
    # Rain rate: CSI at 1 and 5 mm/h, as radar nowcasts are verified; VIL: the demo's levels.
    thresholds = (1.0, 5.0) if pipe.value_transform is not None else demo.DEMO_CSI_THRESHOLDS
    scores = {"prediff": demo.forecast_scores(result.ensembles[0][None], target, thresholds)}
    baselines = demo.baseline_forecasts(context, target.shape[1], members, pipe.physical_range, seed)
    for name, forecast in baselines.items():
        scores[name] = demo.forecast_scores(forecast, target, thresholds)
    return demo.format_scores(scores, units=units)


def short_units(pipe: Any, units: str | None) -> str:
    """Units as the page names them: "VIL" or "mm/h" for the fixed-level colour maps (VIL's units attribute is a
    sentence), else `units`."""
    return SHORT_UNITS.get(_style(pipe, units)[0], units or "")


def _style(pipe: Any, units: str | None) -> tuple[str, float]:
    """The pictures' colour map and exceedance threshold (physical units) for the pipeline."""
    from ..pipelines.commands import forecast_colour_map

    cmap = forecast_colour_map(pipe, units)
    lo, hi = pipe.physical_range
    return cmap, EXCEEDANCE_THRESHOLDS.get(cmap, (lo + hi) / 2)


def render_forecast(result: AppForecast, pipe: Any, folder: str | os.PathLike, units: str | None) -> dict[str, Path]:
    """The pictures of the first ensemble of `result`, written into `folder`.

    Returns:
        "panel": context, observation (if any), every member and the mean by lead time (PNG); "exceedance": the
        probability of reaching the threshold at each lead time (PNG; several members only); "gif": the
        animation.
    """
    from ..visualization import plot_exceedance, plot_forecast_panel, save_forecast_gif

    folder = Path(folder)
    cmap, threshold = _style(pipe, units)
    minutes = pipe.frame_interval_minutes or 10.0
    ensemble = result.ensembles[0]
    title = result.summary(short_units(pipe, units)).splitlines()[0]
    style = {"interval_minutes": minutes, "cmap": cmap, "title": title}
    paths = {"panel": folder / "forecast_panel.png", "gif": folder / "forecast.gif"}
    plot_forecast_panel(
        result.context, result.observed, ensemble, max_members=len(ensemble), path=paths["panel"], **style
    )
    save_forecast_gif(paths["gif"], result.context, result.observed, ensemble, **style)
    if len(ensemble) > 1:
        paths["exceedance"] = folder / "exceedance.png"
        plot_exceedance(ensemble, threshold, short_units(pipe, units), minutes, path=paths["exceedance"])
    return paths


def render_what_if(result: AppForecast, pipe: Any, path: str | os.PathLike, units: str | None) -> Path:
    """The what-if figure of `result` (one ensemble per `n`): context, observation and the first member for every
    anticipated intensity side by side, written to `path` (PNG)."""
    from ..pretrained.intensity import pipeline_intensity_stats
    from ..visualization import plot_what_if

    cmap, _ = _style(pipe, units)
    stats = pipeline_intensity_stats(pipe)
    mu, sigma = stats if stats is not None else (None, None)
    clipped = [n for n, a in zip(result.n_sigmas, result.anticipated) if mu is not None and a != mu + n * sigma]
    note = f" (n = {', '.join(f'{n:g}' for n in clipped)} clipped to the physical range)" if clipped else ""
    plot_what_if(
        result.context,
        {n: ensemble[0] for n, ensemble in zip(result.n_sigmas, result.ensembles)},
        mu=mu,
        sigma=sigma,
        target=result.observed,
        interval_minutes=pipe.frame_interval_minutes or 10.0,
        cmap=cmap,
        title=f"Anticipated mean intensity \u03bc + n\u03c3{note}",
        path=path,
    )
    return Path(path)


def write_forecast_netcdf(result: AppForecast, pipe: Any, context: Any, path: str | os.PathLike) -> Path:
    """The first ensemble of `result` as netCDF, written by `prediff forecast`'s writer with its attributes."""
    from ..pipelines.commands import forecast_attributes, forecast_units
    from ..pipelines.forecast_writing import forecast_dataset, write_forecast

    ensemble = result.ensembles[0][None]
    info = None
    if result.anticipated[0] is not None:
        info = f"anticipated mean intensity {result.anticipated[0]:.4g}, {result.settings['control_method']}"
    settings = result.settings
    attrs = forecast_attributes(
        pipe, context, ensemble.shape[2], settings["members"], settings["steps"], settings["seed"], info
    )
    dataset = forecast_dataset(ensemble, context, attrs=attrs, units=forecast_units(pipe, context))
    return write_forecast(dataset, path, overwrite=True)
