"""Forecasting over the processes `accelerate launch` started, with ensembles that do not depend on how the
sequences are split into batches or across processes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from accelerate import PartialState

__all__ = ["launched_processes", "member_generators"]


def member_generators(seed: int, sample_ids: Iterable[int], members: int) -> list[torch.Generator]:
    """One `torch.Generator` per (sample, member), ordered as the pipeline's rows (sample, then member).

    Each is seeded from `(seed, sample_id, member)` alone, so a forecast does not depend on which other
    samples share its batch: evaluating in batches of 1 or of 16 gives the same ensembles.
    """
    import torch

    generators = []
    for sample in sample_ids:
        for member in range(members):
            state = np.random.SeedSequence([int(seed), int(sample), member]).generate_state(2, dtype=np.uint32)
            generators.append(torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1))
    return generators


def launched_processes() -> PartialState:
    """The `accelerate.PartialState` of the processes `accelerate launch` started (a single process when run
    plainly), with every process a CPU rank of a gloo group under `ACCELERATE_USE_CPU=true`, as in
    `accelerate.Accelerator`."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
