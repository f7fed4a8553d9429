"""The Fashion-MNIST CNN under PyTorch Lightning, with dynamic data pruning as one Callback.

    python examples/lightning_fmnist.py --method ucb --prune 0.5
    python examples/lightning_fmnist.py --method full --plain   # Lightning alone, no dataprune
    python examples/lightning_fmnist.py --devices 2             # DDP on 2 CPU processes (gloo)

Only the lines marked ``# dataprune`` differ from an ordinary LightningModule.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dataprune.frameworks.lightning import DataPruning
from dataprune.harness.data import load_dataset
from dataprune.harness.models import build_model


class FashionModel(pl.LightningModule):
    """The harness's ``cnn`` with one-cycle SGD sized by ``estimated_stepping_batches``."""

    def __init__(self, data, pruning: DataPruning | None, batch_size: int = 128, lr: float = 0.1):
        super().__init__()
        self.data, self.pruning, self.batch_size, self.lr = data, pruning, batch_size, lr
        self.net = build_model("cnn", 1, 10, 28)
        self.losses: list[float] = []  # per step, to compare runs

    def train_dataloader(self):
        train_set = TensorDataset(self.data.train_x, self.data.train_y)
        if self.pruning is None:
            return DataLoader(train_set, batch_size=self.batch_size, shuffle=True)
        return self.pruning.dataloader(train_set, batch_size=self.batch_size)  # dataprune

    def sample_losses(self, batch):
        x, y = batch
        return F.cross_entropy(self.net(x), y, reduction="none")

    def training_step(self, batch, batch_idx):
        if self.pruning is None:
            loss = self.sample_losses(batch).mean()
        else:
            index, batch = batch  # dataprune
            loss = self.pruning.loss(index, batch, self.sample_losses)  # dataprune
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, nesterov=True)
        steps = self.trainer.estimated_stepping_batches  # the pruned run's exact step count
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        return [opt], [{"scheduler": sched, "interval": "step"}]

    @torch.no_grad()
    def accuracy(self) -> float:
        self.net.eval()
        logits = torch.cat([self.net(x) for x in self.data.test_x.split(1000)])
        return (logits.argmax(1) == self.data.test_y).float().mean().item()


def make_trainer(args, callbacks: list, **trainer_options) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        callbacks=callbacks,
        use_distributed_sampler=False,  # dataprune: its sampler shards already
        deterministic=True,
        enable_checkpointing=False,
        enable_model_summary=False,
        logger=False,
        **trainer_options,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=None, help="default: the recommended method")
    parser.add_argument("--prune", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--plain", action="store_true", help="Lightning alone, no dataprune")
    args = parser.parse_args()
    data = load_dataset("fashion-mnist", args.data_dir, train_limit=args.train_limit)
    pl.seed_everything(0, verbose=False)
    chosen = {k: v for k, v in (("method", args.method), ("prune", args.prune)) if v is not None}
    pruning = None if args.plain else DataPruning(**chosen)
    model = FashionModel(data, pruning)
    trainer = make_trainer(args, [] if pruning is None else [pruning])
    trainer.fit(model)
    if trainer.is_global_zero:
        pruned = 0.0 if pruning is None else pruning.pruner.summary()["fraction_pruned"]
        print(f"accuracy {model.accuracy():.2%}, {trainer.global_step} steps, pruned {pruned:.0%}")


if __name__ == "__main__":
    main()
