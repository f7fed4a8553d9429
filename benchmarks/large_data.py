"""Decode-bound loading: what pruning saves when samples live on disk as PNG images.

Writes the first ``--samples`` Fashion-MNIST training images (from ../shared/data, or
``--data-dir``), upscaled to ``--size`` x ``--size`` pixels (bilinear, so that decoding costs
what a photograph's does), as PNG files into an image folder and into each streaming format
whose library imports here (MosaicML Streaming MDS, LitData, WebDataset), with each library's
own writer. Then, for each format, it trains a linear classifier (a cheap step, so loading
dominates) on batches that ``--workers`` DataLoader workers read and decode, through the
harness's reader (:class:`dataprune.harness.data.disk.EpochReader`: persistent workers for the
indexable formats, WebDataset's anew each epoch). A ``Pruner(..., warmup_epochs=2)`` gives
three epochs:

- epoch 0, full, untimed: starts the persistent workers and fills the page cache, so the timed
  epochs both read from memory (decoding, not the disk, is the cost measured);
- epoch 1, full, and epoch 2, pruned at ``--prune``: each timed from ``pruner.set_epoch`` to the
  last step, worker start-up included where the format starts workers each epoch.

The triple is repeated ``--repeats`` times with the formats interleaved, so that noise on a
shared machine hits every format alike; the ratio is the median of the pruned/full ratios,
each measured side by side in one repeat. Workers count, in shared memory, the samples whose
bytes were read, the PNG decodes and the bytes read (the PNG payloads; for WebDataset the whole
tar shards, which its reader streams through), and the loop counts optimizer steps.

The results go into ``--json`` (default ``benchmarks/results/large-data/<formats>.json``), from
which ``benchmarks/report/`` writes the docs/RESULTS.md section; the same section is
printed here. MDS needs its own environment (see .ci/run), so it is a second run, beside the
image folder again:

    python benchmarks/large_data.py                  # 6k images of 224 px, 5 repeats: ~2.5 min
    python benchmarks/large_data.py --quick          # 2k images of 112 px, 1 repeat: a look
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dataprune import Pruner
from dataprune.harness.data.disk import Decode, EpochReader

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "large-data"
LIBRARIES = {"folder": "PIL", "mds": "streaming", "litdata": "litdata", "webdataset": "webdataset"}
sys.path.insert(0, str(ROOT / "benchmarks"))


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


class Counted(Decode):
    """The harness's decode, counting reads, decodes and payload bytes in shared memory (the
    counters are inherited by forked DataLoader workers)."""

    def __init__(self, shape, where):
        super().__init__(shape, where)
        self.reads = multiprocessing.Value("q", 0)
        self.decodes = multiprocessing.Value("q", 0)
        self.bytes = multiprocessing.Value("q", 0)

    def reset(self) -> None:
        for counter in (self.reads, self.decodes, self.bytes):
            counter.value = 0

    def __call__(self, sample):
        payload = sample if isinstance(sample, bytes) else sample["png"]
        with self.reads.get_lock():
            self.reads.value += 1
            self.decodes.value += 1
            self.bytes.value += len(payload)
        return super().__call__(sample)


def upscaled(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 N x H x W images resized to N x size x size (bilinear)."""
    return np.stack(
        [np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in images]
    )


