"""Output files that survive crashes and are shared safely.

Writes are atomic: a unique temporary file beside the target, flushed to disk (fsync), then a
rename, so a crash never leaves a half-written checkpoint, score file or result behind. Files
get the permissions the umask allows, as ``open`` would give them, so other users can read
results on shared storage. An output folder is locked while a run writes to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import DataPruneError, InvalidValue

LOCK = ".dataprune.lock"
_TEMPORARY_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, then move the temporary file over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent
        )
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except OSError as error:  # named by the file being written, not the hidden temporary one
        raise type(error)(error.errno, f"cannot write {path} ({error.strerror})") from error
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself reaches the disk
    finally:
        os.close(directory)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` atomically (loadable with ``weights_only=True`` if ``obj`` allows)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, payload: object) -> None:
    write_text(json.dumps(payload, indent=2), path)


def check_writable(folder: str | os.PathLike[str], flag: str) -> None:
    """Make ``folder`` if needed and check that files can be written into it (one clear line
    naming ``flag`` if not), before any work is spent on what would be written."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InvalidValue(f"{flag} {folder}: cannot write there ({exc.strerror or exc})") from exc


#: The name of a folder that ``dataprune prepare`` writes, then renames into place.
STAGING = re.compile(r"\..+\.[^./]+\.partial")


def is_staging(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in a staging folder of ``dataprune prepare``: unfinished, if its
    writer was killed."""
    return any(STAGING.fullmatch(part) for part in Path(path).resolve().parts)


class UnreadableFile(InvalidValue):
    """A file that is missing, empty, truncated or not what it should be; one line says why."""


def read_torch(path: Path, what: str) -> Any:
    """``torch.load`` of ``path`` (``weights_only=True``, on the CPU), or one clear error.

    ``what`` names the file in messages ("checkpoint", "score file").
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableFile(f"no {what} at {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise UnreadableFile(f"{what} {path} is {kind}, not a {what} file: remove or rename it")
    if path.stat().st_size == 0:
        raise UnreadableFile(f"{what} {path} is empty (an interrupted write?); delete it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or not a torch file: many error types
        text = str(exc).strip()
        first_line = text.splitlines()[0] if text else "no details"
        raise UnreadableFile(
            f"cannot read {what} {path} ({type(exc).__name__}: {first_line}); it is truncated "
            f"or not a dataprune {what}"
        ) from exc


class FolderInUse(DataPruneError):
    """Another process holds the output folder's lock."""


_held_locks: set[int] = set()  # the file descriptors of the locks this process holds


def _release_inherited_locks() -> None:
    # A forked child (a DataLoader worker) shares its parent's open files, and an flock belongs
    # to the open file: while an orphaned worker lived on after a kill -9, it kept the lock.
    # Closing the child's copies leaves the lock to the parent alone, so it dies with it.
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_release_inherited_locks)


@contextmanager
def _lock(path: Path, target: str | os.PathLike[str], flag: str) -> Iterator[int]:
    """Hold an exclusive ``flock`` on the file ``path`` (made if needed), writing this process's
    id into it; refuse, naming ``flag`` and ``target``, if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by exec (O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            raise FolderInUse(
                f"{flag} {target} is in use by another dataprune run ({holder}); wait for it to "
                f"finish or choose another {flag}"
            ) from None
        _held_locks.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield fd
    finally:
        _held_locks.discard(fd)
        os.close(fd)


@contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs; refuse if another process holds it.

    The lock is an ``fcntl.flock`` on ``folder/.dataprune.lock``, released by the kernel when
    the process dies (the processes it forks, such as DataLoader workers, do not hold it), so a
    crash never leaves a stale lock. Holding it, temporary files that an earlier, killed writer
    left behind are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder / LOCK, folder, "--out"):
        for stale in folder.glob(f".*{_TEMPORARY_SUFFIX}"):
            stale.unlink(missing_ok=True)
        yield


@contextmanager
def locked_output(out: Path, flag: str = "--out") -> Iterator[None]:
    """Hold the lock of ``out``, an output that is written elsewhere and renamed into place
    (so it cannot hold its own lock): ``.<name>.lock`` beside it, removed on release.

    Refuses, as :func:`locked_folder` does, if another process holds it.
    """
    path = out.parent / f".{out.name}.lock"
    while True:
        with _lock(path, out, flag) as fd:
            try:
                linked = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                linked = False
            if linked:
                try:
                    yield
                finally:
                    path.unlink(missing_ok=True)
                return
        # the holder removed the file between our open and our lock: lock the one there now
