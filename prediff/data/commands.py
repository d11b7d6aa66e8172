"""``prediff data ...``: generate the built-in data sets, inspect data files, write SEVIR-LR from SEVIR, and read
radar archives (pysteps data sources) into sequence files of rain rate."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its sub-commands to the ``prediff`` parser."""
    data = subparsers.add_parser("data", help="generate, inspect and convert data sets")
    commands = data.add_subparsers(dest="data_command", required=True)

    generate = commands.add_parser("generate", help="write a synthetic data set to HDF5 (.h5) or zarr (.zarr)")
    kinds = generate.add_subparsers(dest="kind", required=True)

    storms = kinds.add_parser(
        "storms", help="synthetic radar storms (VIL, uint8 0-255; rain rate in mm/h with --calibration)"
    )
    _output_arguments(storms)
    storms.add_argument("--num-sequences", type=int, default=1000)
    storms.add_argument("--seq-len", type=int, default=13)
    storms.add_argument("--height", type=int, default=128)
    storms.add_argument("--width", type=int, default=128)
    storms.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="a storm calibration (prediff data calibrate-storms): generate rain rate (mm/h, float32) with its "
        "parameters, recording its archive's pixel size and frame interval",
    )
    storms.set_defaults(func=_generate_storms)

    calibrate = commands.add_parser(
        "calibrate-storms",
        help="fit the storm generator to the rain-rate sequences of a radar file (motion, spectrum, growth and "
        "decay, intensities)",
        description=(
            "Measure a rain-rate sequence file (mm/h, as 'prediff data radar' writes): intensity distribution, "
            "power-spectrum slope, motion speed and Lagrangian correlation; fit the synthetic storm generator to "
            "them and write the calibration as JSON for 'prediff data generate storms --calibration'."
        ),
    )
    calibrate.add_argument("path", type=Path, help="sequence file of rain rate in mm/h (.h5 or .zarr)")
    calibrate.add_argument("--out", type=Path, required=True, help="calibration JSON to write")
    calibrate.add_argument(
        "--max-sequences", type=int, default=512, help="sequences of the file measured, drawn at random (default 512)"
    )
    calibrate.add_argument("--num-samples", type=int, default=128, help="generated sequences per candidate")
    calibrate.add_argument("--seed", type=int, default=1, help="seed of the draw and of the generated samples")
    calibrate.add_argument("--overwrite", action="store_true", help="replace an existing output")
    calibrate.set_defaults(func=_calibrate_storms)

    nbody = kinds.add_parser("nbody", help="N-body digits (frames stored as uint8 0-255, with the physical state)")
    _output_arguments(nbody)
    nbody.add_argument("--num-sequences", type=int, default=1000)
    nbody.add_argument("--seq-len", type=int, default=20)
    nbody.add_argument("--num-bodies", type=int, default=3)
    nbody.add_argument("--mnist", type=Path, default=None, help="MNIST .npz to take digits from (default: font)")
    nbody.set_defaults(func=_generate_nbody)

    inspect = commands.add_parser("inspect", help="print shapes, value ranges and counts of a data file or folder")
    inspect.add_argument("path", type=Path)
    inspect.set_defaults(func=_inspect)

    merge = commands.add_parser(
        "merge",
        help="write the sequences of several files (same arrays, units, grid and clock) into one",
    )
    merge.add_argument("inputs", type=Path, nargs="+", help="sequence files (.h5 or .zarr), in order")
    merge.add_argument("--out", type=Path, required=True, help="output .h5/.hdf5 file or .zarr store")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing output")
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=_merge)

    downsample = commands.add_parser(
        "downsample-sevir", help="write SEVIR-LR (every 2nd frame, 3x3 block max) from a SEVIR folder"
    )
    downsample.add_argument("src", type=Path, help="SEVIR root (CATALOG.csv and data/)")
    downsample.add_argument("dst", type=Path, help="SEVIR-LR root to write")
    downsample.add_argument(
        "--img-type",
        action="append",
        dest="img_types",
        default=None,
        help="image type to convert (repeatable; default vil)",
    )
    downsample.add_argument("--time-factor", type=int, default=2)
    downsample.add_argument("--space-factor", type=int, default=3)
    downsample.add_argument("--skip-missing", action="store_true", help="convert only the files present")
    downsample.add_argument(
        "--workers", type=int, default=None, help="processes converting files in parallel (default: every core)"
    )
    downsample.add_argument("--overwrite", action="store_true")
    downsample.add_argument("--quiet", action="store_true", help="no progress bar")
    downsample.set_defaults(func=_downsample)

    radar = commands.add_parser(
        "radar",
        help="read events of a radar archive (a pysteps data source) into a sequence file of rain rate (mm/h)",
        description=(
            "Read the files of a radar archive with pysteps (find_by_date, the source's importer, to_rainrate), "
            "average blocks of pixels, cut windows and crops, keep the wet ones and write them in mm/h to an HDF5 "
            "(.h5) or zarr (.zarr) sequence file that records the source, valid times, pixel size, frame interval, "
            "projection and accumulation."
        ),
    )
    where = radar.add_argument_group("archive")
    where.add_argument("--source", default=None, help="data source of pysteps' pystepsrc (fmi, knmi, bom, opera, ...)")
    where.add_argument(
        "--source-config",
        type=Path,
        default=None,
        help="YAML/JSON file with the pystepsrc fields (root_path, path_fmt, fn_pattern, fn_ext, importer, timestep, "
        "importer_kwargs), or a pystepsrc whose data source --source names",
    )
    where.add_argument(
        "--root",
        type=Path,
        default=None,
        help="archive folder: the one holding radar/ for a pystepsrc source; for --source-config, what a relative "
        "root_path is relative to (default: the file's folder)",
    )
    when = radar.add_argument_group("events (times YYYYmmddHHMM or ISO 8601, UTC, ends included)")
    when.add_argument("--start", action="append", default=None, help="start of an event (repeat for several)")
    when.add_argument("--end", action="append", default=None, help="end of an event (one per --start)")
    when.add_argument("--events", type=Path, default=None, help="text file of events, one 'START END' a line")
    shape = radar.add_argument_group("frames")
    shape.add_argument(
        "--pixel-size-km",
        type=float,
        default=None,
        help="output pixel size, a whole multiple of the native one (k x k block mean; a block with any NaN is NaN)",
    )
    shape.add_argument(
        "--interval-minutes", type=int, default=None, help="minutes between frames, a multiple of the time step"
    )
    shape.add_argument("--window", type=int, default=8, help="frames per sequence (default 8)")
    shape.add_argument("--window-stride", type=int, default=None, help="frames between windows (default --window)")
    shape.add_argument("--crop", type=int, default=None, help="side of square crops in pixels (default: whole frame)")
    shape.add_argument("--stride", type=int, default=None, help="pixels between crops (default --crop)")
    shape.add_argument(
        "--min-wet-fraction",
        type=float,
        default=0.0,
        help="keep crops where at least this fraction of the valid pixels is wet (default 0: all)",
    )
    shape.add_argument(
        "--wet-threshold", type=float, default=0.1, help="rain rate (mm/h) of a wet pixel (default 0.1)"
    )
    shape.add_argument(
        "--nan",
        choices=("drop", "fill", "keep"),
        default="drop",
        help="pixels outside the radar domain: drop crops holding any (default), fill with 0 mm/h and store a "
        "validity mask, or keep NaN",
    )
    radar.add_argument("--out", type=Path, required=True, help="output .h5/.hdf5 file or .zarr store")
    radar.add_argument("--overwrite", action="store_true", help="replace an existing output")
    radar.add_argument("--quiet", action="store_true", help="no progress bars")
    radar.set_defaults(func=_radar)


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output .h5/.hdf5 file or .zarr store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_output(args: argparse.Namespace) -> None:
    from .io import storage_format

    storage_format(args.out)
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")


