"""One Lightning run of examples/lightning_fmnist.py that writes what each rank trained to JSON.

Run by tests/test_lightning.py, in-process or as a script (``--devices 2``: Lightning's DDP
launcher starts the second process by running this script again).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import records  # beside this file: on sys.path when run as a script or by the tests

from dataprune.harness.data import load_dataset
from dataprune.harness.data.locate import resolve_data_dir

ROOT = Path(__file__).resolve().parents[2]
DATA = resolve_data_dir()  # $DATAPRUNE_DATA_DIR, else ../shared/data


def load_example():
    return records.load_example("lightning_fmnist")


class Audit(pl.Callback):
    """Records each epoch's subset and the indices this rank trained; can stop after an epoch."""

    def __init__(self, pruning, out: Path, stop_after: int | None):
        self.pruning, self.out, self.stop_after = pruning, out, stop_after
        self.trained: dict[int, list[int]] = {}
        self.subsets: dict[int, list[int]] = {}

    def on_train_start(self, trainer, pl_module):
        self.estimated = trainer.estimated_stepping_batches

    def on_train_epoch_start(self, trainer, pl_module):
        self.trained[trainer.current_epoch] = []
        if self.pruning is not None:
            self.subsets[trainer.current_epoch] = self.pruning.pruner.indices().tolist()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.pruning is not None:
            self.trained[trainer.current_epoch] += batch[0].tolist()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.stop_after:
            trainer.save_checkpoint(self.out / "stop.ckpt")
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        pruner = None if self.pruning is None else self.pruning.pruner
        record = {
            "trained": self.trained,
            "subsets": self.subsets,
            "steps": trainer.global_step,
            "planned_steps": self.estimated,
            "total_steps": None
            if pruner is None
            else pruner.total_steps(
                pl_module.batch_size, accumulate=trainer.accumulate_grad_batches
            ),
            "losses": pl_module.losses,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        }
        name = f"rank{trainer.global_rank}{'-resumed' if self.stop_after == -1 else ''}.json"
        (self.out / name).write_text(json.dumps(record))


def run(args) -> None:
    example = load_example()
    data = load_dataset("fashion-mnist", DATA, train_limit=args.limit, test_limit=100)
    pl.seed_everything(0, verbose=False)
    pruning = None
    if not args.plain:
        pruning = example.DataPruning(
            method=args.method, prune=args.prune, seed=3, **records.pruner_options(args)
        )
    model = example.FashionModel(data, pruning, batch_size=args.batch_size)
    if args.no_shuffle:
        train_set = example.TensorDataset(data.train_x, data.train_y)
        if pruning is None:
            model.train_dataloader = lambda: example.DataLoader(train_set, args.batch_size)
        else:
            model.train_dataloader = lambda: pruning.dataloader(train_set, args.batch_size, False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    audit = Audit(pruning, out, -1 if args.resume else args.stop_after)
    callbacks = [audit] if pruning is None else [pruning, audit]
    trainer = example.make_trainer(
        args, callbacks, accumulate_grad_batches=args.accumulate, enable_progress_bar=False
    )
    trainer.fit(model, ckpt_path=out / "stop.ckpt" if args.resume else None)


def parse(argv=None):
    parser = records.job_parser(limit=512, batch_size=32)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--accumulate", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse())
