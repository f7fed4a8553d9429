"""Real image datasets held as tensors on the training device.

Every dataset is loaded once into memory as normalised float32 tensors (N x C x H x W, per-channel
mean/std taken from the training split) and moved to the training device. Batches are then cut
by indexing and augmented on the device with whole-batch tensor ops, so there is no DataLoader,
no worker process and no per-sample Python code in the training loop.

Where the files come from (see :func:`resolve_data_dir`): ``--data-dir`` / ``data_dir``, then
``$DATAPRUNE_DATA_DIR``, then a ``../shared/data`` folder next to the working directory or the
repository, then ``~/.cache/dataprune``, where missing files are downloaded from the official
mirrors (md5-checked).

Supported: ``digits`` (scikit-learn's bundled 8x8 digits, no files needed), ``fashion-mnist`` and
``mnist`` (original IDX ``.gz`` files), ``cifar10`` and ``cifar100`` (original pickled python
batches, read with a restricted unpickler that only rebuilds numpy arrays).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DOWNLOADS",
    "DatasetError",
    "Download",
    "ImageData",
    "default_cache_dir",
    "download_dataset",
    "load_dataset",
    "random_crop_flip",
    "random_flip",
    "resolve_data_dir",
]

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")
AUGMENTATIONS = ("none", "flip", "crop-flip")

ENV_DATA_DIR = "DATAPRUNE_DATA_DIR"
CROP_PADDING = 4
DOWNLOAD_TIMEOUT_S = 30.0

_DIGITS_TEST_SIZE = 360
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST = ("test_batch",)
_CIFAR100_DIR = "cifar-100-python"


class DatasetError(RuntimeError):
    """A dataset could not be found, downloaded, verified or parsed."""


# --------------------------------------------------------------------------------------------
# Where the data lives


def _repo_root() -> Path:
    # src/dataprune/harness/datasets.py -> parents[3] is the repository root.
    return Path(__file__).resolve().parents[3]


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


def _explicit_dir(data_dir: str | os.PathLike[str] | None) -> bool:
    return (data_dir is not None and str(data_dir) != "") or bool(os.environ.get(ENV_DATA_DIR))


# --------------------------------------------------------------------------------------------
# The in-memory dataset


@dataclass
class ImageData:
    """A labelled image dataset as tensors: ``train_x``/``test_x`` are float32 N x C x H x W.

    Pixels are normalised per channel with the mean/std of the (full) training split, kept in
    ``mean``/``std`` in raw pixel units. ``augment`` names the batch augmentation that
    :meth:`augment_batch` applies: ``"none"``, ``"flip"`` or ``"crop-flip"``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: str = "none"
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ValueError(
                f"augment={self.augment!r} is not known; choose one of: {', '.join(AUGMENTATIONS)}"
            )

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.test_x.shape[0])

    @property
    def in_channels(self) -> int:
        """Number of image channels (1 for greyscale, 3 for colour)."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Height (= width) of the images in pixels."""
        return int(self.train_x.shape[-1])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.train_x.device

    def to(self, device: str | torch.device) -> ImageData:
        """Return a copy with all tensors on ``device`` (``self`` if they already are)."""
        device = torch.device(device)
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y)
        if all(t.device == device for t in tensors):
            return self
        tx, ty, vx, vy = (t.to(device) for t in tensors)
        return ImageData(
            self.name, tx, ty, vx, vy, self.num_classes, self.augment, self.mean, self.std
        )

    def augment_batch(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch ``x`` (B x C x H x W) on its own device with whole-batch ops.

        ``"flip"``: each image is mirrored left-right with probability 1/2. ``"crop-flip"``:
        each image is padded by 4 pixels (reflect) and cropped back to H x W at a random integer
        offset in [-4, 4] per axis, then flipped with probability 1/2 (two gathers: every
        output pixel is an input pixel). ``"none"``: ``x`` is returned as is. Random numbers are
        drawn from ``generator`` on its own device (e.g. a CPU generator while ``x`` is on CUDA)
        and moved to ``x.device``; the result is deterministic for a given generator state.
        """
        if self.augment == "none" or x.shape[0] == 0:
            return x
        if self.augment == "flip":
            return random_flip(x, generator)
        return random_crop_flip(x, CROP_PADDING, generator)


def _draw_int(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` random ints in [0, high) drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of ``x`` (B x C x H x W) left-right with probability 1/2."""
    flip = _draw_int(2, x.shape[0], generator, x.device).bool()
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop_flip(
    x: Tensor, padding: int = CROP_PADDING, generator: torch.Generator | None = None
) -> Tensor:
    """Random ``padding``-pixel translation (reflect padding) plus a random horizontal flip.

    Offsets are drawn per sample (rows, columns, flip, in that order) and applied with two
    ``gather`` calls on the padded batch: exact integer shifts, no interpolation.
    """
    b, c, h, w = x.shape
    span = 2 * padding + 1
    dy = _draw_int(span, b, generator, x.device)
    dx = _draw_int(span, b, generator, x.device)
    flip = _draw_int(2, b, generator, x.device).bool()
    mode = "reflect" if padding < min(h, w) else "replicate"
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)
    rows = torch.arange(h, device=x.device).unsqueeze(0) + dy.unsqueeze(1)  # B x H
    cols = torch.arange(w, device=x.device).unsqueeze(0)
    cols = torch.where(flip.unsqueeze(1), (w - 1) - cols, cols) + dx.unsqueeze(1)  # B x W
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    train_limit: int | None = None,
    test_limit: int | None = None,
    device: str | torch.device = "cpu",
) -> ImageData:
    """Load dataset ``name`` (one of :data:`DATASETS`) as an :class:`ImageData` on ``device``.

    Files are looked up under :func:`resolve_data_dir` (and ``~/.cache/dataprune`` when no
    directory was chosen explicitly). Missing files are downloaded when ``download`` is true,
    into the chosen directory or else ``~/.cache/dataprune``; otherwise :class:`DatasetError`
    says where it looked. ``train_limit``/``test_limit`` keep only the first n samples of each
    split (normalisation statistics still come from the full training split).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; choose one of: {', '.join(DATASETS)}")
    for label, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and limit < 1:
            raise ValueError(f"{label} must be a positive number of samples, got {limit}")

    if name == "digits":
        raw = _load_digits()
    else:
        root = resolve_data_dir(data_dir)
        roots = [root]
        if not _explicit_dir(data_dir) and root != default_cache_dir():
            roots.append(default_cache_dir())
        found = _find_dataset(name, roots)
        if found is None:
            if not download:
                looked = ", ".join(str(p) for r in roots for p in _candidate_dirs(name, r))
                raise DatasetError(
                    f"{name}: files not found; looked in {looked}. Put the files there, pass "
                    f"--data-dir / set {ENV_DATA_DIR}, or allow downloading"
                )
            target = root if _explicit_dir(data_dir) else default_cache_dir()
            download_dataset(name, target)
            found = _find_dataset(name, [target])
            if found is None:  # pragma: no cover - download_dataset checks this
                raise DatasetError(f"{name}: downloaded into {target} but files are still missing")
        raw = _READERS[name](found)
    return _to_image_data(raw, train_limit, test_limit, torch.device(device))


@dataclass
class _Raw:
    """Decoded uint8 arrays (N x C x H x W) and int labels, before normalisation."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    augment: str


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of a uint8 N x C x H x W array (via 256-bin histograms)."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        channel = torch.from_numpy(np.ascontiguousarray(x[:, c])).reshape(-1)
        hist = torch.bincount(channel, minlength=256).double().numpy()  # much faster than numpy
        n = hist.sum()
        mean = float((hist * values).sum() / n)
        var = float((hist * (values - mean) ** 2).sum() / n)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def _to_image_data(
    raw: _Raw, train_limit: int | None, test_limit: int | None, device: torch.device
) -> ImageData:
    mean, std = _channel_stats(raw.train_x)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def images(a: np.ndarray, limit: int | None) -> Tensor:
        a = np.ascontiguousarray(a[:limit])
        # Move uint8 (4x smaller) to the device, convert and normalise there.
        return torch.from_numpy(a).to(device).to(torch.float32).sub_(m).div_(s)

    def labels(a: np.ndarray, limit: int | None) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[:limit], dtype=np.int64)).to(device)

    return ImageData(
        name=raw.name,
        train_x=images(raw.train_x, train_limit),
        train_y=labels(raw.train_y, train_limit),
        test_x=images(raw.test_x, test_limit),
        test_y=labels(raw.test_y, test_limit),
        num_classes=raw.num_classes,
        augment=raw.augment,
        mean=mean,
        std=std,
    )


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    if name in ("fashion-mnist", "mnist"):
        return [root / name]
    if name == "cifar10":
        return [root / _CIFAR10_DIR, root / "cifar10-subset" / _CIFAR10_DIR]
    if name == "cifar100":
        return [root / _CIFAR100_DIR]
    return []


