"""The harness trains from data on disk (``--data-path``), and ``dataprune prepare`` writes it.

Real Fashion-MNIST (and the CIFAR-10 subset) from ../shared/data, written by ``dataprune
prepare`` into every format whose library imports here; DataLoader workers read it. Each format
is a parameter that skips, with the reason, where its library does not import (CI runs the MDS
cases in their own environment, ``-k mds``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_formats
import torch
from PIL import Image
from test_formats import DATA, FORMATS, missing_library

from dataprune.errors import DataPruneError
from dataprune.formats.images import ImageFolder
from dataprune.harness import cli
from dataprune.harness.config import RunConfig
from dataprune.harness.data import DatasetError, load_dataset
from dataprune.harness.data.disk import Decode, load_disk_data
from dataprune.harness.runner import run
from dataprune.harness.trainer import train

TRAIN, TEST = 600, 200
fmt = test_formats.fmt  # the fixture: each format, skipped where its library is absent
MEMORY = dict(dataset="fashion-mnist", data_dir=str(DATA), train_limit=TRAIN, test_limit=TEST)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The first 600/200 Fashion-MNIST images in every available format, by dataprune prepare."""
    if not (DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    formats = ",".join(f for f in FORMATS if missing_library(f) is None)
    out = tmp_path_factory.mktemp("prepared") / "fashion"
    argv = ["prepare", "--dataset", "fashion-mnist", "--data-dir", str(DATA), "--formats", formats]
    argv += ["--train-limit", str(TRAIN), "--test-limit", str(TEST), "--shard-mb", "0.03"]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    return out


def disk_config(path: Path, **fields) -> RunConfig:
    fields = {"method": "random", "prune": 0.5, "epochs": 3, "batch_size": 100, **fields}
    fields.setdefault("model", "mlp")  # a cheap step: the tests are about the data
    return RunConfig(data_path=str(path), progress=False, device="cpu", **fields)


def _log(index: int) -> None:
    with open(Path(os.environ["READ_LOG"]) / f"{os.getpid()}.log", "a") as f:
        f.write(f"{index}\n")


# ------------------------------------------------------------------------------- training
def test_a_run_from_disk_reads_and_decodes_only_the_samples_it_trains(
    fmt, prepared, tmp_path, monkeypatch
):
    """Every training read (the folder's file reads) and decode (the shards' samples) is of a
    sample the run then trains on, once per time it trains on it; pruned ones never."""
    monkeypatch.setenv("READ_LOG", str(tmp_path))
    read_file, decode = ImageFolder.__getitem__, Decode.__call__

    def logged_read(self, index):
        if self.root.name == "train":
            _log(index)
        return read_file(self, index)

    def logged_decode(self, sample):
        if self.where.name == "train" and not isinstance(sample, bytes):
            _log(int(sample["index"] if "index" in sample else sample["__key__"]))
        return decode(self, sample)

    monkeypatch.setattr(ImageFolder, "__getitem__", logged_read)
    monkeypatch.setattr(Decode, "__call__", logged_decode)  # forked workers inherit both
    trained = []
    config = disk_config(prepared / fmt, num_workers=2)
    result, _ = train(
        config.resolve(), on_batch=lambda idx, logits, y: trained.extend(idx.tolist())
    )

    read = [int(v) for f in tmp_path.glob("*.log") for v in f.read_text().split()]
    assert len(trained) == sum(e.samples for e in result.epochs) == 3 * TRAIN // 2
    assert collections.Counter(read) == collections.Counter(trained)
    assert len(set(trained)) < TRAIN  # some samples were pruned in every epoch


@pytest.mark.parametrize("indexed", ["litdata", "mds"])
def test_training_from_shards_is_bit_identical_to_training_from_memory(indexed, prepared):
    """Shards keep the source order, so the run's samples, batches, normalisation and
    augmentation are those of the in-memory run: the same losses and weights to the bit."""
    if missing_library(indexed):
        pytest.skip(missing_library(indexed))
    common = dict(method="ucb", prune=0.5, epochs=2, batch_size=100, model="mlp", device="cpu")
    common["progress"] = False
    memory, memory_model = train(RunConfig(**MEMORY, **common).resolve())
    disk, disk_model = train(
        dataclasses.replace(RunConfig(**common), data_path=str(prepared / indexed)).resolve()
    )
    assert [e.train_loss for e in disk.epochs] == [e.train_loss for e in memory.epochs]
    assert [e.test_accuracy for e in disk.epochs] == [e.test_accuracy for e in memory.epochs]
    for a, b in zip(
        memory_model.state_dict().values(), disk_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_a_run_from_disk_resumes_exactly(fmt, prepared, tmp_path):
    whole = run(disk_config(prepared / fmt, out=str(tmp_path / "whole")).resolve())
    part = disk_config(prepared / fmt, out=str(tmp_path / "part"))
    run(dataclasses.replace(part, stop_after=1).resolve())
    resumed = run(dataclasses.replace(part, resume=True).resolve())
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in whole.epochs]
    assert resumed.final_accuracy == whole.final_accuracy


def test_compare_runs_every_method_from_disk(prepared, tmp_path, capsys):
    argv = ["compare", "--data-path", str(prepared / "folder"), "--methods", "full,random"]
    argv += ["--epochs", "1", "--num-workers", "1", "--model", "mlp", "--out", str(tmp_path)]
    assert cli.main([*argv, "--no-progress"]) == 0
    assert "| random |" in capsys.readouterr().out


# ----------------------------------------------------------------------- your own folder
def _write_folder(root: Path, sizes: dict[str, int], shape=(8, 8, 3), odd: str | None = None):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(sizes):
            (root / split / name).mkdir(parents=True)
            for i in range(sizes[name]):
                pixels = rng.integers(0, 64, shape) + 128 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    if odd:
        Image.new("RGB", (5, 5)).save(root / "train" / odd / "zz-odd.png")


def test_an_image_folder_without_metadata_trains_with_estimated_statistics(tmp_path):
    _write_folder(tmp_path / "pets", {"cat": 20, "dog": 20})
    data = load_disk_data(tmp_path / "pets")
    assert (data.num_train, data.num_test, data.num_classes) == (40, 40, 2)
    assert (data.in_channels, data.image_size, data.augment) == (3, 8, "none")
    pixels = np.stack(
        [np.array(Image.open(p)) for p in sorted((tmp_path / "pets" / "train").rglob("*.png"))]
    )
    assert data.mean == pytest.approx(pixels.mean(axis=(0, 1, 2)))  # all 40 <= 1024 sampled
    argv = ["train", "--data-path", str(tmp_path / "pets"), "--method", "random", "--prune", "0.5"]
    argv += ["--epochs", "2", "--num-workers", "0", "--model", "mlp", "--no-progress"]
    assert cli.main(argv) == 0


def test_an_image_of_another_size_stops_the_run_naming_the_folder(tmp_path, capsys):
    _write_folder(tmp_path / "pets", {"cat": 4, "dog": 4}, odd="dog")
    argv = ["train", "--data-path", str(tmp_path / "pets"), "--epochs", "1", "--no-progress"]
    assert cli.main([*argv, "--num-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "an image of shape (3, 5, 5) among images of shape (3, 8, 8)" in err
    assert str(tmp_path / "pets" / "train") in err


def _no_test_split(root: Path) -> None:
    (root / "train").mkdir(parents=True)


def _no_images(root: Path) -> None:
    for split in ("train", "test"):
        (root / split / "cat").mkdir(parents=True)


def _bad_metadata(root: Path) -> None:
    _no_images(root)
    (root / "dataprune.json").write_text("{")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_no_test_split, "has no test/ folder"),
        (_no_images, "no .png, .jpg, .jpeg files"),
        (_bad_metadata, "not a readable dataprune.json"),
    ],
)
def test_a_data_folder_that_does_not_fit_is_one_line(tmp_path, capsys, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        load_disk_data(root)
    assert cli.main(["train", "--data-path", str(root), "--epochs", "1"]) == 2
    assert message in capsys.readouterr().err


def test_folders_with_other_classes_in_train_and_test_are_refused(tmp_path):
    _write_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    (tmp_path / "pets" / "test" / "dog").rename(tmp_path / "pets" / "test" / "bird")
    with pytest.raises(DatasetError, match="train/ and test/ hold different class folders"):
        load_disk_data(tmp_path / "pets")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-workers", "3"], "--num-workers 3 applies only with data_path"),
        (["--data-path", "d", "--num-workers", "-1"], "--num-workers -1 must be >= 0"),
        (["--data-path", "d", "--dataset", "mnist"], "--dataset 'mnist' does not apply with"),
        (["--data-path", "d", "--train-limit", "9"], "--train-limit 9 does not apply with"),
        (["--data-path", "d", "--verify"], "--verify True does not apply with"),
        (["--data-path", "d", "--method", "el2n"], "--method 'el2n' does not apply with"),
        (["--data-path", ""], "--data-path '' is empty"),
    ],
)
def test_data_flags_that_do_not_fit_are_refused_naming_the_flag(flags, message, capsys):
    assert cli.main(["train", *flags, "--epochs", "1"]) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------- prepare
