"""What every training loop shares besides checkpoints: reproducible data order and random draws, and throughput
measurement."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ShardedBatchSampler", "Throughput", "micro_step_seed"]


# ---------------------------------------------------------------------------------------------- data order


def micro_step_seed(seed: int, rank: int, micro_step: int) -> int:
    """A 63-bit seed for every (run seed, process, micro-batch): every random draw of a micro-batch (noise,
    timesteps, dropout, augmentation) is a function of these three, so a resumed run repeats them exactly
    and every process draws differently."""
    state = np.random.SeedSequence([seed, rank, micro_step]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class ShardedBatchSampler(Sampler[list[int]]):
    """Endless batches of item indices for one process, a pure function of (seed, epoch, position).

    Every epoch is a permutation of the items drawn from `seed` and the epoch number; it is cut into global
    batches of `batch_size * num_replicas` items (an incomplete last batch is dropped) and process `rank`
    takes its `batch_size` slice of each. Starting at `start_batch` (a global micro-batch count) resumes
    exactly where an uninterrupted run would be, without reading the skipped data.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        start_batch: int = 0,
    ) -> None:
        global_batch = batch_size * num_replicas
        if num_items < global_batch:
            raise ValueError(
                f"the training split has {num_items} items, fewer than one global batch of "
                f"train_batch_size * num_processes = {batch_size} * {num_replicas} = {global_batch}; "
                f"use more data (e.g. data.num_sequences) or a smaller train_batch_size"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.num_items, self.batch_size = num_items, batch_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.start_batch = start_batch
        self.batches_per_epoch = num_items // global_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        return torch.randperm(self.num_items, generator=generator)

    def position(self, batch: int) -> tuple[int, int]:
        """(epoch, batch inside the epoch) of global micro-batch number `batch`."""
        return divmod(batch, self.batches_per_epoch)

    def indices(self, batch: int) -> list[int]:
        """This process's item indices of global micro-batch number `batch`."""
        epoch, inner = self.position(batch)
        start = (inner * self.num_replicas + self.rank) * self.batch_size
        return self.epoch_order(epoch)[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        epoch, order = -1, None
        while True:
            e, inner = self.position(batch)
            if e != epoch:
                epoch, order = e, self.epoch_order(e)
            start = (inner * self.num_replicas + self.rank) * self.batch_size
            yield order[start : start + self.batch_size].tolist()
            batch += 1


# ---------------------------------------------------------------------------------------------- speed


class Throughput:
    """Samples per second over a sliding window of recent steps (the first step, which compiles and warms
    caches, is left out)."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.times: list[float] = []
        self.samples: list[int] = []

    def update(self, samples: int) -> None:
        self.times.append(time.perf_counter())
        self.samples.append(samples)
        if len(self.times) > self.window + 1:
            self.times.pop(0)
            self.samples.pop(0)

    @property
    def value(self) -> float:
        if len(self.times) < 2:
            return float("nan")
        return sum(self.samples[1:]) / max(self.times[-1] - self.times[0], 1e-9)
