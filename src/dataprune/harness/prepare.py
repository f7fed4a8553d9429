"""``dataprune prepare``: a harness dataset written to disk, as the harness's ``--data-path`` reads.

Each format gets its own data folder, ``OUT/<format>/`` with ``train/``, ``test/`` and
``dataprune.json`` (class names, image shape, counts, the training split's pixel mean/std and
the dataset's augmentation), so a run from disk normalises and augments exactly as a run from
memory does. The writers are :mod:`dataprune.formats.prepare`'s.

Output is atomic: everything is written into a hidden folder beside ``OUT``
(``.OUT.<random>.partial``), which is renamed to ``OUT`` once complete; an error or a signal
removes it, so ``OUT`` is never half-written. Only a killed process can leave the hidden folder
behind: the next ``prepare`` into ``OUT`` removes it, and ``--data-path`` refuses to read one.
An existing ``OUT`` is replaced only with ``overwrite``. ``OUT`` is locked while it is written
(a second ``prepare`` into it is refused), and checked to be writable before any data is loaded.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .._validation import check_int
from ..errors import InvalidValue
from ..formats import FORMATS
from ..formats.images import SHARD_BYTES
from ..formats.prepare import class_folder_names, pixels, prepare, write_metadata
from .data import ImageData, load_dataset
from .files import current_umask, locked_output


def prepare_dataset(
    dataset: str,
    out: str | os.PathLike[str],
    formats: Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    shard_bytes: int = SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``dataset`` (a harness dataset name) into ``out/<format>`` for each of ``formats``.

    ``data_dir``, ``train_limit`` and ``test_limit`` choose the data as ``dataprune train``'s
    flags do (missing files are downloaded). Returns ``{format: data folder}``.
    """
    out = Path(out).expanduser()
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InvalidValue(
            f"formats={','.join(formats)!r}: {'no format given' if not formats else 'unknown'}; "
            f"choose from: {', '.join(FORMATS)}"
        )
    check_int("shard_bytes", shard_bytes, low=1)
    check_target(out)
    with locked_output(out):
        for stale in (*_staging(out, "partial"), *_staging(out, "old")):  # left by a kill
            shutil.rmtree(stale, ignore_errors=True)
        if out.exists() and not overwrite:
            raise InvalidValue(f"out={str(out)!r} exists: pass overwrite to replace it")
        data = load_dataset(dataset, data_dir, train_limit=train_limit, test_limit=test_limit)
        _write(data, out, formats, shard_bytes, progress)
    return {name: out / name for name in formats}


def _staging(out: Path, kind: str) -> list[Path]:
    """The hidden folders beside ``out`` that a prepare into it writes (``partial``) or moves
    an old ``out`` into (``old``): see the module docstring. (Not those of ``out.x``, whose
    names also begin with ``.out.``: the random part holds no dot.)"""
    name = re.compile(rf"\.{re.escape(out.name)}\.[^.]+\.{kind}")
    return [p for p in out.parent.iterdir() if name.fullmatch(p.name) and p.is_dir()]


def check_target(out: Path) -> None:
    """Refuse, before any work, an ``out`` that replacing would take the working directory
    with it, or one that cannot be written."""
    where = out.resolve()
    cwd = Path.cwd().resolve()
    if not out.name or where == cwd or where in cwd.parents:
        raise InvalidValue(
            f"out={str(out)!r} is the working directory or holds it, which replacing it would "
            "remove: give a new folder's name, such as data/fashion"
        )
    existing = next(p for p in (where.parent, *where.parent.parents) if p.exists())
    if not existing.is_dir():
        raise InvalidValue(
            f"out={str(out)!r} cannot be written: {existing} is a file, not a folder"
        )
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=where.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InvalidValue(
            f"out={str(out)!r} cannot be written: {where.parent} is not a writable folder "
            f"({error.strerror or error})"
        ) from error


def _write(data: ImageData, out: Path, formats: Sequence[str], shard_bytes: int, progress: bool):
    """Write ``data`` into a staging folder beside ``out``, then move it to ``out``."""
    classes = class_folder_names(data.num_classes)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for split, x, y in (
            ("train", data.train_x, data.train_y),
            ("test", data.test_x, data.test_y),
        ):
            prepare(
                staging,
                pixels(x, data.mean, data.std),
                y.numpy(),
                formats,
                class_names=classes,
                shard_bytes=shard_bytes,
                progress=progress,
                split=split,
            )
        for name in formats:
            write_metadata(
                staging / name,
                data_format=name,
                dataset=data.name,
                classes=classes,
                shape=data.train_x.shape[1:],
                splits={"train": data.num_train, "test": data.num_test},
                mean=data.mean,
                std=data.std,
                augment=data.augment,
            )
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``; an old ``out`` goes only once it is in place."""
    if not out.exists():
        os.rename(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(new, out)
    shutil.rmtree(old)