def run_triple(fmt: str, root: Path, args, seed: int, counted: Counted) -> list[dict]:
    """A warm-up epoch, a full one and a pruned one; time and counts of the last two."""
    pruner = Pruner(args.samples, args.method, args.prune, epochs=3, seed=seed, warmup_epochs=2)
    folder = root / fmt / "train"
    reader = EpochReader(fmt, folder, pruner.batch_sampler(args.batch), counted, args.workers)
    model = torch.nn.Linear(args.size * args.size, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    epochs = []
    for epoch in range(3):
        counted.reset()
        start = time.perf_counter()
        pruner.set_epoch(epoch)
        steps = 0
        for idx, x, y in reader:
            logits = model(x.flatten(1).float().div_(255))
            loss = pruner.record(idx, F.cross_entropy(logits, y, reduction="none"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        seconds = time.perf_counter() - start
        shards = sum(p.stat().st_size for p in folder.glob("*.tar"))
        if epoch:
            epochs.append(
                {
                    "seconds": seconds,
                    "reads": counted.reads.value,
                    "decodes": counted.decodes.value,
                    "bytes": shards if fmt == "webdataset" else counted.bytes.value,
                    "steps": steps,
                    "samples": pruner.epoch_size(epoch),
                }
            )
    return epochs


def summarise(runs: dict[str, list[list[dict]]]) -> dict[str, dict]:
    """Per format: each repeat's full and pruned seconds, the median ratio, and the counts."""
    out = {}
    for fmt, triples in runs.items():
        full = [t[0]["seconds"] for t in triples]
        pruned = [t[1]["seconds"] for t in triples]
        out[fmt] = {
            "full_seconds": full,
            "pruned_seconds": pruned,
            "ratio": statistics.median(p / f for p, f in zip(pruned, full, strict=True)),
            "full": {k: v for k, v in triples[0][0].items() if k != "seconds"},
            "pruned": {k: v for k, v in triples[0][1].items() if k != "seconds"},
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000, help="images written and read")
    parser.add_argument(
        "--size", type=int, default=224, help="image side in pixels after upscaling"
    )
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--method", default="epsilon-greedy")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="full/pruned pairs per format")
    parser.add_argument("--quick", action="store_true", help="2000 images of 112 px, 1 repeat")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", help="where to write the shards (default: a temporary folder)")
    parser.add_argument("--json", help="the results file (default: under benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.size, args.repeats = 2000, 112, 1
    for name, low in (("workers", 1), ("samples", 1), ("size", 8), ("repeats", 1), ("batch", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if not 0 < args.prune < 1:
        parser.error(f"--prune must be in (0, 1), got {args.prune}")
    torch.set_num_threads(1)  # the workers and the step share the machine's cores

    formats = available_formats()
    usable = [f for f, why in formats.items() if why is None]
    for fmt, why in formats.items():
        if why is not None:
            print(f"skipping {fmt}: its library does not import here ({why})", file=sys.stderr)
    if "folder" not in usable:
        sys.exit("Pillow is needed: pip install 'dataprune[images]'")

    from dataprune.formats.prepare import pixels, prepare
    from dataprune.harness.data import load_dataset

    data = load_dataset("fashion-mnist", args.data_dir, download=False, train_limit=args.samples)
    if data.num_train < args.samples:
        sys.exit(f"--samples={args.samples}, but the training set has {data.num_train}")
    root = Path(args.out or tempfile.mkdtemp(prefix="dataprune-large-"))
    start = time.perf_counter()
    images = upscaled(pixels(data.train_x, data.mean, data.std), args.size)
    prepare(root, images, data.train_y.numpy(), usable, shard_bytes=1 << 22, split="train")
    print(
        f"wrote {args.samples} PNG images of {args.size} px as {', '.join(usable)} in "
        f"{time.perf_counter() - start:.1f} s under {root}",
        file=sys.stderr,
    )

    counted = Counted((1, args.size, args.size), root)
    runs: dict[str, list[list[dict]]] = {f: [] for f in usable}
    for repeat in range(args.repeats):
        for fmt in usable:  # interleaved, so that machine noise hits every format alike
            runs[fmt].append(run_triple(fmt, root, args, repeat, counted))
            full, pruned = runs[fmt][-1]
            print(
                f"repeat {repeat} {fmt}: full {full['seconds']:.2f} s, pruned "
                f"{pruned['seconds']:.2f} s",
                file=sys.stderr,
            )
    settings = {
        key: getattr(args, key)
        for key in ("samples", "size", "prune", "method", "workers", "batch", "repeats")
    }
    settings |= {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    result = {"settings": settings, "formats": summarise(runs)}
    path = Path(args.json) if args.json else RESULTS / f"{'-'.join(usable)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")

    from report.other_benchmarks import large_data_section

    print(large_data_section(path.parent, files=[path]))
    print(f"\nresults written to {path}", file=sys.stderr)
    if not args.out:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
