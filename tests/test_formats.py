"""Data past memory: an image folder and shards written by each format's own library, read with
pruning. Real Fashion-MNIST images (PNG), DataLoader workers, 2 gloo ranks.

Each format is a parameter that skips, with the reason, where its library does not import.
CI runs the MosaicML Streaming cases in their own environment (``-k mds``, see .ci/run).
"""

from __future__ import annotations

import datetime
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from dataprune import IndexedDataset, Pruner
from dataprune.harness.data.locate import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = resolve_data_dir()  # $DATAPRUNE_DATA_DIR, else ../shared/data
N, BATCH, EPOCHS, PRUNE = 3000, 100, 3, 0.5
LIBRARIES = {"folder": "PIL", "mds": "streaming", "litdata": "litdata", "webdataset": "webdataset"}
FORMATS = tuple(LIBRARIES)


def missing_library(fmt: str) -> str | None:
    """Why ``fmt`` cannot run here, or None. ``import streaming`` raises RuntimeError, not
    ImportError, where a torchvision is installed that does not import beside this torch."""
    try:
        __import__(LIBRARIES[fmt])
        __import__("PIL")
    except Exception as error:  # noqa: BLE001 - any failure to import means the extra is unusable
        return f"{fmt} needs {LIBRARIES[fmt]}, which does not import here: {error!r}"[:300]
    return None


@pytest.fixture(params=FORMATS)
def fmt(request) -> str:
    reason = missing_library(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="session")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    """The first N Fashion-MNIST training images (uint8 N x 28 x 28) and labels."""
    if not (DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    from dataprune.formats.prepare import pixels
    from dataprune.harness.data import load_dataset

    data = load_dataset("fashion-mnist", DATA, download=False, train_limit=N, test_limit=1)
    return pixels(data.train_x, data.mean, data.std), data.train_y.numpy()


@pytest.fixture(scope="session")
def shards(fashion, tmp_path_factory) -> Path:
    """Every available format, written once from the same images by its own library."""
    from dataprune.formats.prepare import prepare

    available = [f for f in FORMATS if missing_library(f) is None]
    if not available:
        pytest.skip("no format's library imports here")
    root = tmp_path_factory.mktemp("shards")
    # ~1 MB in 64 KB shards: ranks and workers get several each
    prepare(root, *fashion, formats=available, shard_bytes=1 << 16, progress=False)
    return root


class Decode:
    """The test's transform: decode, and log the sample's index to a file per process (DataLoader
    workers are processes). For the folder, whose decoder sees only the file's bytes, it logs -1."""

    def __init__(self, log_dir: Path | None = None):
        self.log_dir = log_dir

    def log(self, index: int) -> None:
        if self.log_dir is not None:
            with open(self.log_dir / f"{os.getpid()}.log", "a") as f:
                f.write(f"{index}\n")

    def __call__(self, sample):
        from dataprune.formats.images import decode_image, decode_sample

        if isinstance(sample, bytes):  # the folder's decoder
            self.log(-1)
            return decode_image(sample)
        image, label = decode_sample(sample)
        index = sample["index"] if "index" in sample else int(sample["__key__"])
        self.log(int(index))
        return image, label, int(index)

    def decoded(self) -> list[int]:
        return [int(v) for f in sorted(self.log_dir.glob("*.log")) for v in f.read_text().split()]


def open_loader(fmt: str, root: Path, pruner: Pruner, decode: Decode, workers: int = 2):
    """A DataLoader over ``fmt`` that yields ``(index, (image, label, stored index))``."""
    if fmt == "folder":
        from dataprune.formats.images import ImageFolder

        folder = ImageFolder(root / "folder", decode=decode)
        # the file name is the sample's index in the source (its stored index)
        stored = [int(Path(name).stem) for name in folder.files]
        dataset = IndexedDataset(_WithStored(folder, stored))
    elif fmt == "mds":
        from streaming import StreamingDataset

        from dataprune.formats.mosaic import MosaicIndexed

        dataset = MosaicIndexed(StreamingDataset(local=str(root / "mds"), batch_size=BATCH), decode)
    elif fmt == "litdata":
        import litdata

        from dataprune.formats.litdata import LitDataIndexed

        dataset = LitDataIndexed(
            litdata.StreamingDataset(str(root / "litdata"), batch_decode=0), decode
        )
    else:
        from dataprune.formats.webdataset import PrunedWebDataset

        urls = sorted(str(p) for p in (root / "webdataset").glob("*.tar"))
        dataset = PrunedWebDataset(urls, pruner, decode)
        return DataLoader(dataset, batch_size=BATCH, num_workers=workers)
    return DataLoader(dataset, batch_size=BATCH, sampler=pruner.sampler(), num_workers=workers)


class _WithStored(torch.utils.data.Dataset):
    def __init__(self, folder, stored):
        self.folder, self.stored = folder, stored

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, index):
        image, label = self.folder[index]
        return image, int(label), self.stored[index]


