"""The README's quickstart as a runnable script: a plain PyTorch loop on real Fashion-MNIST.

    python examples/plain_loop.py --method ucb --prune 0.5
    python examples/plain_loop.py --all --train-limit 5000     # every method, a slice

Only the lines marked ``# dataprune`` differ from an ordinary training loop, and they are the
same for every method.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dataprune
from dataprune.harness.data import load_dataset
from dataprune.policies import DEFAULT_METHOD


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

    def sample_losses(batch):  # one loss per sample
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none")

    for epoch in range(epochs):
        pruner.set_epoch(epoch)  # dataprune
        for idx, batch in loader:
            loss = pruner.loss(idx, batch, sample_losses)  # dataprune
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        pruner.end_epoch(model, loader, sample_losses)  # dataprune

    with torch.no_grad():
        accuracy = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
    return {"method": method, "accuracy": accuracy, **pruner.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=dataprune.methods())
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
            f"{r['method']:>18}: accuracy {100 * r['accuracy']:.1f}%, "
            f"pruned {100 * r['fraction_pruned']:.0f}% of samples, "
            f"forwarded {r['samples_forwarded']:,}, back-propagated "
            f"{r['samples_backpropagated']:,}, selection {r['selection_seconds']:.3f} s, "
            f"record {r['record_seconds']:.3f} s"
        )


if __name__ == "__main__":
    main()
