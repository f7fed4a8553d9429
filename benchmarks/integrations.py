"""What each framework integration costs and saves: Fashion-MNIST, side by side in one run.

For each of the plain loop, Lightning, the Hugging Face Trainer and Accelerate, two runs of the
same epochs on the same data and model (the harness's ``cnn``, batch 128):

- ``alone``: the framework without dataprune, on full data;
- ``pruned``: the same framework with dataprune's integration, ``--method`` at ``--prune``.

After one untimed epoch of each run (first calls, thread pools and caches warm up), each run
is timed twice. ``wall`` is the whole ``fit``/``train`` call (framework start-up,
selection, every step); evaluation follows and is timed apart. The per-step time is each
epoch's window from its first step's start to its last step's end, summed and divided by the
steps taken: loading and ``record()`` count, the framework's fixed work between epochs does not
(a pruned run has half the steps to spread it over). The integration's per-step overhead is
``pruned / alone - 1`` against the framework's own loop; since two noisy timings make that
difference, the time inside ``record()`` and selection (``Pruner.summary()``) is also given as
a share of the pruned run's step time, measured directly. The integrations and the run order within
each are interleaved over ``--repeats`` so that a shared machine's noise hits all alike; the
ratios are medians of ratios measured side by side in one repeat.

    python benchmarks/integrations.py                 # 20k images, 3 epochs, 3 repeats
    python benchmarks/integrations.py --quick         # 4k images, 2 epochs, 1 repeat

Results go into ``--json`` (default ``benchmarks/results/integrations/fashion-mnist.json``);
``benchmarks/report/`` writes their docs/RESULTS.md section, also printed here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset
from transformers import Trainer, TrainerCallback, TrainingArguments

import dataprune
from dataprune.frameworks.accelerate import dataloader
from dataprune.frameworks.hf import DataPruningTrainer
from dataprune.frameworks.lightning import DataPruning
from dataprune.harness.data import load_dataset
from dataprune.harness.models import build_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report.other_benchmarks import integrations_section  # noqa: E402

INTEGRATIONS = ("plain", "lightning", "hf", "accelerate")
BATCH = 128
LR = 0.05


class StepClock:
    """Each epoch's window from its first step's start to its last step's end, and the steps in
    them: the time per step, loading included, the frameworks' work between epochs not."""

    def __init__(self):
        self.epoch: int | None = None
        self.start = self.end = self.spans = 0.0
        self.steps = 0

    def begin(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.spans += self.end - self.start
            self.epoch, self.start = epoch, time.perf_counter()

    def done(self) -> None:
        self.steps += 1
        self.end = time.perf_counter()

    def per_step(self) -> float:
        return (self.spans + self.end - self.start) / self.steps


#: What a run gives back: the trained model, and its Pruner (None when the framework ran alone).
Trained = tuple[torch.nn.Module, "dataprune.Pruner | None"]


def batch_loss(model, batch, recorder) -> torch.Tensor:
    """The loss of a ``(x, y)`` batch; with a recorder (a Pruner, or the Lightning callback),
    of an ``(index, (x, y))`` batch through its ``record``."""
    if recorder is None:
        x, y = batch
        return F.cross_entropy(model(x), y)
    index, (x, y) = batch
    return recorder.record(index, F.cross_entropy(model(x), y, reduction="none"))


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True)


def run_plain(train_set, pruner_args, epochs, clock) -> Trained:
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 28)
    opt = sgd(model)
    pruner = None
    if pruner_args is None:
        loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    else:
        pruner = dataprune.Pruner(len(train_set), epochs=epochs, **pruner_args)
        loader = DataLoader(dataprune.IndexedDataset(train_set), BATCH, sampler=pruner.sampler())
    for epoch in range(epochs):
        if pruner is not None:
            pruner.set_epoch(epoch)
        for batch in loader:
            clock.begin(epoch)
            loss = batch_loss(model, batch, pruner)
            opt.zero_grad()
            loss.backward()
            opt.step()
            clock.done()
    return model, pruner


def run_lightning(train_set, pruner_args, epochs, clock) -> Trained:
    pruning = None if pruner_args is None else DataPruning(**pruner_args)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build_model("cnn", 1, 10, 28)

        def train_dataloader(self):
            if pruning is None:
                return DataLoader(train_set, batch_size=BATCH, shuffle=True)
            return pruning.dataloader(train_set, batch_size=BATCH)

        def training_step(self, batch, batch_idx):
            return batch_loss(self.net, batch, pruning)

        def on_train_batch_start(self, batch, batch_idx):
            clock.begin(self.current_epoch)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            clock.done()

        def configure_optimizers(self):
            return sgd(self)

    torch.manual_seed(0)
    module = Module()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[] if pruning is None else [pruning],
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    return module.net, None if pruning is None else pruning.pruner


class ImageClassifier(torch.nn.Module):
    """The cnn with the Hugging Face calling convention: dict inputs, logits and loss out."""

    def __init__(self):
        super().__init__()
        self.net = build_model("cnn", 1, 10, 28)

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