def _generate_storms(args: argparse.Namespace) -> int:
    from .io import write_sequences
    from .storms import SyntheticStormDataset

    _check_output(args)
    if args.calibration is not None:
        return _generate_calibrated_storms(args)
    dataset = SyntheticStormDataset(args.num_sequences, args.seq_len, args.height, args.width, seed=args.seed)
    write_sequences(
        args.out,
        (dataset.generate(i) for i in range(len(dataset))),
        num_sequences=len(dataset),
        frame_shape=(dataset.seq_len, dataset.height, dataset.width, 1),
        dtype=np.uint8,
        metadata=dataset.metadata(),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"wrote {len(dataset)} storm sequences to {args.out}")
    return 0


def _generate_calibrated_storms(args: argparse.Namespace) -> int:
    from ..utils.checks import check_positive_int
    from .io import write_sequences
    from .storm_calibration import StormCalibration

    calibration = StormCalibration.load(args.calibration)
    for name in ("num_sequences", "seq_len", "height", "width"):
        check_positive_int(name, getattr(args, name))
    metadata = {
        "generator": "SyntheticStormDataset",
        "calibration": calibration.to_dict(),
        "seed": args.seed,
        "units": "mm/h",
        "pixel_size_km": calibration.pixel_size_km,
        "frame_interval_minutes": calibration.frame_interval_minutes,
    }
    write_sequences(
        args.out,
        (calibration.generate(args.seed, i, args.seq_len, args.height, args.width) for i in range(args.num_sequences)),
        num_sequences=args.num_sequences,
        frame_shape=(args.seq_len, args.height, args.width, 1),
        dtype=np.float32,
        metadata={key: value for key, value in metadata.items() if value is not None},
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"wrote {args.num_sequences} calibrated storm sequences (mm/h) to {args.out}")
    return 0


