"""Data past memory: an image folder and shards written by each format's own library, read with
pruning. Real Fashion-MNIST images (PNG), DataLoader workers, 2 gloo ranks.

Each format is a parameter that skips, with the reason, where its library does not import.
CI runs the MosaicML Streaming cases in their own environment (``-k mds``, see .ci/run).
"""

from __future__ import annotations

import datetime
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
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
