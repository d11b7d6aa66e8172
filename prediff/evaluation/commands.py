"""`prediff evaluate`: score a pipeline on a data set next to the baselines, per lead time.

```
prediff evaluate --pipeline DIR_OR_REPO --dataset storms --num-sequences 16 --members 4 --steps 10 \
    [--knowledge-control intensity --n-sigma 2] [--baselines persistence,extrapolation] \
    --out report.json --markdown report.md
```

`--dataset` is `storms` (synthetic storms made on the fly, seed `--data-seed`), `sevir` (with `--root`, a
SEVIR or SEVIR-LR folder) or a file written by `prediff data generate` (HDF5 / zarr). The table is printed;
`--out` writes JSON and `--markdown` Markdown.

`accelerate launch [--num_processes N] -m prediff evaluate ...` splits the sequences across N processes (one
device each); their scores are added up exactly and the main process alone prints and writes the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..knowledge.defaults import control_method
from ..metrics.defaults import RAIN_RATE_THRESHOLDS, SEVIR_POOL_SIZES, SEVIR_THRESHOLDS, default_thresholds

__all__ = ["build_dataset", "register"]

DATASET_KINDS = ("storms", "sevir")
#: Seed of the synthetic storms scored by default; the shipped pipeline was trained on seed 0.
DEFAULT_DATA_SEED = 1


def _numbers(text: str, kind: type, flag: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated {kind.__name__}s, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} must name at least one value, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command to the `prediff` parser."""
    from ..pipelines.commands import add_knowledge_control_arguments

    parser = subparsers.add_parser(
        "evaluate",
        help="score a pipeline per lead time next to persistence and other baselines",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--pipeline", required=True, help="saved pipeline folder, Hub id or shipped name")
    parser.add_argument(
        "--dataset", required=True, help="'storms', 'sevir' (with --root) or an HDF5/zarr file of sequences"
    )
    parser.add_argument("--root", type=Path, default=None, help="SEVIR / SEVIR-LR folder for --dataset sevir")
    parser.add_argument("--num-sequences", type=int, default=None, help="sequences scored (storms: default 16)")
    parser.add_argument("--data-seed", type=int, default=DEFAULT_DATA_SEED, help="seed of the synthetic storms")
    parser.add_argument("--stride", type=int, default=None, help="window stride in SEVIR events / data files")
    parser.add_argument("--start-date", default=None, help="SEVIR: events after it (PreDiff test: 2019-06-01)")
    parser.add_argument("--end-date", default=None, help="SEVIR: events up to it")
    parser.add_argument("--key", default="frames", help="array of a data file (default: frames)")
    parser.add_argument("--members", type=int, default=4, help="ensemble members (default: 4)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the scheduler's)")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences forecast together (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the forecast noise (default: 0)")
    parser.add_argument(
        "--baselines",
        default="persistence",
        help="comma-separated: persistence, extrapolation, steps ('' none)",
    )
    parser.add_argument(
        "--thresholds",
        default=None,
        help="event thresholds in physical units (default: the SEVIR VIL thresholds "
        f"{','.join(f'{t:g}' for t in SEVIR_THRESHOLDS)}; for a rain-rate pipeline "
        f"{','.join(f'{t:g}' for t in RAIN_RATE_THRESHOLDS)} mm/h)",
    )
    parser.add_argument(
        "--pool-sizes", default=",".join(map(str, SEVIR_POOL_SIZES)), help="max-pooling sizes of CSI and CRPS"
    )
    parser.add_argument("--fss-scales", default="1,4,16", help="FSS neighbourhood sizes in pixels")
    parser.add_argument(
        "--event-probability",
        type=float,
        default=None,
        help="CSI, POD, BIAS and FSS of an ensemble score its events at this exceedance probability (an event "
        "where at least this fraction of the members reach the threshold, e.g. 0.375) instead of its mean's",
    )
    parser.add_argument("--interval-minutes", type=float, default=None, help="minutes between frames (labels)")
    parser.add_argument(
        "--observed-factor",
        type=float,
        default=1.0,
        help="with --knowledge-control and no --target/--n-sigma: anticipate this factor times the observed "
        "future mean intensity (default: 1)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report as Markdown")
    parser.add_argument("--scores", default=None, help="scores in the printed table: names or 'all'")
    parser.add_argument(
        "--device", default=None, help="torch device (default: the process's accelerator, cuda if available, else cpu)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_knowledge_control_arguments(parser, observed_default=True)
    parser.set_defaults(func=_evaluate_command)


def build_dataset(
    kind: str,
    context_frames: int,
    forecast_frames: int,
    frame_shape: tuple[int, int, int],
    num_sequences: int | None = None,
    data_seed: int = DEFAULT_DATA_SEED,
    root: str | Path | None = None,
    stride: int | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    key: str = "frames",
    value_range: tuple[float, float] | None = None,
    value_transform: dict[str, Any] | None = None,
) -> tuple[Any, str]:
    """The data set `kind` ("storms", "sevir" or a data file) with windows of `context_frames +
    forecast_frames` frames of `frame_shape` `(H, W, C)`, and a label for the report.

    A data file that records no value range (a sequence file of rain rate in mm/h) is read with the pipeline's
    `value_range` and `value_transform`; one that records them keeps its own."""
    from ..data.building import build_sequence_dataset

    seq_len = context_frames + forecast_frames
    H, W, C = frame_shape
    if kind == "storms":
        if C != 1:
            raise ValueError(f"synthetic storms have 1 channel; the pipeline needs C={C}")
        count = 16 if num_sequences is None else num_sequences
        dataset = build_sequence_dataset("storms", seq_len, num_sequences=count, height=H, width=W, seed=data_seed)
        return dataset, f"synthetic storms (seed {data_seed}, {seq_len} frames of {H}x{W})"
    if kind == "sevir":
        if root is None:
            raise ValueError("--dataset sevir needs --root, the folder holding CATALOG.csv and data/")
        dataset = build_sequence_dataset(
            "sevir", seq_len, root, stride=stride, start_date=start_date, end_date=end_date
        )
        if dataset.frame_shape is not None and tuple(dataset.frame_shape) != (H, W):
            raise ValueError(
                f"SEVIR frames in {root} are {tuple(dataset.frame_shape)}; the pipeline needs {(H, W)} "
                "(SEVIR-LR pipelines need `prediff data downsample-sevir` first)"
            )
        return dataset, f"SEVIR {root} ({len(dataset)} windows of {seq_len} frames)"
    path = Path(kind)
    if not path.exists():
        raise FileNotFoundError(
            f"--dataset must be one of {DATASET_KINDS} or an existing HDF5/zarr data file, got {kind!r}"
        )
    from ..data.io import SequenceFile

    scaling = {}
    if value_range is not None and "value_range" not in SequenceFile(path).metadata:
        scaling = {"value_range": value_range, "value_transform": value_transform}
    dataset = build_sequence_dataset("file", seq_len, path, stride=stride, key=key, **scaling)
    if dataset.shape[2:] != (H, W, C):
        raise ValueError(f"frames in {path} are (H, W, C) = {dataset.shape[2:]}; the pipeline needs {(H, W, C)}")
    return dataset, f"{path} ({len(dataset)} windows of {seq_len} frames)"


def _evaluate_command(args: argparse.Namespace) -> int:
    from ..pipelines.commands import check_knowledge_control_args
    from ..pipelines.loading import load_forecast_pipeline
    from ..pipelines.processes import launched_processes
    from ..pretrained.intensity import intensity_target
    from .evaluate import IntensityControlSpec, evaluate_pipeline

    check_knowledge_control_args(args)
    outputs = [p for p in (args.out, args.markdown) if p is not None]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    for path in outputs:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")
    thresholds = None if args.thresholds is None else _numbers(args.thresholds, float, "--thresholds")
    pool_sizes = _numbers(args.pool_sizes, int, "--pool-sizes")
    fss_scales = _numbers(args.fss_scales, int, "--fss-scales")
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    scores = None
    if args.scores:
        scores = "all" if args.scores == "all" else [s.strip() for s in args.scores.split(",") if s.strip()]

    processes = launched_processes()
    # Launched on several GPUs, each process forecasts on its own one.
    device = args.device or processes.device
    pipe = load_forecast_pipeline(args.pipeline, device=device)
    T_in, H, W, C = pipe.context_shape
    dataset, label = build_dataset(
        args.dataset,
        T_in,
        pipe.forecast_shape[0],
        (H, W, C),
        num_sequences=args.num_sequences,
        data_seed=args.data_seed,
        root=args.root,
        stride=args.stride,
        start_date=args.start_date,
        end_date=args.end_date,
        key=args.key,
        value_range=pipe.value_range,
        value_transform=pipe.value_transform,
    )
    if thresholds is None:
        thresholds = default_thresholds(pipe.value_transform)
    control = None
    if args.knowledge_control == "intensity":
        method = control_method(args.control_method)
        if args.target is None and args.n_sigma is None:
            if args.intensity_mean is not None or args.intensity_std is not None:
                raise ValueError("--intensity-mean/--intensity-std need --n-sigma")
            control = IntensityControlSpec(
                scale=args.control_scale, observed_factor=args.observed_factor, method=method
            )
        else:
            target, source = intensity_target(pipe, args.target, args.n_sigma, args.intensity_mean, args.intensity_std)
            control = IntensityControlSpec(
                target=target, scale=args.control_scale, description=f"{target:.4g} ({source})", method=method
            )
    try:
        report = evaluate_pipeline(
            pipe,
            dataset,
            num_sequences=args.num_sequences,
            batch_size=args.batch_size,
            num_ensemble_members=args.members,
            num_inference_steps=args.steps,
            seed=args.seed,
            knowledge_control=control,
            baselines=baselines,
            thresholds=thresholds,
            pool_sizes=pool_sizes,
            fss_scales=fss_scales,
            interval_minutes=args.interval_minutes,
            pipeline_name=str(args.pipeline),
            dataset_name=label,
            progress=not args.no_progress,
            event_probability=args.event_probability,
        )
    except ImportError as error:
        # A baseline's optional package is missing: say which, without a traceback.
        raise ValueError(str(error)) from None
    if not processes.is_main_process:
        return 0
    print(report.to_table(scores))
    if args.out is not None:
        print(f"wrote {report.save(args.out)}")
    if args.markdown is not None:
        print(f"wrote {report.save(args.markdown)}")
    return 0