def _required_files(name: str) -> tuple[str, ...]:
    if name in ("fashion-mnist", "mnist"):
        return tuple(_IDX_FILES.values())
    if name == "cifar10":
        return _CIFAR10_TRAIN + _CIFAR10_TEST
    if name == "cifar100":
        return ("train", "test")
    return ()


def _find_dataset(name: str, roots: Sequence[Path]) -> Path | None:
    """The first candidate directory holding all files of ``name``, or None."""
    for root in roots:
        for d in _candidate_dirs(name, root):
            if all((d / f).is_file() for f in _required_files(name)):
                return d
    return None


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images).round().astype(np.uint8)[:, None]  # N x 1 x 8 x 8, 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.RandomState(0).permutation(len(y))
    train, test = order[:-_DIGITS_TEST_SIZE], order[-_DIGITS_TEST_SIZE:]
    return _Raw("digits", x[train], y[train], x[test], y[test], 10, "none")


# ---- IDX (MNIST, Fashion-MNIST)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a (gzipped) IDX file of unsigned bytes, checking magic number and size."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable gzip file ({e})") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DatasetError(f"{path}: bad IDX magic number {found}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: IDX dims {dims} need {expected} bytes of data, file has {len(raw) - header}"
        )
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_dataset(name: str, folder: Path) -> _Raw:
    arrays = {}
    for key, fname in _IDX_FILES.items():
        magic = _IDX_IMAGES_MAGIC if key.endswith("images") else _IDX_LABELS_MAGIC
        arrays[key] = _read_idx(folder / fname, magic)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DatasetError(
                f"{folder / _IDX_FILES[f'{split}_labels']}: {len(y)} labels for {len(x)} images"
            )
        if y.size and y.max() >= 10:
            raise DatasetError(
                f"{folder / _IDX_FILES[f'{split}_labels']}: label {y.max()} out of range 0..9"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(f"{folder}: train and test images differ in size")
    augment = "flip" if name == "fashion-mnist" else "none"
    return _Raw(
        name,
        arrays["train_images"][:, None],
        arrays["train_labels"],
        arrays["test_images"][:, None],
        arrays["test_labels"],
        10,
        augment,
    )


# ---- CIFAR pickles


def _numpy_reconstruct():  # numpy >= 2 moved numpy.core to numpy._core
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _codecs_encode():
    import _codecs

    return _codecs.encode


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        factory = _SAFE_GLOBALS.get((module, name))
        if factory is None:
            raise DatasetError(
                f"refusing to unpickle {module}.{name} from {self._path}: only numpy arrays "
                "are allowed in dataset files"
            )
        return factory()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except DatasetError:
        raise
    except Exception as e:  # malformed pickles raise many kinds of errors
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, ...]:
    # Original (Python 2) files have bytes keys; files re-pickled by Python 3 have str keys.
    d = {k.encode() if isinstance(k, str) else k: v for k, v in _unpickle(path).items()}
    if b"data" not in d or label_key not in d:
        keys = ", ".join(repr(k) for k in d)
        raise DatasetError(f"{path}: missing b'data' or {label_key!r} (keys: {keys})")
    data, labels = d[b"data"], d[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: b'data' must be a uint8 (n, 3072) array")
    if data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' has shape {data.shape}, expected (n, 3072)")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{path}: {label_key!r} is not a list of integers") from e
    if len(y) != len(data):
        raise DatasetError(f"{path}: {len(y)} labels for {len(data)} images")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(f"{path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), y


def _load_cifar(
    name: str,
    folder: Path,
    train: Sequence[str],
    test: Sequence[str],
    label_key: bytes,
    num_classes: int,
) -> _Raw:
    def read(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_cifar_batch(folder / f, label_key, num_classes) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    tx, ty = read(train)
    vx, vy = read(test)
    return _Raw(name, tx, ty, vx, vy, num_classes, "crop-flip")


_READERS = {
    "fashion-mnist": lambda d: _load_idx_dataset("fashion-mnist", d),
    "mnist": lambda d: _load_idx_dataset("mnist", d),
    "cifar10": lambda d: _load_cifar("cifar10", d, _CIFAR10_TRAIN, _CIFAR10_TEST, b"labels", 10),
    "cifar100": lambda d: _load_cifar("cifar100", d, ("train",), ("test",), b"fine_labels", 100),
}


# --------------------------------------------------------------------------------------------
# Downloading


@dataclass(frozen=True)
class Download:
    """One file to fetch: its URL, md5 and local file name."""

    url: str
    md5: str
    filename: str


_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: Official sources per dataset (tests may monkeypatch these).
DOWNLOADS: dict[str, tuple[Download, ...]] = {
    "fashion-mnist": tuple(
        Download(_FMNIST_URL + f, md5, f)
        for f, md5 in (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        )
    ),
    "mnist": tuple(
        Download(_MNIST_URL + f, md5, f)
        for f, md5 in (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        )
    ),
    "cifar10": (
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            "cifar-10-python.tar.gz",
        ),
    ),
    "cifar100": (
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            "cifar-100-python.tar.gz",
        ),
    ),
}


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(item: Download, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``item`` to ``dest`` via a temp file + atomic rename, verifying its md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(item.url, timeout=timeout) as r:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    out.write(chunk)
                    h.update(chunk)
        except urllib.error.HTTPError as e:
            raise DatasetError(f"could not download {item.url} (HTTP {e.code} {e.reason})") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", None) or e
            raise DatasetError(
                f"could not download {item.url} ({reason}); you seem to be offline. Put the "
                f"files in {dest.parent} or pass --data-dir / set {ENV_DATA_DIR}"
            ) from e
        if h.hexdigest() != item.md5:
            raise DatasetError(
                f"downloaded {item.url} but its md5 is {h.hexdigest()}, expected {item.md5}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _safe_extract(archive: Path, root: Path) -> None:
    """Extract a tar archive into ``root``, refusing absolute paths, '..' and links."""
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
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(tmp, members=members)  # members checked above
            # Move the extracted files into place one by one (keeps existing files' siblings).
            for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
                dst = root / src.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(name: str, root: str | os.PathLike[str]) -> Path:
    """Download (and unpack) dataset ``name`` from its official source into ``root``.

    MNIST-style files go to ``root/<name>/``; CIFAR archives are md5-checked, unpacked into
    ``root`` (``cifar-10-batches-py``/``cifar-100-python``) and deleted. Files already present
    are kept. Returns the dataset directory. ``digits`` ships with scikit-learn: nothing to do.
    Raises :class:`DatasetError` if a download fails (e.g. offline) or a checksum is wrong.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; choose one of: {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    if name == "digits":
        return root
    if name in ("fashion-mnist", "mnist"):
        folder = root / name
        for item in DOWNLOADS[name]:
            if not (folder / item.filename).is_file():
                _fetch(item, folder / item.filename)
        return folder
    (item,) = DOWNLOADS[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / item.filename
    if not (archive.is_file() and _md5(archive) == item.md5):
        _fetch(item, archive)
    _safe_extract(archive, root)
    archive.unlink(missing_ok=True)
    return root / (_CIFAR10_DIR if name == "cifar10" else _CIFAR100_DIR)
