"""Decode-bound loading: what pruning saves when samples live on disk as PNG images.

Writes the first ``--samples`` Fashion-MNIST training images (from ../shared/data, or
``--data-dir``) as PNG files into an image folder and into each streaming format whose library
imports here (MosaicML Streaming MDS, LitData, WebDataset), with each library's own writer.
Then, for each format, it trains a linear classifier (a cheap step, so loading dominates) with
DataLoader workers decoding the PNGs, and times, side by side in one run:

- a full epoch (``Pruner(..., warmup_epochs=1)``'s epoch 0) and
- a pruned epoch at ``--prune`` (epoch 1),

each from ``pruner.set_epoch`` to the last step, DataLoader worker start-up included. The
pair is repeated ``--repeats`` times with the formats interleaved; the table gives the median
of each and the median pruned/full ratio (target: at most 0.6 at prune 0.5). A second table
counts, per epoch, the samples whose bytes were read, the PNG decodes (both counted in the
workers, in shared memory), the bytes read (the PNG payloads; for WebDataset the whole tar
shards, which its reader streams through) and the optimizer steps.

    python benchmarks/large_data.py                    # 20k images, 2 workers: ~5 min on 2 cores
    python benchmarks/large_data.py --samples 5000 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dataprune import IndexedDataset, Pruner
from dataprune.integrations.images import ImageFolder, decode_image, decode_sample

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = {"folder": "PIL", "mds": "streaming", "litdata": "litdata", "webdataset": "webdataset"}


def available_formats() -> dict[str, str | None]:
    """format -> None if its library imports, else why not."""
    found = {}
    for fmt, module in LIBRARIES.items():
        try:
            __import__(module)
            found[fmt] = None
        except Exception as error:  # noqa: BLE001 - a library that fails to import is absent
            found[fmt] = f"{type(error).__name__}: {error}"[:120]
    return found


class Counted:
    """Decodes a sample and counts reads, decodes and payload bytes in shared memory (the
    counters are inherited by forked DataLoader workers)."""

    def __init__(self):
        self.reads = multiprocessing.Value("q", 0)
        self.decodes = multiprocessing.Value("q", 0)
        self.bytes = multiprocessing.Value("q", 0)

    def reset(self) -> None:
        for counter in (self.reads, self.decodes, self.bytes):
            counter.value = 0

    def _count(self, payload: bytes) -> None:
        with self.reads.get_lock():
            self.reads.value += 1
            self.decodes.value += 1
            self.bytes.value += len(payload)

    def __call__(self, sample):
        if isinstance(sample, bytes):  # the folder's decoder gets the file's bytes
            self._count(sample)
            return decode_image(sample)
        self._count(sample["png"])
        return decode_sample(sample)


def open_loader(fmt: str, root: Path, pruner: Pruner, counted: Counted, batch: int, workers: int):
    if fmt == "folder":
        dataset = IndexedDataset(ImageFolder(root / "folder", decode=counted))
    elif fmt == "mds":
        from streaming import StreamingDataset

        from dataprune.integrations.mosaic import MosaicIndexed

        dataset = MosaicIndexed(
            StreamingDataset(local=str(root / "mds"), batch_size=batch), counted
        )
    elif fmt == "litdata":
        import litdata

        from dataprune.integrations.litdata import LitDataIndexed

        dataset = LitDataIndexed(
            litdata.StreamingDataset(str(root / "litdata"), batch_decode=0), counted
        )
    else:
        from dataprune.integrations.webdataset import PrunedWebDataset

        urls = sorted(str(p) for p in (root / "webdataset").glob("*.tar"))
        return DataLoader(
            PrunedWebDataset(urls, pruner, counted), batch_size=batch, num_workers=workers
        )
    sampler = pruner.sampler()
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers)


def stored_bytes(fmt: str, root: Path) -> int:
    """Bytes a WebDataset epoch streams through: every shard, whatever is kept."""
    return sum(p.stat().st_size for p in (root / fmt).glob("*.tar"))


def run_pair(fmt, root, args, seed, counted) -> list[dict]:
    """A full epoch then a pruned one; time and counts of each."""
    pruner = Pruner(args.samples, args.method, args.prune, epochs=2, seed=seed, warmup_epochs=1)
    loader = open_loader(fmt, root, pruner, counted, args.batch, args.workers)
    model = torch.nn.Linear(28 * 28, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    epochs = []
    for epoch in range(2):
        counted.reset()
        start = time.perf_counter()
        pruner.set_epoch(epoch)
        steps = 0
        for idx, (x, y) in loader:
            logits = model(x.flatten(1).float().div_(255))
            loss = pruner.record(idx, F.cross_entropy(logits, y, reduction="none"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        seconds = time.perf_counter() - start
        read_bytes = stored_bytes(fmt, root) if fmt == "webdataset" else counted.bytes.value
        epochs.append(
            {
                "seconds": seconds,
                "reads": counted.reads.value,
                "decodes": counted.decodes.value,
                "bytes": read_bytes,
                "steps": steps,
                "size": pruner.epoch_size(epoch),
            }
        )
    return epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000, help="images written and read")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--method", default="epsilon-greedy")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="full/pruned pairs per format")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", help="where to write the shards (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(
            f"--workers must be >= 1 (decoding happens in DataLoader workers), got {args.workers}"
        )
    torch.set_num_threads(1)  # the workers and the step share the machine's cores

    formats = available_formats()
    usable = [f for f, why in formats.items() if why is None]
    for fmt, why in formats.items():
        if why is not None:
            print(f"skipping {fmt}: its library does not import here ({why})", file=sys.stderr)
    if "folder" not in usable:
        sys.exit("Pillow is needed: pip install 'dataprune[images]'")

    from dataprune.harness.data import load_dataset
    from dataprune.integrations.prepare import pixels, prepare

    data = load_dataset("fashion-mnist", args.data_dir, download=False, train_limit=args.samples)
    if data.num_train < args.samples:
        sys.exit(f"--samples={args.samples}, but the training set has {data.num_train}")
    root = Path(args.out or tempfile.mkdtemp(prefix="dataprune-large-"))
    start = time.perf_counter()
    prepare(
        root,
        pixels(data.train_x, data.mean, data.std),
        data.train_y.numpy(),
        usable,
        shard_bytes=1 << 20,
    )
    print(
        f"wrote {args.samples} PNG images as {', '.join(usable)} in "
        f"{time.perf_counter() - start:.1f} s under {root}",
        file=sys.stderr,
    )

    counted = Counted()
    runs: dict[str, list[list[dict]]] = {f: [] for f in usable}
    for repeat in range(args.repeats):
        for fmt in usable:  # interleaved, so that machine noise hits every format alike
            runs[fmt].append(run_pair(fmt, root, args, repeat, counted))
            full, pruned = runs[fmt][-1]
            print(
                f"repeat {repeat} {fmt}: full {full['seconds']:.2f} s, pruned "
                f"{pruned['seconds']:.2f} s",
                file=sys.stderr,
            )

    print(
        f"\n{args.samples} Fashion-MNIST PNG images, {args.workers} DataLoader workers, batch "
        f"{args.batch}, {args.method} at prune {args.prune}, median of {args.repeats}\n"
    )
    print("| format | full epoch (s) | pruned epoch (s) | pruned / full |")
    print("| --- | ---: | ---: | ---: |")
    for fmt, pairs in runs.items():
        full = statistics.median(p[0]["seconds"] for p in pairs)
        pruned = statistics.median(p[1]["seconds"] for p in pairs)
        ratio = statistics.median(p[1]["seconds"] / p[0]["seconds"] for p in pairs)
        print(f"| {fmt} | {full:.2f} | {pruned:.2f} | {ratio:.2f} |")
    print("\nPer epoch, full -> pruned (the same in every repeat):\n")
    print("| format | samples read | PNG decodes | bytes read (MB) | steps |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for fmt, pairs in runs.items():
        full, pruned = pairs[0]
        cells = [f"{full[key]} -> {pruned[key]}" for key in ("reads", "decodes")]
        cells.append(f"{full['bytes'] / 1e6:.2f} -> {pruned['bytes'] / 1e6:.2f}")
        cells.append(f"{full['steps']} -> {pruned['steps']}")
        print(f"| {fmt} | " + " | ".join(cells) + " |")
    if not args.out:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
