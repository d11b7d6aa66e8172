"""``prediff data ...``: generate the built-in data sets, inspect data files, write SEVIR-LR from SEVIR."""

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

    storms = kinds.add_parser("storms", help="synthetic radar storms (VIL, uint8 0-255)")
    _output_arguments(storms)
    storms.add_argument("--num-sequences", type=int, default=1000)
    storms.add_argument("--seq-len", type=int, default=13)
    storms.add_argument("--height", type=int, default=128)
    storms.add_argument("--width", type=int, default=128)
    storms.set_defaults(func=_generate_storms)

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
