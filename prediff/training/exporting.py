"""Publishing a trainer's result in its output folder: written into a hidden temporary folder next to it, given
the permissions of a plain `mkdir`, then moved into place, so that a reader never finds half an export and a
failed export leaves the previous one intact."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.utils import give_plain_permissions
from .utils import EXPORT_PREFIX, move_into

__all__ = ["export_into"]


def export_into(output_dir: Path, write: Callable[[Path], Any]) -> Any:
    """Call `write(folder)` on an empty temporary folder inside `output_dir`, then publish what it wrote in
    `output_dir`; returns what `write` returned. On any error the temporary folder is removed and the error
    raised."""
    tmp = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX, suffix=".tmp", dir=output_dir))
    try:
        saved = write(tmp)
        give_plain_permissions(tmp)
        move_into(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return saved
