"""Generation speed of the synthetic storm data set (the embedded default data).

Generates ``--num-sequences`` sequences of ``--seq-len`` x ``--size`` x ``--size`` radar frames, in the
calling process and through a ``DataLoader`` with ``--workers`` worker processes, and prints a Markdown table
of sequences per second. The target is 1,000 sequences of 13 x 128 x 128 in under 30 s on 2 CPU cores.

    python benchmarks/bench_storms.py
    python benchmarks/bench_storms.py --num-sequences 200 --workers 4
"""

from __future__ import annotations

import argparse
import os
import time

from torch.utils.data import DataLoader

from prediff.data import SyntheticStormDataset


def run(dataset: SyntheticStormDataset, workers: int, batch_size: int) -> float:
    """Seconds to produce every item of ``dataset``."""
    start = time.perf_counter()
    if workers == 0:
        for i in range(len(dataset)):
            dataset[i]
    else:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        for _ in loader:
            pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-sequences", type=int, default=1000)
    parser.add_argument("--seq-len", type=int, default=13)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the second row")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    dataset = SyntheticStormDataset(args.num_sequences, args.seq_len, args.size, args.size, seed=0)
    dataset[0]  # warm-up (imports, first FFT plans)
    rows = [("in process", run(dataset, 0, args.batch_size))]
    if args.workers > 0:
        rows.append((f"DataLoader, {args.workers} workers", run(dataset, args.workers, args.batch_size)))

    shape = f"{args.seq_len}x{args.size}x{args.size}"
    print(f"SyntheticStormDataset: {args.num_sequences} sequences of {shape}, {os.cpu_count()} CPU cores")
    print()
    print("| mode | seconds | sequences/s | frames/s |")
    print("|---|---:|---:|---:|")
    for mode, seconds in rows:
        rate = args.num_sequences / seconds
        print(f"| {mode} | {seconds:.1f} | {rate:.1f} | {rate * args.seq_len:.0f} |")


if __name__ == "__main__":
    main()
