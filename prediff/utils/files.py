"""Files and folders that prediff writes: atomic output, publishing a finished folder, durable flushes, plain
permissions, outputs that never overwrite inputs, and the error for a file that cannot be read.

Data sets, pipelines, checkpoints, exports, forecasts, reports and pictures are all written the same way, so
that a reader never finds half an output and a crash never loses the previous one; one implementation here keeps
them from drifting apart. [`exclusive_lock`] keeps two runs from writing the same output at once. Nothing here
imports torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

from .faults import fault_point

__all__ = [
    "aside_folder",
    "atomic_output",
    "OutputLockedError",
    "check_outputs_spare_inputs",
    "exclusive_lock",
    "file_read_error",
    "fsync_tree",
    "give_plain_permissions",
    "lock_file",
    "move_aside",
    "move_into",
    "plain_permissions_for_writes",
]


def file_read_error(path: str | os.PathLike, file_format: str, error: BaseException) -> ValueError:
    """The error for a file that exists but cannot be read as ``file_format``: names the file, the format and
    the reader's own reason (h5py, netCDF, numpy and safetensors messages alone often name neither), of which
    only the first line is kept (xarray appends installation links)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"cannot read {os.fspath(path)} as {file_format}: {reason}")


# ---------------------------------------------------------------------------------------------- permissions


def give_plain_permissions(path: str | os.PathLike) -> None:
    """Give ``path``, and everything below it if it is a folder, the permissions a plain ``open()`` /
    ``mkdir()`` would under the current umask (``0o666`` / ``0o777`` minus the umask).

    ``tempfile`` and safetensors create owner-only (0600 / 0700) entries, which would hide shared outputs
    (pipelines, checkpoints, forecasts) from the rest of a group.
    """
    root = Path(path)
    _chmod_plain((root, *root.rglob("*")) if root.is_dir() else (root,))


@contextlib.contextmanager
def plain_permissions_for_writes(folder: str | os.PathLike) -> Iterator[None]:
    """Let the block write into ``folder``; then give the entries it created or rewrote there the permissions
    of a plain ``open()`` / ``mkdir()`` (see [`give_plain_permissions`]).

    Everything else keeps its permissions: ``folder`` itself when it existed, and whatever already lay in it
    and was not rewritten (a private key, an executable script, ``.git/hooks``).
    """
    root = Path(folder)
    existed = root.is_dir()
    before = {entry: _identity(entry) for entry in root.rglob("*")} if existed else {}
    yield
    written = [entry for entry in root.rglob("*") if before.get(entry) != _identity(entry)]
    _chmod_plain(written if existed else [root, *written])


def _identity(entry: Path) -> tuple[int, int, int]:
    """What changes when a writer replaces or rewrites ``entry``: inode, size and modification time."""
    stat = entry.lstat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _chmod_plain(entries: Iterable[Path]) -> None:
    # The umask can only be read by setting it: a strict one for that instant (what other threads create
    # meanwhile is owner-only, never too open), then the old one again.
    umask = os.umask(0o077)
    os.umask(umask)
    for entry in entries:
        if not entry.is_symlink():
            os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~umask)


# ---------------------------------------------------------------------------------------------- durability


def fsync_tree(path: str | os.PathLike, recursive: bool = True) -> None:
    """Flush ``path`` and, for a folder unless ``recursive`` is False, everything below it to the disk
    (``os.fsync``), so that a rename that publishes it never points at data still in the page cache when the
    power fails. A folder's own flush makes the renames of its entries durable."""
    root = Path(path)
    below = root.rglob("*") if root.is_dir() and recursive else ()
    # Children first: a folder is flushed once all it holds is.
    for entry in sorted((root, *below), reverse=True):
        if entry.is_symlink():
            continue
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------- outputs


def check_outputs_spare_inputs(
    outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike]
) -> None:
    """Refuse an output that is one of the inputs or lies inside an input folder.

    ``outputs`` and ``inputs`` map what the messages call them (an option such as ``--out``, or a label) to
    paths. Paths are compared resolved (symbolic links followed, ``~`` expanded) and, when both exist, as files
    (hard links), so that ``--overwrite`` can never replace what a command reads.

    Raises:
        ValueError: naming the output, the input and both paths.
    """
    resolved_inputs = {label: Path(path).expanduser().resolve() for label, path in inputs.items()}
    for out_label, out in outputs.items():
        target = Path(out).expanduser()
        resolved = target.resolve()
        for in_label, source in resolved_inputs.items():
            same = resolved == source or (target.exists() and source.exists() and os.path.samefile(target, source))
            if same or source in resolved.parents:
                relation = "is" if same else "lies inside"
                raise ValueError(
                    f"{out_label} {os.fspath(out)} {relation} {in_label} {os.fspath(inputs[in_label])}; "
                    "an output must never replace or write into what is read"
                )


