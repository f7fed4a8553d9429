"""Where each dataset's files live, how to download them, and how to check them.

Lookup order (see :func:`resolve_data_dir`): ``--data-dir`` / ``data_dir``, then
``$DATAPRUNE_DATA_DIR``, then a ``../shared/data`` folder beside the working directory or the
repository, then ``~/.cache/dataprune``, where missing files are downloaded. Every download is
checked against its published sha256, and :func:`verify_dataset` rechecks files on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import InvalidValue
from .formats import DATASETS, DatasetError, required_files

ENV_DATA_DIR = "DATAPRUNE_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 30.0
#: Written beside files unpacked from a verified archive: their sha256, for ``--verify``.
MANIFEST = "SHA256SUMS"

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_FOLDERS = {
    "fashion-mnist": ("fashion-mnist",),
    "mnist": ("mnist",),
    "cifar10": (_CIFAR10_DIR, f"cifar10-subset/{_CIFAR10_DIR}"),
    "cifar100": (_CIFAR100_DIR,),
}


def _repo_root() -> Path:
    # src/dataprune/harness/data/locate.py -> parents[4] is the repository root.
    return Path(__file__).resolve().parents[4]


def default_cache_dir() -> Path:
    """The download location used when no data directory was chosen: ``~/.cache/dataprune``."""
    return Path.home() / ".cache" / "dataprune"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Pick the data root.

    Order: the explicit ``data_dir`` (CLI ``--data-dir``), then ``$DATAPRUNE_DATA_DIR``, then
    ``../shared/data`` relative to the current working directory if it exists, then
    ``../shared/data`` relative to the repository root if it exists, else ``~/.cache/dataprune``
    (where downloads go).
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    for candidate in (
        Path.cwd() / ".." / "shared" / "data",
        _repo_root() / ".." / "shared" / "data",
    ):
        if candidate.is_dir():
            return candidate.resolve()
    return default_cache_dir()


def explicit_dir(data_dir: str | os.PathLike[str] | None) -> bool:
    """Whether the user chose the data directory (then nothing else is searched)."""
    return (data_dir is not None and str(data_dir) != "") or bool(os.environ.get(ENV_DATA_DIR))


def candidate_dirs(name: str, root: Path) -> list[Path]:
    """The folders under ``root`` that may hold dataset ``name``, in lookup order."""
    return [root / folder for folder in _FOLDERS.get(name, ())]


def find_dataset(name: str, roots: Sequence[Path]) -> Path | None:
    """The first candidate folder holding all files of ``name``, or None."""
    for root in roots:
        for folder in candidate_dirs(name, root):
            if all((folder / f).is_file() for f in required_files(name)):
                return folder
    return None


def locate(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    """The folder holding dataset ``name``'s files, downloading them if allowed and missing."""
    try:
        return _locate(name, data_dir, download)
    except OSError as exc:  # a --data-dir that is a file, unwritable, on a bad mount...
        where = f"--data-dir {data_dir}" if explicit_dir(data_dir) else "the data folder"
        raise DatasetError(
            f"{name}: cannot use {where} ({exc.strerror or exc}: {exc.filename or ''})"
        ) from exc


