"""Refusing, before anything is allocated, what would not fit in this machine's memory.

Sizes come from places a user or a file controls (a header, a configuration, a member count): allocating first
would fill the memory, swap or get the process killed without a word. Every such check, for files, networks and
forecasts, says the same thing in the same units, from here. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_fits_in_memory", "check_memory", "format_bytes", "physical_memory_bytes"]


def physical_memory_bytes() -> int | None:
    """The machine's physical memory in bytes (None where the system does not tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(num_bytes: float) -> str:
    """A byte count for people: ``1.5e9`` -> ``"1.4 GiB"``, ``4e19`` -> ``"34.7 EiB"``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = 0
    while num_bytes >= 1024 and power < len(units) - 1:
        num_bytes /= 1024
        power += 1
    return f"{num_bytes:.0f} bytes" if power == 0 else f"{num_bytes:.1f} {units[power]}"


def check_memory(what: str, num_bytes: float) -> None:
    """Refuse, before allocating anything, what would need more than the machine's physical memory.

    Args:
        what: the thing and the sizes that make it, e.g. ``"num_ensemble_members=1000000000 ... frames"``.
        num_bytes: the memory it needs at least.

    Raises:
        ValueError: naming ``what``, the memory it needs and the memory the machine has.
    """
    limit = physical_memory_bytes()
    if limit is not None and num_bytes > limit:
        raise ValueError(
            f"{what} would need {format_bytes(num_bytes)} of memory, more than this machine's {format_bytes(limit)}"
        )


def check_fits_in_memory(where: str, shape: Sequence[int], dtype: Any) -> None:
    """Refuse to read ``shape`` values of ``dtype`` at once when they need more than this machine's memory.

    The shape comes from a file's metadata, checked before anything is allocated: a header of a few bytes can
    claim terabytes, which numpy or h5py would otherwise allocate (and fill) before any other check.

    Raises:
        ValueError: naming ``where`` (file and array), the shape, the dtype and the memory needed.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    check_memory(f"{where}: reading {shape} {dtype} values at once", math.prod(shape) * dtype.itemsize)
