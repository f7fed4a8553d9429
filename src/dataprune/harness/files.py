"""Output files that survive crashes and are shared safely.

Writes are atomic: a unique temporary file beside the target, flushed to disk (fsync), then a
rename, so a crash never leaves a half-written checkpoint, score file or result behind. Files
get the permissions the umask allows, as ``open`` would give them, so other users can read
results on shared storage. An output folder is locked while a run writes to it.
"""

from __future__ import annotations

import fcntl
import json
import os
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


class UnreadableFile(InvalidValue):
    """A file that is missing, empty, truncated or not what it should be; one line says why."""


def read_torch(path: Path, what: str) -> Any:
    """``torch.load`` of ``path`` (``weights_only=True``, on the CPU), or one clear error.

    ``what`` names the file in messages ("checkpoint", "score file").
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"no {what} at {path}")
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


@contextmanager
def locked_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs; refuse if another process holds it.

    The lock is an ``fcntl.flock`` on ``folder/.dataprune.lock``, released by the kernel if the
    process dies, so a crash never leaves a stale lock. Holding it, temporary files that an
    earlier, killed writer left behind are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUse(
                f"--out {folder} is in use by another dataprune run ({holder}); wait for it to "
                "finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        for stale in folder.glob(f".*{_TEMPORARY_SUFFIX}"):
            stale.unlink(missing_ok=True)
        yield