def loss_of(indices: torch.Tensor, epoch: int) -> torch.Tensor:
    return ((indices * 7919 + epoch * 104729 + 13) % 1009).float() / 97.0 + 0.01


def train(fmt, root, pruner, epochs, check=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run ``epochs`` (a range) recording every batch; returns each epoch's batch order and
    subset."""
    loader = open_loader(fmt, root, pruner, Decode())
    orders, subsets = [], []
    for epoch in epochs:
        pruner.set_epoch(epoch)
        subsets.append(pruner.indices().clone())
        seen = []
        for idx, (image, label, stored) in loader:
            if check is not None:
                check(idx, image, label, stored)
            pruner.record(idx, loss_of(idx, epoch))
            seen.append(idx)
        orders.append(torch.cat(seen))
    return orders, subsets


def make_pruner(method: str = "epsilon-greedy") -> Pruner:
    return Pruner(N, method, PRUNE, EPOCHS, seed=3, warmup_epochs=1)


# ------------------------------------------------------------------------------------ tests
def test_each_epoch_reads_the_pruned_subset_with_the_right_samples(fmt, shards, fashion):
    images, labels = fashion

    def check(idx, image, label, stored):
        if fmt != "folder":  # the library's index is the written order
            assert torch.equal(stored, idx)
        expected = torch.from_numpy(images[stored.numpy()]).unsqueeze(1)
        assert image.dtype == torch.uint8 and torch.equal(image, expected)
        assert torch.equal(label, torch.from_numpy(labels[stored.numpy()]).long())

    pruner = make_pruner()
    orders, subsets = train(fmt, shards, pruner, range(EPOCHS), check=check)
    for epoch, (order, subset) in enumerate(zip(orders, subsets, strict=True)):
        assert order.numel() == pruner.epoch_size(epoch)  # each sample once, no padding at W=1
        assert torch.equal(order.sort().values, subset)
    assert pruner.epoch_size(1) == N // 2
    assert pruner.summary()["samples_backpropagated"] == pruner.summary()["samples_used"]


def test_a_pruned_sample_is_never_decoded(fmt, shards, tmp_path):
    pruner = make_pruner("random")
    pruner.set_epoch(1)  # a pruned epoch
    decode = Decode(tmp_path)
    loader = open_loader(fmt, shards, pruner, decode)
    seen = torch.cat([idx for idx, _ in loader])
    decoded = decode.decoded()
    assert len(decoded) == pruner.k == seen.numel()  # one decode per kept sample, none else
    if fmt != "folder":
        assert sorted(decoded) == pruner.indices().tolist()


def test_resume_from_a_saved_pruner_is_exact(fmt, shards, tmp_path):
    whole = make_pruner()
    uninterrupted, _ = train(fmt, shards, whole, range(EPOCHS))
    first = make_pruner()
    train(fmt, shards, first, range(2))
    torch.save(first.state_dict(), tmp_path / "pruner.pt")
    resumed = make_pruner()
    resumed.load_state_dict(torch.load(tmp_path / "pruner.pt", weights_only=True))
    rest, _ = train(fmt, shards, resumed, range(2, EPOCHS))
    for a, b in zip(uninterrupted[2:], rest, strict=True):
        assert torch.equal(a, b)  # the same samples in the same batch order
    assert torch.equal(whole.stats.table, resumed.stats.table)


# ------------------------------------------------------------------- 2 ranks x 2 workers
def _rank(rank: int, world_size: int, init_file: str, root: str, formats: list[str], out: str):
    # A spawned process inherits "spawn" as its default start method; DataLoader workers are
    # forked, as under torchrun, rather than each importing torch anew.
    mp.set_start_method("fork", force=True)
    # MosaicML Streaming reads its world from the launcher's environment variables.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    os.environ.update(LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    torch.set_num_threads(1)
    results = {}
    for fmt in formats:
        pruner = make_pruner()
        orders, subsets = train(fmt, Path(root), pruner, range(EPOCHS))
        results[fmt] = {
            "orders": orders,
            "subsets": subsets,
            "table": pruner.stats.table.clone(),
            "recorded": pruner.summary()["samples_backpropagated"],
        }
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_two_ranks_with_two_workers_each_train_the_same_subset(shards, tmp_path):
    formats = [f for f in FORMATS if missing_library(f) is None]
    mp.spawn(
        _rank,
        args=(2, str(tmp_path / "init"), str(shards), formats, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for fmt in formats:
        reference = make_pruner()
        a, b = ranks[0][fmt], ranks[1][fmt]
        assert torch.equal(a["table"], b["table"])  # identical statistics on both ranks
        for epoch in range(EPOCHS):
            subset = a["subsets"][epoch]
            assert torch.equal(subset, b["subsets"][epoch])
            reference.set_epoch(epoch)
            assert subset.numel() == reference.epoch_size(epoch)
            both = torch.cat([a["orders"][epoch], b["orders"][epoch]])
            assert a["orders"][epoch].numel() == b["orders"][epoch].numel()  # equal steps
            if fmt == "webdataset":  # each of 2 x 2 workers yields epoch_size // 4 kept samples
                assert both.numel() == subset.numel() // 4 * 4
                assert torch.isin(both, subset).all()
            else:  # DistributedSampler's equal shares: the ranks train the subset, each once
                assert torch.equal(both.sort().values, subset)
        realised = sum(reference.epoch_size(e) // 4 * 4 for e in range(EPOCHS))
        assert a["recorded"] + b["recorded"] == realised


# ----------------------------------------------------------------- no torchvision needed
def test_folder_litdata_and_webdataset_read_without_torchvision(shards):
    """Each read path runs in a process where ``import torchvision`` fails."""
    formats = [f for f in ("folder", "litdata", "webdataset") if missing_library(f) is None]
    if not formats:
        pytest.skip("none of folder, litdata, webdataset imports here")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torchvision"] = None  # any import of torchvision now raises ImportError
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        import test_formats as t
        for fmt in {formats!r}:
            orders, _ = t.train(fmt, Path({str(shards)!r}), t.make_pruner(), range(2))
            assert orders[1].numel() == t.N // 2, fmt
        print("read without torchvision:", {formats!r})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "read without torchvision" in result.stdout


# ------------------------------------------------------------------ data that does not fit
TINY_TRAIN, TINY_TEST, TINY_CLASSES = 40, 20, 4


def write_tiny(root: Path, fmt: str) -> Path:
    """40 training and 20 test images (1 x 8 x 8, 4 classes) in ``fmt``, laid out and described
    as dataprune prepare writes them (small shards: several a split); returns the data folder."""
    from dataprune.formats.prepare import class_folder_names, prepare, write_metadata

    rng = np.random.default_rng(0)
    for split, n in (("train", TINY_TRAIN), ("test", TINY_TEST)):
        images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        prepare(root, images, np.arange(n) % TINY_CLASSES, (fmt,), shard_bytes=3000,
                progress=False, split=split)  # fmt: skip
    write_metadata(
        root / fmt, data_format=fmt, dataset="tiny", classes=class_folder_names(TINY_CLASSES),
        shape=(1, 8, 8), splits={"train": TINY_TRAIN, "test": TINY_TEST}, mean=[127.5],
        std=[74.0],
    )  # fmt: skip
    return root / fmt


def png_bytes(size: int = 8) -> bytes:
    from dataprune.formats.images import encode_png

    return encode_png(np.zeros((size, size), dtype=np.uint8))


@functools.cache
def bomb_png() -> bytes:
    """A small PNG whose size (15000 x 15000) Pillow refuses to decode: a decompression bomb."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (15000, 15000)).save(buffer, format="PNG")
    return buffer.getvalue()


def first_shard(folder: Path) -> Path:
    return sorted(folder.glob("*.tar"))[0]


def rewrite_member(shard: Path, suffix: str, data: bytes | None) -> None:
    """Replace the first member ending in ``suffix`` with ``data``, or drop it (None)."""
    import io
    import tarfile

    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    target = next(m.name for m, _ in members if m.name.endswith(suffix))
    with tarfile.open(shard, "w") as tar:
        for member, content in members:
            if member.name == target:
                if data is None:
                    continue
                content = data
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def add_shard(folder: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """A shard of ``(name, bytes)`` members, or ``(name, target)`` hard links."""
    import io
    import tarfile

    shard = folder / "zz-extra.tar"
    with tarfile.open(shard, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.LNKTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return shard


def _cut(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[:1200])  # within the second member


def _garbage(shard: Path) -> None:
    shard.write_bytes(bytes(range(256)) * 8)


def _copy(shard: Path) -> None:
    shard.with_name("copy-of-first.tar").write_bytes(shard.read_bytes())


def _gap(shard: Path) -> None:
    shard.unlink()


def _named(name: str):
    """A shard beside ``shard`` holding one sample whose members are ``name`` and its label."""
    return lambda shard: add_shard(
        shard.parent, [(name, png_bytes()), (f"{name[:-4]}.label", b"1")]
    )


def _link(shard: Path) -> None:
    rewrite_member(shard, ".png", None)
    add_shard(shard.parent, [("00000000.png", "00000001.png")])


BAD_SHARDS = {  # what is done to a split's first shard -> what the one-line error says
    "truncated": (_cut, "truncated"),
    "garbage": (_garbage, "not a readable tar file"),
    "copied": (_copy, "is in both"),
    "missing": (_gap, "sample 0 is in none of them"),
    "unindexed name": (_named("cat.png"), "member 'cat.png' is not named by a sample index"),
    "name upwards": (_named("../../00000003.png"), "'../../00000003.png' names a path outside"),
    "absolute name": (_named("/00000003.png"), "member '/00000003.png' names a path outside"),
    "hard link": (_link, "member '00000000.png' is not a regular file"),
}


@pytest.mark.parametrize("case", BAD_SHARDS)
def test_tar_headers_alone_count_the_samples_and_refuse_members_that_do_not_fit(case, tmp_path):
    """scan_shards reads no sample: the count comes from the data, and a shard that is cut,
    copied, missing, or holds a member that is no sample of its own is refused naming it."""
    if missing_library("webdataset"):
        pytest.skip(missing_library("webdataset"))
    from dataprune.errors import InvalidValue
    from dataprune.formats.webdataset import scan_shards

    folder = write_tiny(tmp_path, "webdataset") / "train"
    assert scan_shards(sorted(folder.glob("*.tar"))) == TINY_TRAIN
    damage, message = BAD_SHARDS[case]
    damage(first_shard(folder))
    with pytest.raises(InvalidValue, match=message.replace(".", r"\.")) as raised:
        scan_shards(sorted(folder.glob("*.tar")))
    assert str(folder) in str(raised.value) or case == "missing"
    assert len(str(raised.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("labels", "class_names", "message"),
    [
        ([0, 1, 0.5, 1], None, r"labels\[2\]=0.5 is not a whole number"),
        ([0, 1, 1.7, 1], None, r"labels\[2\]=1.7 is not a whole number"),
        ([0, 1, -1, 1], None, r"labels\[2\]=-1 is not a class index"),
        ([0, 1, 2, 1], ["cat", "dog"], r"labels\[2\]=2 is not a class index: .* up to 1"),
    ],
)
def test_prepare_refuses_labels_that_are_not_class_indices(labels, class_names, message, tmp_path):
    """Rather than truncating 1.7 to 1, or filing -1 under the last class."""
    from dataprune.errors import InvalidValue
    from dataprune.formats.prepare import prepare

    images = np.zeros((4, 8, 8), dtype=np.uint8)
    with pytest.raises(InvalidValue, match=message):
        prepare(tmp_path, images, np.array(labels), ("folder",), class_names, progress=False)
    assert not (tmp_path / "folder").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("std", [0.0], "std=[0.0] holds a standard deviation <= 0"),
        ("std", [float("nan")], "std=[nan] is not 1 finite numbers"),
        ("mean", "abc", "mean='abc' is not 1 finite numbers"),
        ("splits", {"train": -5, "test": 20}, "splits={'train': -5, 'test': 20} is not a"),
        ("shape", [1, 8], "shape=[1, 8] is not an image's [C, H, W]"),
        ("classes", "ab", "classes='ab' is not a list of class names"),
        ("format", "zip", "format='zip' is not one of"),
    ],
)
def test_metadata_of_the_wrong_kind_is_refused_naming_the_file_and_field(
    field, value, message, tmp_path
):
    import json

    from dataprune.errors import InvalidValue
    from dataprune.formats.prepare import read_metadata, write_metadata

    path = write_metadata(
        tmp_path, data_format="folder", dataset="tiny", classes=["a", "b"], shape=(1, 8, 8),
        splits={"train": 40, "test": 20}, mean=[127.5], std=[74.0],
    )  # fmt: skip
    assert read_metadata(tmp_path)["std"] == [74.0]
    fields = json.loads(path.read_text())
    fields[field] = value
    path.write_text(json.dumps(fields))
    with pytest.raises(InvalidValue) as raised:
        read_metadata(tmp_path)
    assert str(raised.value).startswith(f"{path}: {message}")


def _bad_png(folder: Path) -> tuple[Path, str]:
    path = sorted(folder.rglob("*.png"))[0]
    path.write_bytes(b"not a png")
    return path, "not an image"


def _bad_label(folder: Path) -> tuple[Path, str]:
    shard = first_shard(folder)
    rewrite_member(shard, ".label", b"cat")
    return shard, "label 'cat' is not a whole number"


@pytest.mark.parametrize("fmt_case", ["folder", "webdataset"])
def test_a_bad_sample_is_an_error_naming_its_file_or_shard_and_sample(fmt_case, tmp_path):
    """The readers name the file (or shard and sample) of a sample that cannot be decoded.
    (In DataLoader workers too: tests/test_harness_disk.py runs them.)"""
    reason = missing_library(fmt_case)
    if reason:
        pytest.skip(reason)
    from dataprune.errors import DataPruneError
    from dataprune.formats.images import ImageFolder, decode_image, decode_sample

    folder = write_tiny(tmp_path, fmt_case) / "train"
    bad, message = (_bad_png if fmt_case == "folder" else _bad_label)(folder)
    pruner = Pruner(TINY_TRAIN, "full", epochs=1)
    pruner.set_epoch(0)
    if fmt_case == "folder":
        dataset = IndexedDataset(ImageFolder(folder, decode=decode_image))
        loader = DataLoader(dataset, batch_size=8)
    else:
        from dataprune.formats.webdataset import PrunedWebDataset

        shards = sorted(str(p) for p in folder.glob("*.tar"))
        loader = DataLoader(PrunedWebDataset(shards, pruner, decode_sample), batch_size=8)
    with pytest.raises(DataPruneError) as raised:
        list(loader)
    assert str(raised.value).startswith(str(bad)) and message in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1