def move_aside(targets: Iterable[Path], folder: Path, prefix: str, aside: Path | None = None) -> Path:
    """Rename every existing path of ``targets`` (by its name) into one new hidden folder ``{prefix}*.old`` in
    ``folder`` (or into ``aside``, created if needed) and return that folder, for the caller to delete once the
    new entries are in place.

    ``os.replace`` cannot replace a non-empty folder, and a publication of several entries must not leave a
    mix of old and new ones: what is replaced is first moved out of the way, by renames on the same file
    system (no copies), into a folder whose name says it may be removed (a run killed meanwhile leaves it for
    the next run to clean up).
    """
    if aside is None:
        aside = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=folder))
    else:
        aside.mkdir(exist_ok=True)
    for target in targets:
        if target.exists() or target.is_symlink():
            os.replace(target, aside / target.name)
    return aside


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, overwrite: bool = False, directory: bool = False, make_parents: bool = True
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place with ``os.replace``.

    Readers never see a half-written file: the result appears at ``path`` only once it is complete, and a
    failure leaves any previous file untouched. ``directory=True`` is for outputs that are folders (zarr
    stores, checkpoints); a folder it replaces is moved aside first (see [`move_aside`]). The result, and all a
    folder holds, gets the permissions a plain ``open()`` / ``mkdir()`` would give it under the current umask
    (see [`give_plain_permissions`]), not the owner-only ones of ``tempfile``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the folder of ``path`` does not exist and ``make_parents`` is False (for outputs
            that are never the first thing in their folder, where a missing one is a mistyped path).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    elif not target.parent.is_dir():
        raise FileNotFoundError(f"folder {str(target.parent)!r} for {target.name!r} does not exist")
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        give_plain_permissions(tmp)
        if target.is_dir() and not target.is_symlink():
            aside = move_aside([target], target.parent, f".{target.name}.")
            os.replace(tmp, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def aside_folder(src: Path, dst: Path) -> Path:
    """Where [`move_into`] moves what ``src`` replaces in ``dst``: ``dst/NAME.old`` for ``src`` = ``NAME.tmp``
    (``src.name + ".old"`` otherwise). Named after ``src`` so that a publication interrupted by a kill can be
    recognised, and finished, by the next run (the pair ``NAME.tmp`` + ``NAME.old``)."""
    stem = src.name[: -len(".tmp")] if src.name.endswith(".tmp") else src.name
    return dst / f"{stem}.old"


def move_into(src: Path, dst: Path, aside_prefix: str, last: Collection[str] = ()) -> None:
    """Publish the finished folder ``src`` (made next to ``dst``, on the same file system) in ``dst``, then
    remove it.

    ``src`` is flushed to the disk first. What its entries replace is moved aside into one
    ``{aside_prefix}*.old`` folder in ``dst`` ([`aside_folder`]; see [`move_aside`]), the entries named in
    ``last`` first, then every entry of ``src`` is renamed into ``dst``, those of ``last`` at the end: with the
    configuration files of a saved pipeline as ``last`` (``model_index.json``, ``config.json``), a reader finds
    either none or the new ones with the new weights, never a mix of two exports. The old entries are deleted at
    the end.

    Calling it again on the same ``src`` after a kill part-way finishes the publication: the entries still in
    ``src`` are the ones not published yet, and what they replace is either still in ``dst`` (moved aside now)
    or already in the aside folder.
    """
    if not aside_folder(src, dst).name.startswith(aside_prefix):
        raise ValueError(f"{src.name!r} must start with {aside_prefix!r}, the prefix of its leftovers")
    fsync_tree(src)
    dst.mkdir(parents=True, exist_ok=True)
    entries = sorted(src.iterdir(), key=lambda p: (p.name in last, p.name))
    aside = move_aside([dst / entry.name for entry in reversed(entries)], dst, aside_prefix, aside_folder(src, dst))
    for i, entry in enumerate(entries):
        os.replace(entry, dst / entry.name)
        if i == 0:
            fault_point("publish")
    fsync_tree(dst, recursive=False)
    shutil.rmtree(aside)
    src.rmdir()


# ---------------------------------------------------------------------------------------------- locks


class OutputLockedError(OSError):
    """Another process holds the lock of an output ([`exclusive_lock`])."""


def lock_file(path: str | os.PathLike) -> Path:
    """The hidden lock file of output ``path``: ``.{name}.lock`` next to it."""
    target = Path(path)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, label: str = "the output") -> Iterator[Path]:
    """Hold the exclusive lock of output ``path`` for the block, or refuse at once if another process holds it.

    The lock is an advisory ``flock`` on the hidden file [`lock_file`] next to ``path`` (whose folder must
    exist), holding the process id of its holder. The kernel releases it when the process ends however it
    ends, so a run killed with SIGKILL never blocks the next one; the file itself is deleted when the block
    ends, on success or error (a killed run leaves it behind, unlocked, for the next one to reuse).

    Args:
        path: the output (file or folder) the block writes.
        label: how the error names it (``"--out"``).

    Yields:
        The lock file.

    Raises:
        OutputLockedError: another process holds the lock; the message names the output, the other process
            and the lock file.
    """
    import fcntl

    lock = lock_file(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise OutputLockedError(
                f"{label} {os.fspath(path)} is being written by {who} (it holds {lock}); wait for it to finish or "
                "choose another output"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder deletes the file before it unlocks it: a lock taken on the file it opened just
        # before is a lock on a file nobody else will open again. Only a lock on the file at `lock` counts.
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield lock
    finally:
        # Deleted while still held (see above), then unlocked by closing it.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