def _locate(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    root = resolve_data_dir(data_dir)
    roots = [root]
    if not explicit_dir(data_dir) and root != default_cache_dir():
        roots.append(default_cache_dir())
    found = find_dataset(name, roots)
    if found is not None:
        return found
    if not download:
        looked = ", ".join(str(p) for r in roots for p in candidate_dirs(name, r))
        raise DatasetError(
            f"{name}: files not found; looked in {looked}. Put the files there, pass "
            f"--data-dir / set {ENV_DATA_DIR}, or allow downloading"
        )
    target = root if explicit_dir(data_dir) else default_cache_dir()
    download_dataset(name, target)
    found = find_dataset(name, [target])
    if found is None:
        raise DatasetError(f"{name}: downloaded into {target} but files are still missing")
    return found


# --------------------------------------------------------------------------------------------
# Downloading


@dataclass(frozen=True)
class Download:
    """One file to fetch: its mirrors (tried in order), published sha256 and local name."""

    urls: tuple[str, ...]
    sha256: str
    filename: str


# https where the host serves it; the sha256 check makes a plain-http fallback safe too.
_FMNIST_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _idx_downloads(mirrors: tuple[str, ...], sha256s: tuple[str, ...]) -> tuple[Download, ...]:
    files = required_files("mnist")  # the same four names for both IDX datasets
    return tuple(
        Download(tuple(m + f for m in mirrors), sha, f)
        for f, sha in zip(files, sha256s, strict=True)
    )


# In the order of the files: train images, train labels, test images, test labels.
_FMNIST_SHA256 = (
    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
)
_MNIST_SHA256 = (
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
)

#: Official sources per dataset, with the sha256 their publishers list (tests replace these).
DOWNLOADS: dict[str, tuple[Download, ...]] = {
    "fashion-mnist": _idx_downloads(_FMNIST_URLS, _FMNIST_SHA256),
    "mnist": _idx_downloads(_MNIST_URLS, _MNIST_SHA256),
    "cifar10": (
        Download(
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            "cifar-10-python.tar.gz",
        ),
    ),
    "cifar100": (
        Download(
            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
            "cifar-100-python.tar.gz",
        ),
    ),
}


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(item: Download, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``item`` to ``dest`` (a temporary file, then a rename), checking its sha256.

    Mirrors are tried in order; a mirror that fails or serves other bytes is skipped.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    problems = []
    for url in item.urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                    for chunk in iter(lambda r=r: r.read(1 << 20), b""):
                        out.write(chunk)
                        h.update(chunk)
            except urllib.error.HTTPError as e:
                problems.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                problems.append(f"{url}: {getattr(e, 'reason', None) or e}")
                continue
            if h.hexdigest() != item.sha256:
                problems.append(f"{url}: sha256 {h.hexdigest()}, expected {item.sha256}")
                continue
            os.replace(tmp, dest)
            return
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(
        f"could not download {item.filename} ({'; '.join(problems)}). If this machine is "
        f"offline, put the files in {dest.parent} or pass --data-dir / set {ENV_DATA_DIR}"
    )


def _safe_extract(archive: Path, root: Path) -> list[Path]:
    """Extract a tar archive into ``root``, refusing absolute paths, '..' and links; returns
    the files written."""
    written = []
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            p = Path(m.name)
            if p.is_absolute() or m.name.startswith(("/", "\\")) or ".." in p.parts:
                raise DatasetError(f"{archive}: refusing unsafe member path {m.name!r}")
            if not (m.isfile() or m.isdir()):
                raise DatasetError(f"{archive}: refusing non-regular member {m.name!r}")
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # a Python without extraction filters: the members were checked above
                tar.extractall(tmp, members=members)
            # Move the extracted files into place one by one (keeps existing files' siblings).
            for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
                dst = root / src.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                written.append(dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return written


def _write_manifest(folder: Path, files: Sequence[Path]) -> None:
    lines = [f"{sha256_of(f)}  {f.relative_to(folder)}" for f in sorted(files)]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")


def download_dataset(name: str, root: str | os.PathLike[str]) -> Path:
    """Download (and unpack) dataset ``name`` from its official source into ``root``.

    MNIST-style files go to ``root/<name>/``; CIFAR archives are sha256-checked, unpacked into
    ``root`` (``cifar-10-batches-py``/``cifar-100-python``, with a ``SHA256SUMS`` manifest of
    the unpacked files) and deleted. Files already present are kept. Returns the dataset
    folder. ``digits`` ships with scikit-learn: nothing to do. Raises :class:`DatasetError`
    if a download fails (e.g. offline) or a checksum is wrong.
    """
    if name not in DATASETS:
        raise InvalidValue(f"dataset={name!r} is not known; choose one of: {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    if name == "digits":
        return root
    if name in ("fashion-mnist", "mnist"):
        folder = root / name
        existed = folder.exists()
        try:
            for item in DOWNLOADS[name]:
                if not (folder / item.filename).is_file():
                    _fetch(item, folder / item.filename)
        except DatasetError:
            if not existed and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # a failed download leaves no empty folder behind
            raise
        return folder
    (item,) = DOWNLOADS[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / item.filename
    if not (archive.is_file() and sha256_of(archive) == item.sha256):
        _fetch(item, archive)
    folder = root / (_CIFAR10_DIR if name == "cifar10" else _CIFAR100_DIR)
    written = _safe_extract(archive, root)
    _write_manifest(folder, [f for f in written if f.parent == folder])
    archive.unlink(missing_ok=True)
    return folder


def verify_dataset(name: str, folder: Path) -> str:
    """Recheck the files of dataset ``name`` in ``folder``; return what was checked.

    Files with a published sha256 (the IDX files) are checked against it; files unpacked from
    a verified archive against the folder's ``SHA256SUMS`` manifest. A mismatch raises
    :class:`DatasetError`. Files with neither (a subset you made, say) are reported as not
    checked, which is not an error.
    """
    published = {item.filename: item.sha256 for item in DOWNLOADS.get(name, ())}
    manifest = folder / MANIFEST
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            digest, _, file = line.partition("  ")
            published[file] = digest
    checked, unchecked = [], []
    for file in required_files(name):
        expected = published.get(file)
        if expected is None:
            unchecked.append(file)
            continue
        actual = sha256_of(folder / file)
        if actual != expected:
            raise DatasetError(
                f"{folder / file}: sha256 {actual} differs from the expected {expected}; the "
                "file is damaged or not the official one: delete it to download it again"
            )
        checked.append(file)
    note = f"{name}: {len(checked)} file(s) in {folder} match their sha256"
    if unchecked:
        note += f"; {len(unchecked)} not checked (no published sha256 and no {MANIFEST})"
    return note


def file_checksums(name: str, folder: Path | None) -> dict[str, str]:
    """The sha256 of each of dataset ``name``'s files in ``folder`` (a run's identity)."""
    if folder is None:
        return {}
    return {file: sha256_of(folder / file) for file in required_files(name)}
