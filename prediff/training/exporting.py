"""Publishing a trainer's result in its output folder: written into a hidden temporary folder next to it, given
the permissions of a plain `mkdir`, then moved into place, so that a reader never finds half an export and a
failed export leaves the previous one intact."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..utils.files import give_plain_permissions, move_into

__all__ = ["EXPORT_LAST", "EXPORT_PREFIX", "export_into"]

#: Hidden folders of an export in progress (`.export.*.tmp`) and of the export it replaces (`.export.*.old`);
#: a run killed meanwhile leaves them for the next run to remove ([`remove_stale_temporaries`]).
EXPORT_PREFIX = ".export."
#: The files an export publishes last (see [`~prediff.utils.files.move_into`]): a reader finds either none or
#: the new configuration with the new weights, never a mix of two exports.
EXPORT_LAST = ("model_index.json", "config.json")


def export_into(output_dir: Path, write: Callable[[Path], Any]) -> Any:
    """Call `write(folder)` on an empty temporary folder inside `output_dir`, then publish what it wrote in
    `output_dir` ([`~prediff.utils.files.move_into`]: what it replaces is moved aside into an `.export.*.old`
    folder, the `EXPORT_LAST` files are renamed into place last); returns what `write` returned. On any error
    the temporary folder is removed and the error raised."""
    tmp = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX, suffix=".tmp", dir=output_dir))
    try:
        saved = write(tmp)
        give_plain_permissions(tmp)
        move_into(tmp, output_dir, EXPORT_PREFIX, last=EXPORT_LAST)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return saved