def test_prepare_refuses_to_overwrite_and_replaces_only_when_asked(prepared, tmp_path, capsys):
    out = tmp_path / "fashion"
    argv = ["prepare", "--dataset", "fashion-mnist", "--data-dir", str(DATA), "--out", str(out)]
    argv += ["--train-limit", "50", "--test-limit", "20", "--no-progress"]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 2
    assert f"--out {out} exists: pass --overwrite to replace it" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite", "--train-limit", "30"]) == 0
    assert len(ImageFolder(out / "folder" / "train")) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fashion"]  # no staging left


def test_a_failed_prepare_leaves_no_output_and_keeps_the_old_one(tmp_path, monkeypatch):
    if not (DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    from dataprune.harness import prepare

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C, after the images are written

    monkeypatch.setattr(prepare, "write_metadata", crash)
    for existing in (False, True):
        out = tmp_path / "fashion"
        if existing:
            (out / "mine").mkdir(parents=True)
        with pytest.raises(KeyboardInterrupt):
            prepare.prepare_dataset(
                "fashion-mnist", out, ["folder"], data_dir=DATA, train_limit=10, test_limit=10,
                overwrite=True, progress=False,
            )  # fmt: skip
        assert sorted(p.name for p in tmp_path.iterdir()) == (["fashion"] if existing else [])
        if existing:
            assert [p.name for p in out.iterdir()] == ["mine"]


def test_prepare_writes_the_cifar_subset_as_the_harness_reads_it(tmp_path):
    if not (DATA / "cifar10-subset").is_dir():
        pytest.skip("the CIFAR-10 subset not found in ../shared/data")
    out = tmp_path / "cifar"
    argv = ["prepare", "--dataset", "cifar10", "--data-dir", str(DATA), "--out", str(out)]
    assert cli.main([*argv, "--train-limit", "60", "--test-limit", "30", "--no-progress"]) == 0
    data = load_disk_data(out / "folder")
    memory = load_dataset("cifar10", DATA, train_limit=60, test_limit=30)
    assert (data.num_train, data.in_channels, data.image_size) == (60, 3, 32)
    assert (data.augment, data.mean, data.std) == ("crop-flip", memory.mean, memory.std)
    stored = [int(Path(name).stem) for name in ImageFolder(out / "folder" / "test").files]
    assert torch.equal(data.test_x, memory.test_x[stored])  # the same pixels, normalised alike


def test_webdataset_workers_read_a_host_copy_of_the_subset(prepared, monkeypatch):
    """On a GPU the pruner's subset is in device memory, which forked workers cannot read: they
    must use the copy the main process made (here the pruner's tensor fails in any worker)."""
    if missing_library("webdataset"):
        pytest.skip(missing_library("webdataset"))
    from torch.utils.data import get_worker_info

    from dataprune import Pruner
    from dataprune.harness.data.disk import EpochReader

    indices = Pruner.indices

    def host_only(self):
        if get_worker_info() is not None:
            raise RuntimeError("a worker read the pruner's tensor")
        return indices(self)

    monkeypatch.setattr(Pruner, "indices", host_only)
    pruner = Pruner(TRAIN, "random", 0.5, epochs=2, seed=1)
    folder = prepared / "webdataset" / "train"
    decode = Decode((1, 28, 28), folder)
    reader = EpochReader("webdataset", folder, pruner.batch_sampler(64), decode, 2)
    for epoch in range(2):
        pruner.set_epoch(epoch)
        seen = torch.cat([idx for idx, _, _ in reader])
        assert torch.equal(seen.sort().values, pruner.indices())


def test_a_split_that_does_not_hold_what_its_metadata_says_is_refused(prepared, tmp_path, capsys):
    folder = shutil.copytree(prepared / "folder", tmp_path / "folder")
    meta = json.loads((folder / "dataprune.json").read_text())
    meta["splits"]["train"] = TRAIN - 1
    (folder / "dataprune.json").write_text(json.dumps(meta))
    argv = ["train", "--data-path", str(folder), "--epochs", "1", "--num-workers", "0"]
    assert cli.main([*argv, "--no-progress"]) == 2
    assert f"holds {TRAIN} samples, but {TRAIN - 1} were expected" in capsys.readouterr().err


def test_without_pillow_disk_data_and_prepare_say_which_extra_to_install(tmp_path):
    """The harness needs only the cli extra; data on disk needs the images extra, and says so."""
    script = (
        "import sys; sys.modules['PIL'] = None\n"  # any import of Pillow now fails
        "from dataprune.harness import cli\n"
        f"assert cli.main(['train', '--data-path', {str(tmp_path)!r}, '--epochs', '1']) == 2\n"
        f"out = {str(tmp_path / 'out')!r}\n"
        "assert cli.main(['prepare', '--dataset', 'digits', '--out', out]) == 2\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert "needs its library" in lines[0] and "pip install 'dataprune[images]'" in lines[0]
    assert "prepare needs Pillow" in lines[1] and "pip install 'dataprune[images]'" in lines[1]


# ------------------------------------------------------------------- data that does not fit
def _not_an_image(folder: Path) -> tuple[Path, str]:
    path = sorted(folder.rglob("*.png"))[0]
    path.write_bytes(b"not a png")
    return path, "not an image"


def _other_size(folder: Path) -> tuple[Path, str]:
    path = sorted(folder.rglob("*.png"))[0]
    path.write_bytes(test_formats.png_bytes(10))
    return path, "an image of shape (1, 10, 10) among images of shape (1, 8, 8)"


def _bomb(folder: Path) -> tuple[Path, str]:
    path = sorted(folder.rglob("*.png"))[0]
    path.write_bytes(test_formats.bomb_png())
    return path, "DecompressionBombError"


def _member(suffix: str, data: bytes | None, message: str):
    def damage(folder: Path) -> tuple[Path, str]:
        shard = test_formats.first_shard(folder)
        test_formats.rewrite_member(shard, suffix, data)
        return shard, message

    return damage


BAD_SAMPLES = {  # (format, how the first sample of a split is damaged)
    "folder, not an image": ("folder", _not_an_image),
    "folder, other size": ("folder", _other_size),
    "folder, decompression bomb": ("folder", _bomb),
    "webdataset, label cat": ("webdataset", _member(".label", b"cat", "label 'cat' is not a")),
    "webdataset, label 4": ("webdataset", _member(".label", b"4", "label 4 is not a class")),
    "webdataset, label -1": ("webdataset", _member(".label", b"-1", "label -1 is not a class")),
    "webdataset, no label": ("webdataset", _member(".label", None, "the sample has no label")),
    "webdataset, bomb": (
        "webdataset",
        _member(".png", test_formats.bomb_png(), "DecompressionBomb"),
    ),
}


@pytest.mark.parametrize(
    ("split", "workers"), [("train", 2), ("test", 0), ("train", 0), ("test", 2)]
)
@pytest.mark.parametrize("case", BAD_SAMPLES)
def test_a_bad_sample_is_one_line_naming_its_file_in_either_split_with_or_without_workers(
    case, split, workers, tmp_path, capsys
):
    """Corrupt input is the user's to fix: one line naming the file (or shard and sample), what
    is wrong with it and what to do, never a worker's traceback nor an internal error."""
    data_format, damage = BAD_SAMPLES[case]
    if missing_library(data_format):
        pytest.skip(missing_library(data_format))
    root = test_formats.write_tiny(tmp_path, data_format)
    bad, message = damage(root / split)
    argv = ["train", "--data-path", str(root), "--method", "full", "--epochs", "1"]  # reads all
    argv += ["--model", "mlp", "--num-workers", str(workers), "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dataprune: error: {bad}") and message in lines[0]


@pytest.mark.parametrize("case", test_formats.BAD_SHARDS)
def test_shards_that_do_not_hold_what_they_claim_are_refused_before_training(
    case, tmp_path, capsys
):
    """From the tar headers, before the test split or a pruner is sized by dataprune.json's
    counts: a shard cut, copied or missing, or a member that is no sample of its own."""
    if missing_library("webdataset"):
        pytest.skip(missing_library("webdataset"))
    root = test_formats.write_tiny(tmp_path, "webdataset")
    damage, message = test_formats.BAD_SHARDS[case]
    damage(test_formats.first_shard(root / "train"))
    with pytest.raises(DataPruneError, match=message.replace(".", r"\.")):
        load_disk_data(root)
    argv = ["train", "--data-path", str(root), "--epochs", "1", "--model", "mlp"]
    assert cli.main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("claim", [TRAIN * 2, 50_000_000])
def test_a_count_claimed_beyond_the_shards_is_refused_before_anything_is_sized_by_it(
    claim, tmp_path
):
    """The claim of 5e7 samples would allocate gigabytes of statistics: refused first."""
    if missing_library("webdataset"):
        pytest.skip(missing_library("webdataset"))
    root = test_formats.write_tiny(tmp_path, "webdataset")
    meta = json.loads((root / "dataprune.json").read_text())
    meta["splits"]["train"] = claim
    (root / "dataprune.json").write_text(json.dumps(meta))
    found = test_formats.TINY_TRAIN
    with pytest.raises(DatasetError, match=f"holds {found} samples, but {claim} were expected"):
        load_disk_data(root)


def test_a_folder_dataset_of_one_class_is_refused(tmp_path, capsys):
    _write_folder(tmp_path / "pets", {"cat": 4})
    with pytest.raises(DatasetError, match="1 class .cat.: a classifier needs at least two"):
        load_disk_data(tmp_path / "pets")
    root = test_formats.write_tiny(tmp_path / "tiny", "folder")
    meta = json.loads((root / "dataprune.json").read_text())
    meta["classes"] = ["only"]
    (root / "dataprune.json").write_text(json.dumps(meta))
    argv = ["train", "--data-path", str(root), "--epochs", "1", "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'dataprune.json'}: 1 class (only): a classifier needs at least two" in err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("std", [0.0], "std=[0.0] holds a standard deviation <= 0"),
        ("std", [float("nan")], "std=[nan] is not 1 finite numbers"),
        ("splits", {"train": -5, "test": 20}, "splits={'train': -5, 'test': 20} is not a"),
        ("mean", "abc", "mean='abc' is not 1 finite numbers"),
        ("augment", "rotate", "augment='rotate' is not one of none, flip, crop-flip"),
    ],
)
def test_metadata_that_does_not_fit_is_one_line_naming_the_file_and_field(
    field, value, message, tmp_path, capsys
):
    """Not "training diverged ... lower --lr" for a std of 0, nor a message naming no file."""
    root = test_formats.write_tiny(tmp_path, "folder")
    meta = json.loads((root / "dataprune.json").read_text())
    meta[field] = value
    (root / "dataprune.json").write_text(json.dumps(meta))
    argv = ["train", "--data-path", str(root), "--epochs", "1", "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"dataprune: error: {root / 'dataprune.json'}: {message}" in err


def test_a_relative_and_an_absolute_data_path_to_one_folder_resume_one_run(
    tmp_path, capsys, monkeypatch
):
    """The run's identity holds the folder, not how it was named: was "another configuration"."""
    root = test_formats.write_tiny(tmp_path, "folder")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--epochs", "2", "--model", "mlp", "--no-progress", "--out", "run"]
    assert cli.main([*argv, "--data-path", "folder", "--stop-after", "1"]) == 0
    assert cli.main([*argv, "--data-path", str(root), "--resume"]) == 0
    assert "over 2 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("data_format", ["litdata", "mds"])
def test_a_cut_chunk_or_shard_is_refused_naming_it_from_the_index(data_format, tmp_path, capsys):
    """Was litdata's ChunkWaitTimeoutError from a worker, reported as an internal error."""
    if missing_library(data_format):
        pytest.skip(missing_library(data_format))
    root = test_formats.write_tiny(tmp_path, data_format)
    index = json.loads((root / "train" / "index.json").read_text())
    entry = (index["chunks"] if data_format == "litdata" else index["shards"])[0]
    name = entry["filename"] if data_format == "litdata" else entry["raw_data"]["basename"]
    (root / "train" / name).write_bytes((root / "train" / name).read_bytes()[:100])
    argv = ["train", "--data-path", str(root), "--epochs", "1", "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"dataprune: error: {root / 'train' / name}: 100 bytes, where" in err
