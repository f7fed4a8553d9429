"""The harness's datasets (dataprune.harness.data), on the CPU and without the network: names
and locations, real data, hostile and broken files, downloads and their checksums, and
augmentation.

Real data comes from ../shared/data next to the repository (see its README.md); tests that need
it are skipped when it is absent. Every download test uses an unreachable or file:// URL.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_cli import error_of

from dataprune.harness.data import (
    DatasetError,
    Download,
    ImageData,
    download_dataset,
    formats,
    load_dataset,
    locate,
    resolve_data_dir,
    verify_dataset,
)

SHARED_DATA = resolve_data_dir()  # $DATAPRUNE_DATA_DIR, else ../shared/data
FMNIST_DIR = SHARED_DATA / "fashion-mnist"
CIFAR10_DIR = SHARED_DATA / "cifar10-subset" / "cifar-10-batches-py"
FASHION = FMNIST_DIR


def _need(path: Path, *files: str) -> None:
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        pytest.skip(f"real data not available: {path} lacks {', '.join(missing)}")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast, and far faster when CPUs are contended."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries a real (non-file, non-loopback) download."""
    real_urlopen = locate.urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        u = url if isinstance(url, str) else url.full_url
        if not (u.startswith("file:") or u.startswith("http://127.0.0.1")):
            raise AssertionError(f"test tried to download {u}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(locate.urllib.request, "urlopen", guarded)


@pytest.fixture(scope="module")
def fmnist() -> ImageData:
    _need(FMNIST_DIR, *formats.required_files("fashion-mnist"))
    return load_dataset("fashion-mnist", SHARED_DATA, download=False)


@pytest.fixture(scope="module")
def cifar10() -> ImageData:
    _need(CIFAR10_DIR, "data_batch_1", "test_batch")
    return load_dataset("cifar10", SHARED_DATA, download=False)


# ---- helpers writing small dataset files


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_gz(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(payload)


def _write_fake_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    rng = np.random.RandomState(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_gz(folder / f"{prefix}-images-idx3-ubyte.gz", _idx_bytes(images, 2051))
        _write_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", _idx_bytes(labels, 2049))


def _write_fake_cifar10(folder: Path, n: int = 20) -> None:
    rng = np.random.RandomState(2)
    folder.mkdir(parents=True, exist_ok=True)
    for fname in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        batch = {
            "batch_label": fname,
            "data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
            "labels": [int(v) for v in rng.randint(0, 10, n)],
        }
        (folder / fname).write_bytes(pickle.dumps(batch, protocol=2))  # Python-3 pickle


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo hacked > {self.marker}",))


# ---- names and locations


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ValueError, match="dataset='foo' is not known") as info:
        load_dataset("foo")
    assert "digits, fashion-mnist, mnist, cifar10, cifar100" in str(info.value)
    with pytest.raises(ValueError, match="choose one of"):
        download_dataset("foo", "/nonexistent")


def test_resolve_data_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPRUNE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("DATAPRUNE_DATA_DIR")
    work = tmp_path / "proj"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_dir() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.chdir(tmp_path)  # no ../shared/data here: repo-relative or the cache
    repo_shared = Path(locate.__file__).resolve().parents[4] / ".." / "shared" / "data"
    expected = repo_shared.resolve() if repo_shared.is_dir() else locate.default_cache_dir()
    assert resolve_data_dir() == expected


# ---- real data


def test_digits() -> None:
    d = load_dataset("digits")
    assert (d.num_train, d.num_test) == (1437, 360)
    assert tuple(d.train_x.shape[1:]) == (1, 8, 8) and (d.in_channels, d.image_size) == (1, 8)
    assert d.num_classes == 10 and d.augment == "none"
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert set(d.train_y.tolist()) == set(range(10)) and int(d.test_y.min()) >= 0
    assert int(d.test_y.max()) <= 9
    assert abs(float(d.train_x.mean())) < 1e-4 and abs(float(d.train_x.std()) - 1) < 1e-3
    again = load_dataset("digits", train_limit=100, test_limit=50)
    assert (again.num_train, again.num_test) == (100, 50)
    assert torch.equal(again.train_x, d.train_x[:100]) and torch.equal(again.test_y, d.test_y[:50])


def test_fashion_mnist_full(fmnist: ImageData) -> None:
    d = fmnist
    assert (d.num_train, d.num_test) == (60000, 10000)
    assert tuple(d.train_x.shape[1:]) == (1, 28, 28) and d.image_size == 28
    assert d.num_classes == 10 and d.augment == "flip"
    assert torch.bincount(d.train_y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(d.test_y, minlength=10).tolist() == [1000] * 10
    m, s = d.train_x.mean(), d.train_x.std()
    assert abs(float(m)) < 1e-3 and abs(float(s) - 1) < 1e-3


def test_fashion_mnist_limited(fmnist: ImageData) -> None:
    d = load_dataset("fashion-mnist", SHARED_DATA, download=False, train_limit=500, test_limit=7)
    assert (d.num_train, d.num_test) == (500, 7)
    assert torch.equal(d.train_x, fmnist.train_x[:500]) and torch.equal(d.test_y, fmnist.test_y[:7])
    assert int(d.train_y.min()) >= 0 and int(d.train_y.max()) <= 9


def test_cifar10_subset(cifar10: ImageData) -> None:
    d = cifar10
    assert (d.num_train, d.num_test) == (5000, 1000)
    assert tuple(d.train_x.shape[1:]) == (3, 32, 32) and d.in_channels == 3
    assert d.num_classes == 10 and d.augment == "crop-flip"
    # Class counts of the first 1000 images of each original batch (checked against the files).
    train_counts = [508, 515, 478, 484, 527, 469, 497, 512, 518, 492]
    test_counts = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert torch.bincount(d.train_y, minlength=10).tolist() == train_counts
    assert torch.bincount(d.test_y, minlength=10).tolist() == test_counts
    means = d.train_x.mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.zeros(3), atol=1e-4)


def test_imagedata_to_device(cifar10: ImageData) -> None:
    assert cifar10.to("cpu") is cifar10
    moved = cifar10.to("meta")
    assert moved.train_x.device.type == "meta" and moved.num_train == cifar10.num_train
    assert cifar10.train_x.device.type == "cpu"


# ---- hostile and broken files


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "hacked.txt"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    evil = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2)
    for fname in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (folder / fname).write_bytes(evil)
    with pytest.raises(DatasetError, match="refusing to unpickle") as info:
        load_dataset("cifar10", tmp_path, download=False)
    assert "system" in str(info.value) and "data_batch_1" in str(info.value)
    assert not marker.exists()


def test_cifar_pickles_written_by_python3_load(tmp_path: Path) -> None:
    _write_fake_cifar10(tmp_path / "cifar-10-batches-py", n=20)
    d = load_dataset("cifar10", tmp_path, download=False)
    assert (d.num_train, d.num_test) == (100, 20) and d.train_x.shape[1:] == (3, 32, 32)


def test_cifar_bad_shape(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar10(folder, n=4)
    bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3.*\(4, 100\)"):
        load_dataset("cifar10", tmp_path, download=False)


def test_fake_mnist_loads(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path / "mnist")
    d = load_dataset("mnist", tmp_path, download=False)
    assert (d.num_train, d.num_test, d.augment) == (20, 10, "none")
    assert d.train_y.tolist() == [i % 10 for i in range(20)]


@pytest.mark.parametrize(
    "payload, problem",
    [
        (struct.pack(">III", 2049, 10, 28) + bytes(10 * 28), "magic"),  # labels magic on images
        (struct.pack(">IIII", 2051, 20, 28, 28) + bytes(100), "need 15680 bytes"),  # truncated
        (b"\x00\x01", "too short"),
    ],
)
def test_corrupt_idx(tmp_path: Path, payload: bytes, problem: str) -> None:
    folder = tmp_path / "fashion-mnist"
    _write_fake_mnist(folder)
    _write_gz(folder / "train-images-idx3-ubyte.gz", payload)
    with pytest.raises(DatasetError, match=problem) as info:
        load_dataset("fashion-mnist", tmp_path, download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_truncated_gzip(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    _write_fake_mnist(folder)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*gzip"):
        load_dataset("fashion-mnist", tmp_path, download=False)


def test_label_count_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    _write_fake_mnist(folder)
    _write_gz(folder / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(3, np.uint8), 2049))
    with pytest.raises(DatasetError, match="3 labels for 10 images"):
        load_dataset("mnist", tmp_path, download=False)


# ---- downloading (never the real network) and checksums


def test_missing_without_download_says_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found; looked in") as info:
        load_dataset("cifar100", tmp_path, download=False)
    assert str(tmp_path / "cifar-100-python") in str(info.value)


def test_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = tuple(
        Download(("http://127.0.0.1:9/" + d.filename,), d.sha256, d.filename)
        for d in locate.DOWNLOADS["fashion-mnist"]
    )
    monkeypatch.setitem(locate.DOWNLOADS, "fashion-mnist", items)
    with pytest.raises(DatasetError, match="offline") as info:
        load_dataset("fashion-mnist", tmp_path, download=True)
    msg = str(info.value)
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in msg and "--data-dir" in msg
    assert not any(tmp_path.rglob("*"))  # no partial files, and no empty folder, left


def _tar_gz(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_and_extract_from_file_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _write_fake_cifar10(src / "cifar-10-batches-py", n=8)
    files = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in src.rglob("*_*")}
    archive = tmp_path / "cifar-10-python.tar.gz"
    sha256 = _tar_gz(archive, files)
    item = Download((archive.as_uri(),), sha256, "cifar-10-python.tar.gz")
    monkeypatch.setitem(locate.DOWNLOADS, "cifar10", (item,))
    root = tmp_path / "data"
    d = load_dataset("cifar10", root, download=True)
    assert (d.num_train, d.num_test) == (40, 8)
    assert not (root / "cifar-10-python.tar.gz").exists()  # archive removed after extraction

    monkeypatch.setitem(
        locate.DOWNLOADS, "cifar10", (Download(item.urls, "0" * 64, item.filename),)
    )
    with pytest.raises(DatasetError, match="sha256"):
        download_dataset("cifar10", tmp_path / "other")
    assert not any(p.is_file() for p in (tmp_path / "other").rglob("*"))


def test_unsafe_tar_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    _tar_gz(archive, {"../escape.txt": b"x"})
    (tmp_path / "root").mkdir()
    with pytest.raises(DatasetError, match="unsafe"):
        locate._safe_extract(archive, tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists()


def test_every_download_is_sha256_checked_and_https_first():
    for name, items in locate.DOWNLOADS.items():
        for item in items:
            assert item.urls[0].startswith("https://"), (name, item.urls)
            assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0


@pytest.mark.skipif(
    not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file(), reason="no Fashion-MNIST"
)
def test_verify_rechecks_files_on_disk(tmp_path, capsys):
    assert "4 file(s)" in verify_dataset("fashion-mnist", FASHION.resolve())
    copy = tmp_path / "fashion-mnist"
    copy.mkdir()
    for f in FASHION.glob("*.gz"):
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(DatasetError, match="t10k-labels.*differs from the expected"):
        verify_dataset("fashion-mnist", copy)
    err = error_of(
        capsys, "train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--verify"
    )
    assert "differs from the expected" in err


def test_verify_uses_the_manifest_of_an_unpacked_archive(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    files = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    for name in [*files, "test_batch"]:
        (folder / name).write_bytes(name.encode())
    assert "6 not checked" in verify_dataset("cifar10", folder)
    locate._write_manifest(folder, sorted(folder.iterdir()))
    assert "6 file(s)" in verify_dataset("cifar10", folder)
    (folder / "test_batch").write_bytes(b"changed")
    with pytest.raises(DatasetError, match="test_batch"):
        verify_dataset("cifar10", folder)


# ---- augmentation


def _crop_candidates(img: torch.Tensor, pad: int = 4) -> torch.Tensor:
    padded = F.pad(img[None], (pad,) * 4, mode="reflect")[0]
    h, w = img.shape[-2:]
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [crop, crop.flip(-1)]
    return torch.stack(out)


def test_crop_flip_is_shift_and_flip(cifar10: ImageData) -> None:
    x = cifar10.train_x[:24]
    out = cifar10.augment_batch(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    same = cifar10.augment_batch(x, torch.Generator().manual_seed(5))
    assert torch.equal(out, same)
    other = cifar10.augment_batch(x, torch.Generator().manual_seed(6))
    assert not torch.equal(out, other)
    for i in range(len(x)):
        cands = _crop_candidates(x[i])
        assert (cands == out[i]).flatten(1).all(1).any(), f"image {i} is not a shifted crop"
    # channels_last input gives the same result
    cl = cifar10.augment_batch(
        x.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(5)
    )
    assert torch.equal(cl, out)


def test_flip_only_changes_orientation(fmnist: ImageData) -> None:
    x = fmnist.train_x[:64]
    out = fmnist.augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    kept = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((kept | flipped).all())
    assert 0 < int((flipped & ~kept).sum()) < 64  # some flipped, some not


def test_none_augment_returns_input() -> None:
    d = load_dataset("digits", train_limit=16, test_limit=4)
    x = d.train_x
    assert d.augment_batch(x, torch.Generator().manual_seed(0)) is x
