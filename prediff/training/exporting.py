"""Publishing a trainer's result in its output folder: written into a hidden temporary folder next to it, given
the permissions of a plain `mkdir`, then moved into place, so that a reader never finds half an export and a
failed export leaves the previous one intact.

The output folder also holds the checkpoints, so the export cannot be one rename: its entries are renamed in one
by one, the configuration files last ([`~prediff.utils.files.move_into`]). A kill while they move leaves no
`model_index.json` (no pipeline, never a mix of two); the next run finishes that publication before anything
else ([`finish_interrupted_exports`]), so the folder again holds a complete export.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..utils.faults import fault_point
from ..utils.files import aside_folder, give_plain_permissions, move_into

__all__ = ["EXPORT_LAST", "EXPORT_PREFIX", "export_into", "finish_interrupted_exports"]

#: Hidden folders of an export in progress (`.export.*.tmp`) and of the export it replaces (`.export.*.old`);
#: a run killed meanwhile leaves them for the next run to remove ([`remove_stale_temporaries`]).
EXPORT_PREFIX = ".export."
#: The files an export publishes last (see [`~prediff.utils.files.move_into`]): a reader finds either none or
#: the new configuration with the new weights, never a mix of two exports.
EXPORT_LAST = ("model_index.json", "config.json")


def export_into(output_dir: Path, write: Callable[[Path], Any]) -> Any:
    """Call `write(folder)` on an empty temporary folder inside `output_dir`, then publish what it wrote in
    `output_dir` ([`~prediff.utils.files.move_into`]: what it replaces is moved aside into an `.export.*.old`
    folder, the `EXPORT_LAST` files are renamed into place last); returns what `write` returned. An error before
    the publication begins removes the temporary folder; one during it leaves the publication for the next run
    to finish ([`finish_interrupted_exports`]); the error is raised."""
    tmp = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX, suffix=".tmp", dir=output_dir))
    try:
        saved = write(tmp)
        give_plain_permissions(tmp)
        fault_point("export")
        move_into(tmp, output_dir, EXPORT_PREFIX, last=EXPORT_LAST)
    except BaseException:
        # Once entries are moved aside the publication is finished by the next run, not undone here.
        if not aside_folder(tmp, output_dir).is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return saved


def finish_interrupted_exports(output_dir: Path) -> list[Path]:
    """Finish the publications a kill interrupted in `output_dir`; returns the temporary folders it published.

    A publication has begun once the folder of what it replaces (`.export.NAME.old`, see
    [`~prediff.utils.files.aside_folder`]) exists next to its finished, flushed temporary folder
    (`.export.NAME.tmp`): its remaining entries are moved into place, so `output_dir` holds the new complete
    export. A temporary folder without that partner was still being written and is left for
    [`~prediff.training.checkpointing.remove_stale_temporaries`] to delete.
    """
    finished = []
    for tmp in sorted(output_dir.glob(f"{EXPORT_PREFIX}*.tmp")):
        if tmp.is_dir() and not tmp.is_symlink() and aside_folder(tmp, output_dir).is_dir():
            move_into(tmp, output_dir, EXPORT_PREFIX, last=EXPORT_LAST)
            finished.append(tmp)
    return finished