class DictImages(torch.utils.data.Dataset):
    def __init__(self, train_set):
        self.x, self.y = train_set.tensors

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def run_hf(train_set, pruner_args, epochs, clock, out: Path) -> Trained:
    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.begin(int(state.epoch))

        def on_step_end(self, args, state, control, **kwargs):
            clock.done()

    torch.manual_seed(0)
    model = ImageClassifier()
    args = TrainingArguments(
        str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="sgd",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        logging_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
    )
    common = {"model": model, "args": args, "train_dataset": DictImages(train_set)}
    if pruner_args is None:
        trainer = Trainer(**common, callbacks=[Clock()])
    else:
        trainer = DataPruningTrainer(**common, callbacks=[Clock()], pruning=pruner_args)
    trainer.train()
    return model.net, getattr(trainer, "pruner", None)


def run_accelerate(train_set, pruner_args, epochs, clock) -> Trained:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 28)
    opt = sgd(model)
    pruner = None
    if pruner_args is None:
        loader = accelerator.prepare(DataLoader(train_set, batch_size=BATCH, shuffle=True))
    else:
        pruner = dataprune.Pruner(len(train_set), epochs=epochs, **pruner_args)
        loader = dataloader(accelerator, pruner, train_set, BATCH)
    model, opt = accelerator.prepare(model, opt)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            clock.begin(epoch)
            loss = batch_loss(model, batch, pruner)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            clock.done()
    return accelerator.unwrap_model(model), pruner


@torch.no_grad()
def accuracy(model: torch.nn.Module, data) -> float:
    model.eval()
    logits = torch.cat([model(x) for x in data.test_x.split(1000)])
    return (logits.argmax(1) == data.test_y).float().mean().item()


def measure(name: str, pruned: bool, data, args, out: Path) -> dict:
    train_set = TensorDataset(data.train_x, data.train_y)
    pruner_args = {"method": args.method, "prune": args.prune} if pruned else None
    clock = StepClock()
    runners: dict[str, Callable[[], Trained]] = {
        "plain": lambda: run_plain(train_set, pruner_args, args.epochs, clock),
        "lightning": lambda: run_lightning(train_set, pruner_args, args.epochs, clock),
        "hf": lambda: run_hf(train_set, pruner_args, args.epochs, clock, out / "hf"),
        "accelerate": lambda: run_accelerate(train_set, pruner_args, args.epochs, clock),
    }
    start = time.perf_counter()
    model, pruner = runners[name]()
    wall = time.perf_counter() - start
    start = time.perf_counter()
    acc = accuracy(model, data)
    result = {
        "wall_seconds": wall,
        "eval_seconds": time.perf_counter() - start,
        "per_step_seconds": clock.per_step(),
        "steps": clock.steps,
        "accuracy": acc,
    }
    if pruner is not None:  # measured directly, so the machine's noise does not blur it
        summary = pruner.summary()
        machinery = summary["record_seconds"] + summary["selection_seconds"]
        result["machinery_share"] = machinery / (clock.steps * clock.per_step())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", default=",".join(INTEGRATIONS))
    parser.add_argument("--method", default="ucb")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4k images, 2 epochs, 1 repeat")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument(
        "--json", default=str(ROOT / "benchmarks/results/integrations/fashion-mnist.json")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.epochs, args.repeats = 4000, 2, 1
    names = args.integrations.split(",")
    unknown = sorted(set(names) - set(INTEGRATIONS))
    if unknown:
        parser.error(f"--integrations: {unknown} not among {list(INTEGRATIONS)}")
    torch.set_num_threads(os.cpu_count() or 1)
    data = load_dataset("fashion-mnist", args.data_dir, train_limit=args.samples, test_limit=2000)
    out = Path(tempfile.mkdtemp())  # the HF Trainer's output_dir; it saves nothing
    runs: dict[str, dict[str, list[dict]]] = {n: {"alone": [], "pruned": []} for n in names}
    warm_up = argparse.Namespace(**{**vars(args), "epochs": 1})
    for name in names:  # untimed: first calls, thread pools and allocator caches warm up
        for pruned in (False, True):
            measure(name, pruned, data, warm_up, out)
    for repeat in range(args.repeats):
        for name in names:
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for pruned in order:
                r = measure(name, pruned, data, args, out)
                runs[name]["pruned" if pruned else "alone"].append(r)
                print(
                    f"repeat {repeat} {name:>10} {'pruned' if pruned else 'alone':>6}: "
                    f"{r['wall_seconds']:.1f} s, {r['steps']} steps, "
                    f"{1e3 * r['per_step_seconds']:.1f} ms/step, accuracy {r['accuracy']:.2%}",
                    flush=True,
                )
    results = {}
    for name, pair in runs.items():
        alone, pruned = pair["alone"], pair["pruned"]
        results[name] = {
            "runs": pair,
            "wall_ratio": statistics.median(
                p["wall_seconds"] / a["wall_seconds"] for a, p in zip(alone, pruned, strict=True)
            ),
            "machinery_share": statistics.median(p["machinery_share"] for p in pruned),
            "step_overhead": statistics.median(
                p["per_step_seconds"] / a["per_step_seconds"] - 1
                for a, p in zip(alone, pruned, strict=True)
            ),
        }
    record = {
        "settings": {
            "samples": args.samples,
            "epochs": args.epochs,
            "batch": BATCH,
            "method": args.method,
            "prune": args.prune,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        },
        "integrations": results,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(integrations_section(path.parent))


if __name__ == "__main__":
    main()
