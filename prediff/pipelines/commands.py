"""`prediff forecast`: forecast an ensemble from a context sequence in a file, write it and draw it.

```
prediff forecast --pipeline DIR --input ctx.npy --out ens.nc --members 8 --steps 20 --seed 0 \
    [--knowledge-control intensity --target 40]
```

writes `ens.nc` (netCDF, or zarr for `.zarr`): the variable `forecast` with dims (member, time, y, x), the
`context` it started from and attributes for units, scaling, lead times, model and seed; `ens.npy`: the
pysteps layout (members, time, y, x); and, unless `--no-plots`, `ens_panel.png` and `ens.gif`.

`--input` may also be a folder or a quoted glob pattern of context files; `--out` is then a folder receiving
`<input name>.nc` per input. Under `accelerate launch -m prediff forecast ...` the processes split the inputs
(or the contexts of one file) and every output is written once, atomically. A run holds the lock of its `--out`
(the hidden file `.NAME.lock` next to it) from before it looks for existing outputs until it has written them: a
second run aimed at the same `--out` meanwhile stops at once with a one-line error (exit status 2).
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..knowledge.defaults import CONTROL_METHODS, DEFAULT_CONTROL_SCALE, control_method

__all__ = [
    "add_knowledge_control_arguments",
    "check_context",
    "context_inputs",
    "forecast_attributes",
    "forecast_colour_map",
    "forecast_units",
    "intensity_control_from_args",
    "register",
    "run_forecast",
    "run_forecasts",
]

KNOWLEDGE_CONTROLS = ("intensity",)


def add_knowledge_control_arguments(parser: argparse.ArgumentParser, observed_default: bool = False) -> None:
    """The options of the anticipated-intensity control, shared by `forecast` and `evaluate`."""
    group = parser.add_argument_group("knowledge control")
    group.add_argument(
        "--knowledge-control",
        choices=KNOWLEDGE_CONTROLS,
        default=None,
        help="steer the forecast: 'intensity' = anticipated average intensity of the forecast frames",
    )
    target_help = "anticipated mean intensity of the forecast, in the pipeline's physical units"
    if observed_default:
        target_help += " (default without --n-sigma: each sequence's observed future mean intensity)"
    group.add_argument("--target", type=float, default=None, help=target_help)
    group.add_argument(
        "--n-sigma",
        type=float,
        default=None,
        help="anticipate mu + N sigma of the training distribution of the future mean intensity (from the "
        "pipeline's future_intensity.json or --intensity-mean/--intensity-std)",
    )
    group.add_argument("--intensity-mean", type=float, default=None, help="mu for --n-sigma (physical units)")
    group.add_argument("--intensity-std", type=float, default=None, help="sigma for --n-sigma (physical units)")
    group.add_argument(
        "--control-scale",
        type=float,
        default=DEFAULT_CONTROL_SCALE,
        help=f"guidance strength: the fraction of the remaining gap closed at every step (default: "
        f"{DEFAULT_CONTROL_SCALE:g}, all of it)",
    )
    group.add_argument(
        "--control-method",
        choices=CONTROL_METHODS,
        default=None,
        help="'analytic' (decode the current clean estimate; the default, exact) or 'learned' (the pipeline's "
        "knowledge-alignment network; cheaper, as accurate as the network)",
    )


def intensity_control_from_args(pipeline: Any, args: argparse.Namespace, target: Any) -> Any:
    """An [`AnticipatedIntensityControl`] for `pipeline` with the scale and method of `args` and `target`
    (a number, or one value per context, physical units)."""
    from ..knowledge import AnticipatedIntensityControl

    if not np.isfinite(args.control_scale) or args.control_scale < 0:
        raise ValueError(f"--control-scale must be a finite number >= 0, got {args.control_scale}")
    return AnticipatedIntensityControl(
        target=target, scale=args.control_scale, method=control_method(args.control_method)
    )


def check_knowledge_control_args(args: argparse.Namespace) -> None:
    """Refuse control options given without `--knowledge-control` (they would silently do nothing)."""
    given = [
        flag
        for flag, value in (
            ("--target", args.target),
            ("--n-sigma", args.n_sigma),
            ("--intensity-mean", args.intensity_mean),
            ("--intensity-std", args.intensity_std),
            ("--control-method", args.control_method),
        )
        if value is not None
    ]
    if args.knowledge_control is None and given:
        raise ValueError(f"{', '.join(given)} only apply with --knowledge-control intensity")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `forecast` command to the `prediff` parser."""
    parser = subparsers.add_parser(
        "forecast",
        help="forecast an ensemble from a context file; write netCDF/zarr, the pysteps .npy and pictures",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--pipeline", required=True, help="saved pipeline folder, Hub id or shipped name")
    parser.add_argument(
        "--input",
        required=True,
        type=Path,
        help="context: .npy, HDF5 (.h5), zarr (.zarr) or netCDF (.nc); or a folder or a quoted glob pattern of them",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output ensemble: .nc (netCDF) or .zarr; a folder (OUT/<input name>.nc) for several inputs",
    )
    parser.add_argument("--members", type=int, default=8, help="ensemble members (default: 8)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the scheduler's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise (default: 0)")
    parser.add_argument("--variable", default=None, help="array / variable to read from the input file")
    parser.add_argument(
        "--dims",
        default=None,
        help="xarray inputs: dimension names in (sample,) time, y, x (, channel) order, comma-separated",
    )
    parser.add_argument(
        "--use-last-frames",
        action="store_true",
        help="use the last T_in frames of a longer input instead of refusing it",
    )
    parser.add_argument("--clip", action="store_true", help="clip inputs to the pipeline's value_range")
    parser.add_argument(
        "--no-intensity-cap",
        action="store_true",
        help="forecast without the pipeline's max_intensity_growth (its cap on members relative to the context)",
    )
    parser.add_argument(
        "--interval-minutes",
        type=float,
        default=None,
        help="minutes between frames, for lead-time labels (default: from the input's times, else 10 in "
        "pictures and none in the file)",
    )
    parser.add_argument(
        "--pysteps-out", type=Path, default=None, help="pysteps-layout .npy (default: OUT with suffix .npy)"
    )
    parser.add_argument("--no-pysteps", action="store_true", help="do not write the pysteps .npy")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the panel and the GIF")
    parser.add_argument("--plot-sample", type=int, default=0, help="context sample drawn (default: 0)")
    parser.add_argument("--device", default=None, help="torch device (default: the process's accelerator, else cpu)")
    parser.add_argument(
        "--tile-batch-size",
        type=int,
        default=4,
        help="frames larger than the pipeline's tile: tiles the networks see together, times the members (default: "
        "4; larger is faster on a GPU and needs more memory)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        help="frames larger than the pipeline's tile: pixels shared by neighbouring tiles (default: a quarter of the "
        "tile)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_knowledge_control_arguments(parser)
    parser.set_defaults(func=_forecast_command)


#: How messages name each output of `prediff forecast`.
OUTPUT_NAMES = {
    "forecast": "--out",
    "pysteps": "the pysteps output (--pysteps-out)",
    "panel": "the panel picture",
    "gif": "the GIF",
    "exceedance": "the exceedance-probability picture",
}


def _output_paths(out: Path, pysteps_out: Path | None, no_pysteps: bool, no_plots: bool) -> dict[str, Path]:
    base = out.with_suffix("")
    paths = {"forecast": out}
    if not no_pysteps:
        paths["pysteps"] = pysteps_out if pysteps_out is not None else base.with_suffix(".npy")
    if not no_plots:
        paths["panel"] = base.parent / f"{base.name}_panel.png"
        paths["gif"] = base.with_suffix(".gif")
        paths["exceedance"] = base.parent / f"{base.name}_exceedance.png"
    return paths


@contextmanager
def _output_lock(path: Path, label: str, processes: Any, shared: bool) -> Iterator[None]:
    """Hold the exclusive lock of output `path` ([`~prediff.utils.files.exclusive_lock`]) for the block.

    `shared`: every process of an `accelerate launch` runs the block for this one output, which the main
    process writes. The main process alone takes the lock and every process learns whether it got it, so that
    all of them stop with the same one-line error, rather than the others waiting forever for a main process
    that stopped.
    """
    from ..utils.files import OutputLockedError, exclusive_lock

    if not shared:
        with exclusive_lock(path, label):
            yield
        return
    from accelerate.utils import broadcast_object_list

    with ExitStack() as held:
        refusal = None
        if processes.is_main_process:
            try:
                held.enter_context(exclusive_lock(path, label))
            except OutputLockedError as error:
                refusal = str(error)
        refusal = broadcast_object_list([refusal])[0]
        if refusal is not None:
            raise OutputLockedError(refusal)
        yield


def check_context(
    pipe: Any,
    context: Any,
    use_last_frames: bool = False,
    clip: bool = False,
    interval_minutes: float | None = None,
) -> Any:
    """Check a [`ContextInput`] read from a file against `pipe` and return it ready to forecast: `T_in` frames
    (the last ones of a longer input with `use_last_frames`), frames of the pipeline's `(H, W, C)` or larger
    (forecast as tiles), the grid and clock the pipeline was trained for, values inside its physical range (or
    clipped to it with `clip`). `prediff forecast` and `prediff app` check every context here.

    Raises:
        ValueError: naming what does not fit and the option that would fix it, where one would.
    """
    from .context_io import check_context_values, check_grid_and_clock

    frames = context.frames
    T_in, H, W, C = pipe.context_shape
    if frames.shape[1] != T_in:
        if use_last_frames and frames.shape[1] > T_in:
            frames = frames[:, -T_in:]
            if context.time is not None:
                context.time = context.time[-T_in:]
        else:
            hint = " (or pass --use-last-frames to use the last ones)" if frames.shape[1] > T_in else ""
            raise ValueError(
                f"the pipeline needs {T_in} context frames, the input {context.source} has "
                f"{frames.shape[1]} (shape {tuple(frames.shape)} as (B, T, H, W, C)){hint}"
            )
    if frames.shape[4] != C or frames.shape[2] < H or frames.shape[3] < W:
        raise ValueError(
            f"the pipeline needs context frames of (H, W, C) = {(H, W, C)}, or larger (forecast as overlapping "
            f"tiles), the input {context.source} has {tuple(frames.shape[2:])} (shape {tuple(frames.shape)} "
            "as (B, T, H, W, C))"
        )
    check_grid_and_clock(context, pipe.pixel_size_km, pipe.frame_interval_minutes, interval_minutes)
    context.frames = check_context_values(frames, pipe.physical_range, clip=clip, name=f"context in {context.source}")
    return context


def forecast_units(pipe: Any, context: Any) -> str | None:
    """The units of a forecast: the pipeline's, else those the context file records."""
    return pipe.config.get("units") or context.attrs.get("units")


def forecast_colour_map(pipe: Any, units: str | None) -> str:
    """The colour map of a forecast's pictures: pysteps' rain-rate levels for mm/h, SEVIR's VIL levels for a
    0-255 pipeline, else viridis."""
    if "mm/h" in str(units):
        return "rainrate"
    return "vil" if pipe.value_range == (0.0, 255.0) else "viridis"


def forecast_attributes(
    pipe: Any,
    context: Any,
    num_lead_times: int,
    members: int,
    steps: int | None,
    seed: int,
    knowledge_control_info: str | None = None,
    interval_minutes: float | None = None,
) -> dict[str, Any]:
    """The global attributes of a forecast file written by [`forecast_dataset`]: units, scaling, lead times,
    model, sampler, seed and knowledge control."""
    from .. import __version__
    from .pipeline_prediff import PreDiffPipeline

    lo, hi = pipe.value_range
    units = forecast_units(pipe, context)
    model_id = pipe.config.get("_name_or_path") or type(pipe).__name__
    attrs = {
        "title": "prediff ensemble forecast",
        "source": f"prediff {__version__}, {type(pipe).__name__}",
        "model_id": str(model_id),
        "pipeline_class": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__ if isinstance(pipe, PreDiffPipeline) else None,
        "units": units or "physical units of the pipeline",
        "value_range": [lo, hi],
        "value_transform": json.dumps(pipe.value_transform) if pipe.value_transform else "none",
        "scaling": f"the model sees ({'T(x)' if pipe.value_transform else 'x'} - {lo:g}) / ({hi:g} - {lo:g})"
        f"{' with T the value_transform' if pipe.value_transform else ''}; values are physical and not clipped",
        "lead_times": list(range(1, num_lead_times + 1)),
        "lead_time_units": "frames",
        "members": members,
        "num_inference_steps": steps,
        "seed": seed,
        "seed_scheme": "member m of sample b uses numpy SeedSequence([seed, b, m])",
        "knowledge_control": knowledge_control_info or "none",
        "max_intensity_growth": str(pipe.config.get("max_intensity_growth") if not knowledge_control_info else None),
        "intensity_cap_radius_km": str(
            pipe.config.get("intensity_cap_radius_km")
            if pipe.config.get("max_intensity_growth") is not None and not knowledge_control_info
            else None
        ),
        "context_file": str(context.source),
        "context_variable": context.variable,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if interval_minutes is not None:
        attrs["interval_minutes"] = float(interval_minutes)
    return attrs


def run_forecast(
    pipeline: str | Any,
    input: str | Path,
    out: str | Path,
    members: int = 8,
    steps: int | None = None,
    seed: int = 0,
    variable: str | None = None,
    dims: tuple[str, ...] | None = None,
    use_last_frames: bool = False,
    clip: bool = False,
    knowledge_controls: Any = None,
    knowledge_control_info: str | None = None,
    interval_minutes: float | None = None,
    pysteps_out: str | Path | None = None,
    write_pysteps: bool = True,
    plots: bool = True,
    plot_sample: int = 0,
    device: str | None = None,
    tile_batch_size: int = 4,
    tile_overlap: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    split_across_processes: bool = True,
) -> dict[str, Path]:
    """Forecast from a context file and write the results (see the module docstring).

    Under `accelerate launch` (and `split_across_processes`), every process forecasts a contiguous share of
    the file's contexts (member `m` of context `b` draws its noise from `SeedSequence([seed, b, m])` whatever
    the share); the main process gathers the ensembles and alone writes the outputs.

    Args:
        pipeline: a loaded `PreDiffPipeline` / `EarthformerPipeline`, or what [`load_forecast_pipeline`]
            takes.
        input: context file, read by [`read_context`]; its length must be the pipeline's `T_in` (or longer
            with `use_last_frames`), its frames the pipeline's `(H, W, C)`, its values inside the pipeline's
            `value_range` (or `clip`).
        out: `.nc` or `.zarr` output.
        knowledge_controls: controls passed to a PreDiff pipeline; `knowledge_control_info` describes them in
            the file's attributes.
        tile_batch_size, tile_overlap: frames larger than the pipeline's tile, see
            [`~prediff.pipelines.tiling.forecast_tiled`] (`tile_batch_size`, `overlap`).
        split_across_processes: False to forecast every context here (one file per process, as
            [`run_forecasts`] does).
        Other arguments: as the command's options.

    Returns:
        kind ("forecast", "pysteps", "panel", "gif") -> path written; empty on the processes that do not write.

    Raises:
        OutputLockedError: another run is writing `out` (see [`~prediff.utils.files.exclusive_lock`]).
        FileExistsError: an output exists and `overwrite` is False (checked before any work).
        FileNotFoundError, ValueError: unreadable or unsuitable input, incomplete pipeline, bad arguments, an
            output that would replace the input (even with `overwrite`).
    """
    from accelerate.utils import gather_object

    from ..utils.checks import check_positive_int, check_seed
    from ..utils.faults import fault_point
    from ..utils.files import check_outputs_spare_inputs
    from .context_io import read_context
    from .forecast_writing import FORECAST_SUFFIXES, forecast_dataset, write_forecast, write_pysteps_array
    from .loading import load_forecast_pipeline
    from .pipeline_prediff import PreDiffPipeline
    from .processes import launched_processes, member_generators
    from .tiling import forecast_tiled

    start = time.perf_counter()
    members = check_positive_int("members", members)
    seed = check_seed(seed)
    if steps is not None:
        steps = check_positive_int("steps", steps)
    tile_batch_size = check_positive_int("tile_batch_size", tile_batch_size)
    if interval_minutes is not None and not (np.isfinite(interval_minutes) and interval_minutes > 0):
        raise ValueError(f"--interval-minutes must be a finite number of minutes > 0, got {interval_minutes}")
    out = Path(out)
    if out.suffix.lower() not in FORECAST_SUFFIXES:
        raise ValueError(f"--out must end in one of {FORECAST_SUFFIXES} (netCDF or zarr), got {str(out)!r}")
    paths = _output_paths(out, None if pysteps_out is None else Path(pysteps_out), not write_pysteps, not plots)
    # The default pysteps output of `--out ctx.nc` is ctx.npy: it may well be the input.
    check_outputs_spare_inputs({OUTPUT_NAMES[kind]: path for kind, path in paths.items()}, {"--input": input})
    for path in paths.values():
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")

    processes = launched_processes()
    split = split_across_processes and processes.num_processes > 1
    # Held from before the check for existing outputs until the last one is written: a second run on the same
    # --out refuses at once, instead of forecasting and then replacing, or mixing with, what this one writes.
    with _output_lock(out, "--out", processes, shared=split):
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
        # Launched on several GPUs, each process forecasts on its own one.
        device = device or processes.device
        pipe = pipeline if not isinstance(pipeline, (str, Path)) else load_forecast_pipeline(pipeline, device=device)
        is_prediff = isinstance(pipe, PreDiffPipeline)
        if not is_prediff and knowledge_controls:
            raise ValueError("knowledge control needs a PreDiff pipeline; this one is deterministic (Earthformer)")
        context = read_context(input, key=variable, dims=dims)
        context = check_context(pipe, context, use_last_frames, clip, interval_minutes)
        frames = context.frames
        T_in, H, W, C = pipe.context_shape
        if not 0 <= plot_sample < frames.shape[0]:
            raise ValueError(f"plot_sample must be in [0, {frames.shape[0]}), got {plot_sample}")

        if split and any(np.ndim(getattr(control, "target", 0)) > 0 for control in knowledge_controls or ()):
            raise ValueError("a knowledge-control target per context cannot be split across processes; give one value")
        pipe.set_progress_bar_config(disable=not (progress and processes.is_main_process))
        if is_prediff:
            steps = steps if steps is not None else pipe.default_num_inference_steps
        else:
            # Earthformer is deterministic: one "member".
            members, steps = 1, None
        # NaN marks pixels outside the radar domain: such contexts, and frames larger than the pipeline's tile,
        # are forecast as blended tiles, NaN kept outside the domain.
        whole_domain = bool(np.isnan(frames).any()) or frames.shape[2:4] != (H, W)

        def forecast(contexts: np.ndarray, **kwargs: Any) -> np.ndarray:
            if whole_domain:
                return forecast_tiled(pipe, contexts, overlap=tile_overlap, tile_batch_size=tile_batch_size,
                                      progress=progress and processes.is_main_process, **kwargs)  # fmt: skip
            return pipe(contexts, **kwargs).frames

        contexts = list(range(frames.shape[0]))
        with processes.split_between_processes(contexts) if split else nullcontext(contexts) as share:
            if not share:
                ensemble = np.zeros((0, members, *pipe.forecast_shape), dtype=np.float32)
            elif is_prediff:
                pipe.check_forecast_memory(len(share), members, "--members")
                ensemble = forecast(
                    frames[share],
                    num_inference_steps=steps,
                    num_ensemble_members=members,
                    generator=member_generators(seed, share, members),
                    knowledge_controls=knowledge_controls,
                )
            else:
                ensemble = forecast(frames[share])[:, None]
        ensemble = np.asarray(ensemble, dtype=np.float32)
        if split:
            # Shares are contiguous and gathered in process order: the contexts' order.
            ensemble = np.concatenate(gather_object([ensemble]))
            if not processes.is_main_process:
                return {}

        units = forecast_units(pipe, context)
        model_id = pipe.config.get("_name_or_path") or type(pipe).__name__
        attrs = forecast_attributes(
            pipe, context, ensemble.shape[2], members, steps, seed, knowledge_control_info, interval_minutes
        )
        dataset = forecast_dataset(ensemble, context, attrs=attrs, interval_minutes=interval_minutes, units=units)
        written = {"forecast": write_forecast(dataset, paths["forecast"], overwrite=overwrite)}
        fault_point("forecast-write")
        if "pysteps" in paths:
            written["pysteps"] = write_pysteps_array(ensemble, paths["pysteps"], overwrite=overwrite)
        if plots:
            from ..visualization import plot_exceedance, plot_forecast_panel, save_forecast_gif

            step = context.time_step
            minutes = interval_minutes or (float(step / np.timedelta64(1, "s")) / 60 if step is not None else 10.0)
            title = f"{Path(str(model_id)).name}: {members} member(s) from {Path(context.source).name}"
            sample = frames[plot_sample]
            ens = ensemble[plot_sample]
            # Rain rate in pysteps' colours and levels, with P(R >= 1 mm/h); VIL levels in SEVIR's colours.
            rain = "mm/h" in str(units)
            cmap = forecast_colour_map(pipe, units)
            style = {"interval_minutes": minutes, "title": title, "cmap": cmap}
            plot_forecast_panel(sample, None, ens, path=paths["panel"], **style)
            written["panel"] = paths["panel"]
            written["gif"] = save_forecast_gif(paths["gif"], sample, None, ens, **style)
            if rain and members > 1:
                plot_exceedance(ens, 1.0, "mm/h", minutes, path=paths["exceedance"])
                written["exceedance"] = paths["exceedance"]
        if progress:
            seconds = time.perf_counter() - start
            print(f"prediff forecast: {frames.shape[0]} context(s) x {members} member(s) in {seconds:.1f} s")
        return written


def context_inputs(input: str | Path) -> list[Path] | None:
    """The context files `input` names when it is a folder (its context files, not its subfolders) or a glob
    pattern, sorted; None when it is one context file (a zarr store is a folder, and one file)."""
    from .context_io import CONTEXT_SUFFIXES, ZARR_SUFFIXES

    path = Path(input).expanduser()
    if path.is_dir() and path.suffix.lower() not in ZARR_SUFFIXES:
        candidates, where = list(path.iterdir()), f"folder {str(path)!r}"
    elif not path.exists() and glob.has_magic(str(path)):
        candidates, where = [Path(p) for p in glob.glob(str(path))], f"pattern {str(input)!r}"
    else:
        return None
    files = sorted(p for p in candidates if p.suffix.lower() in CONTEXT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"the {where} holds no context file ({', '.join(CONTEXT_SUFFIXES)})")
    return files


def run_forecasts(
    pipeline: Any,
    inputs: list[Path],
    out_dir: str | Path,
    suffix: str = ".nc",
    overwrite: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> list[Path]:
    """Forecast every context file of `inputs` into `out_dir/<file stem><suffix>` (with its pysteps `.npy`
    and pictures, as [`run_forecast`] writes them).

    Under `accelerate launch` every process forecasts a contiguous share of the files and writes their
    outputs, each once and atomically; the main process shows the progress of its share. Every output is
    checked before any forecast: two inputs of one stem, or an existing output without `overwrite`, are
    refused. `kwargs` are [`run_forecast`]'s (not `pysteps_out`: each input has its own).

    Returns:
        Every forecast file written by all processes, in the order of `inputs`.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .processes import launched_processes

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out must be a folder when --input names several files, got {str(out_dir)!r}")
    if "pysteps_out" in kwargs:
        raise ValueError("--pysteps-out names one file; with several inputs each gets OUT/<name>.npy")
    outputs = [out_dir / f"{path.stem}{suffix}" for path in inputs]
    stems: dict[Path, Path] = {}
    for path, output in zip(inputs, outputs):
        if output in stems:
            raise ValueError(f"{stems[output]} and {path} would both be forecast into {output}; rename one")
        stems[output] = path
    write_pysteps, plots = kwargs.get("write_pysteps", True), kwargs.get("plots", True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    processes = launched_processes()
    # The folder is locked as a whole (and each file by the process writing it): a second run on the same
    # --out refuses at once rather than mixing its files with this run's.
    with _output_lock(out_dir, "--out", processes, shared=processes.num_processes > 1):
        existing = [
            str(p)
            for output in outputs
            for p in _output_paths(output, None, not write_pysteps, not plots).values()
            if p.exists()
        ]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} (and {len(existing) - 1} more) already exist(s); pass --overwrite")
        out_dir.mkdir(exist_ok=True)
        written = []
        with processes.split_between_processes(list(zip(inputs, outputs))) as share:
            for path, output in tqdm(
                share, desc="forecast", unit="file", disable=not (progress and processes.is_main_process)
            ):
                run_forecast(
                    pipeline, path, output, overwrite=overwrite, progress=False, split_across_processes=False, **kwargs
                )
                written.append(output)
        return list(gather_object(written)) if processes.num_processes > 1 else written


def _forecast_command(args: argparse.Namespace) -> int:
    from ..pretrained.intensity import intensity_target
    from .loading import load_forecast_pipeline
    from .processes import launched_processes

    check_knowledge_control_args(args)
    device = args.device or launched_processes().device
    pipe = load_forecast_pipeline(args.pipeline, device=device)
    if args.no_intensity_cap and "max_intensity_growth" in pipe.config:
        pipe.max_intensity_growth = None
    controls, info = None, None
    if args.knowledge_control == "intensity":
        target, source = intensity_target(pipe, args.target, args.n_sigma, args.intensity_mean, args.intensity_std)
        control = intensity_control_from_args(pipe, args, target)
        controls = [control]
        info = f"anticipated mean intensity {target:.4g} ({source}), scale {control.scale:g}, {control.method}"
    dims = tuple(d.strip() for d in args.dims.split(",")) if args.dims else None
    options = dict(
        members=args.members,
        steps=args.steps,
        seed=args.seed,
        variable=args.variable,
        dims=dims,
        use_last_frames=args.use_last_frames,
        clip=args.clip,
        knowledge_controls=controls,
        knowledge_control_info=info,
        interval_minutes=args.interval_minutes,
        write_pysteps=not args.no_pysteps,
        plots=not args.no_plots,
        plot_sample=args.plot_sample,
        device=device,
        tile_batch_size=args.tile_batch_size,
        tile_overlap=args.tile_overlap,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.pysteps_out is not None:
        options["pysteps_out"] = args.pysteps_out
    inputs = context_inputs(args.input)
    if inputs is None:
        written = list(run_forecast(pipe, args.input, args.out, **options).values())
    else:
        written = run_forecasts(pipe, inputs, args.out, **options)
        written = [f"{len(written)} forecasts into {args.out}"]
    if launched_processes().is_main_process:
        for path in written:
            print(f"wrote {path}")
    return 0
