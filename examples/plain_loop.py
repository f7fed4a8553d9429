"""The README's quickstart as a runnable script: a plain PyTorch loop on real Fashion-MNIST.

    python examples/plain_loop.py --method ucb --prune 0.5
    python examples/plain_loop.py --all --train-limit 5000     # every method, a slice

Only the lines marked ``# dataprune`` differ from an ordinary training loop.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dataprune
from dataprune.harness.data import load_dataset


def train_one(method: str, prune: float, epochs: int, data, batch_size: int = 128) -> dict:
    torch.manual_seed(0)
    train_set = TensorDataset(data.train_x, data.train_y)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    options = {"scores": torch.rand(len(train_set))} if method == "static-score" else {}
    pruner = dataprune.Pruner(
        len(train_set), method=method, prune=prune, epochs=epochs, **options
    )  # dataprune
    loader = DataLoader(
        dataprune.IndexedDataset(train_set),  # dataprune
        batch_size=batch_size,
        sampler=pruner.sampler(),  # dataprune
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=0.1,
        total_steps=pruner.total_steps(batch_size),  # dataprune
    )
    for epoch in range(epochs):
        pruner.set_epoch(epoch)  # dataprune
        for idx, (x, y) in loader:
            logits = model(x)
            losses = F.cross_entropy(logits, y, reduction="none")
            loss = pruner.record(idx, losses, **predictions(pruner, logits, y))  # dataprune
            if pruner.policy.selects_in_batch:  # selective-backprop: the highest losses only
                loss = losses[pruner.select_batch(losses)].mean()  # dataprune
            opt.zero_grad()
            loss.backward()
            scaled_step(opt, pruner.lr_scale())  # dataprune (opt.step() at 1/(1-F) for kakurenbo)
            sched.step()
        if pruner.policy.uses_predictions:  # dataprune: kakurenbo re-measures hidden samples
            refresh_hidden(pruner, model, data)

    with torch.no_grad():
        accuracy = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
    return {"method": method, "accuracy": accuracy, **pruner.summary()}


def predictions(pruner: dataprune.Pruner, logits: torch.Tensor, y: torch.Tensor) -> dict:
    """``record``'s ``correct=`` and ``confidence=`` for a method that reads them (kakurenbo)."""
    if not pruner.policy.uses_predictions:
        return {}
    correct, confidence = dataprune.classification_predictions(logits.detach(), y)
    return {"correct": correct, "confidence": confidence}


def scaled_step(opt: torch.optim.Optimizer, scale: float) -> None:
    """``opt.step()`` at ``scale`` times the schedule's learning rates, which stay untouched."""
    rates = [group["lr"] for group in opt.param_groups]
    for group, lr in zip(opt.param_groups, rates, strict=True):
        group["lr"] = lr * scale
    opt.step()
    for group, lr in zip(opt.param_groups, rates, strict=True):
        group["lr"] = lr


@torch.no_grad()
def refresh_hidden(pruner: dataprune.Pruner, model: nn.Module, data, batch_size: int = 1024):
    """Record the losses of the samples hidden this epoch, as KAKURENBO does after each epoch,
    so that one whose loss grew trains again. This model has no BatchNorm; with it, restore its
    buffers afterwards, or the hidden (easiest) samples set its running statistics."""
    for idx in pruner.hidden_indices().split(batch_size):
        logits = model(data.train_x[idx])
        losses = F.cross_entropy(logits, data.train_y[idx], reduction="none")
        pruner.record(idx, losses, **predictions(pruner, logits, data.train_y[idx]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="epsilon-greedy", choices=dataprune.methods())
    parser.add_argument("--all", action="store_true", help="run every method")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data = load_dataset(
        "fashion-mnist", args.data_dir, train_limit=args.train_limit, test_limit=2000
    )
    for method in dataprune.methods() if args.all else [args.method]:
        r = train_one(method, args.prune, args.epochs, data)
        print(
            f"{r['method']:>15}: accuracy {100 * r['accuracy']:.1f}%, "
            f"pruned {100 * r['fraction_pruned']:.0f}% of samples, "
            f"selection {r['selection_seconds']:.3f} s, record {r['record_seconds']:.3f} s"
        )


if __name__ == "__main__":
    main()