def _calibrate_storms(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .io import SequenceFile
    from .storm_calibration import RainStatistics, calibrate_storm_generator

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    if not args.path.exists():
        raise FileNotFoundError(f"sequence file {str(args.path)!r} does not exist")
    file = SequenceFile(args.path)
    units = file.metadata.get("units")
    if units != "mm/h":
        raise ValueError(f"{args.path} holds {units!r}, not rain rate: calibrate-storms needs a file in mm/h")
    if args.max_sequences < 2:
        raise ValueError(f"--max-sequences must be at least 2, got {args.max_sequences}")
    chosen = np.random.default_rng(args.seed).permutation(len(file))[: args.max_sequences]
    frames = np.stack([file.read(int(i)) for i in np.sort(chosen)]).astype(np.float32)
    with tqdm(desc="candidates", unit="candidate") as bar:
        calibration = calibrate_storm_generator(
            frames, num_samples=args.num_samples, seed=args.seed, on_candidate=lambda _: bar.update()
        )
    calibration.pixel_size_km = file.metadata.get("pixel_size_km")
    calibration.frame_interval_minutes = file.metadata.get("frame_interval_minutes")
    calibration.source = {"path": str(args.path), "sequences": int(len(chosen)), "of": len(file)}
    calibration.save(args.out, overwrite=args.overwrite)
    print("| | " + " | ".join(RainStatistics.HEADER) + " |")
    print("|---" * (len(RainStatistics.HEADER) + 1) + "|")
    for name, stats in calibration.statistics.items():
        print(f"| {name} | " + " | ".join(stats.summary()) + " |")
    print(f"parameters: {calibration.parameters}")
    print(f"wrote the storm calibration to {args.out}")
    return 0


def _generate_nbody(args: argparse.Namespace) -> int:
    from .io import write_sequences
    from .nbody import NBodyDataset

    _check_output(args)
    dataset = NBodyDataset(args.num_sequences, args.seq_len, args.num_bodies, seed=args.seed, mnist_path=args.mnist)
    k, t, s = dataset.num_bodies, dataset.seq_len, dataset.frame_size

    def items():
        for i in range(len(dataset)):
            state = dataset.simulate(i)
            # Frames are stored as 8-bit levels (value_range 0-255), like the other written data sets.
            state["frames"] = np.round(state["frames"] * 255.0).astype(np.uint8)[..., None]
            yield state

    write_sequences(
        args.out,
        items(),
        num_sequences=len(dataset),
        frame_shape=(t, s, s, 1),
        dtype=np.uint8,
        metadata=dataset.metadata(),
        fields={
            "positions": ((t, k, 2), np.float32),
            "velocities": ((t, k, 2), np.float32),
            "energy": ((t,), np.float32),
            "masses": ((k,), np.float32),
            "glyph_sizes": ((k, 2), np.float32),
            "digits": ((k,), np.int64),
        },
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"wrote {len(dataset)} N-body sequences to {args.out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .io import inspect_path

    print(inspect_path(args.path))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .io import merge_sequence_files

    _check_output(args)
    if any(path.resolve() == args.out.resolve() for path in args.inputs):
        raise ValueError(f"--out {args.out} is one of the inputs")
    merge_sequence_files(args.inputs, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"merged {len(args.inputs)} files into {args.out}")
    return 0


def _downsample(args: argparse.Namespace) -> int:
    from .sevir import downsample_sevir

    written = downsample_sevir(
        args.src,
        args.dst,
        img_types=args.img_types or ["vil"],
        time_factor=args.time_factor,
        space_factor=args.space_factor,
        overwrite=args.overwrite,
        skip_missing_files=args.skip_missing,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(f"wrote {len(written)} SEVIR-LR file(s) and CATALOG.csv to {args.dst}")
    return 0


def _radar_source(args: argparse.Namespace):
    from .radar import RadarSource

    if args.root is not None and not args.root.is_dir():
        raise FileNotFoundError(f"archive root {args.root} does not exist")
    if args.source_config is not None:
        return RadarSource.from_file(args.source_config, name=args.source, root=args.root)
    if args.source is None:
        raise ValueError("name the archive with --source NAME (a pystepsrc data source) or --source-config FILE")
    if args.root is None:
        raise ValueError(f"--source {args.source} needs --root, the archive folder that holds radar/")
    return RadarSource.from_pystepsrc(args.source, root=args.root)


def _radar_events(args: argparse.Namespace) -> list:
    from .radar import read_radar_events

    starts, ends = args.start or [], args.end or []
    if len(starts) != len(ends):
        raise ValueError(f"give one --end per --start: got {len(starts)} --start and {len(ends)} --end")
    events = list(zip(starts, ends))
    if args.events is not None:
        events += read_radar_events(args.events)
    if not events:
        raise ValueError("give the events to read: --start and --end, or --events FILE")
    return events


def _radar(args: argparse.Namespace) -> int:
    from .io import storage_format, write_sequences
    from .radar import RadarArchiveDataset

    storage_format(args.out)
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    source = _radar_source(args)
    dataset = RadarArchiveDataset(
        source,
        _radar_events(args),
        window=args.window,
        pixel_size_km=args.pixel_size_km,
        interval_minutes=args.interval_minutes,
        crop=args.crop,
        stride=args.stride,
        window_stride=args.window_stride,
        min_wet_fraction=args.min_wet_fraction,
        wet_threshold=args.wet_threshold,
        nan_policy=args.nan,
        progress=not args.quiet,
    )
    t, h, w = dataset.window, dataset.height, dataset.width
    fields = {
        "valid_time": ((t,), np.int64),
        "bounds": ((4,), np.float64),
        "crop_offset": ((2,), np.int64),
        "event": ((), np.int64),
    }
    if dataset.nan_policy == "fill":
        fields["mask"] = ((t, h, w, 1), np.uint8)

    def items():
        for arrays in dataset.iter_sequences():
            if dataset.nan_policy != "fill":
                arrays.pop("mask")
            yield arrays

    metadata = dataset.metadata()
    write_sequences(
        args.out,
        items(),
        num_sequences=len(dataset),
        frame_shape=(t, h, w, 1),
        dtype=np.float32,
        metadata=metadata,
        fields=fields,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"wrote {len(dataset)} sequences of {t} frames of {h}x{w} pixels ({metadata['pixel_size_km']} km, every "
        f"{dataset.interval_minutes} min, mm/h) from {len(dataset.events)} event(s) of {source.name} to {args.out}"
    )
    return 0
