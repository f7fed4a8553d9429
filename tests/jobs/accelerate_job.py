"""A plain Accelerate loop on real Fashion-MNIST that writes what each rank trained to JSON.

Run by tests/test_accelerate.py, in-process or under ``torchrun --nproc-per-node 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import records  # beside this file: on sys.path when run as a script or by the tests
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

import dataprune
from dataprune.frameworks.accelerate import dataloader
from dataprune.harness.data import load_dataset
from dataprune.harness.data.locate import resolve_data_dir
from dataprune.harness.models import build_model

ROOT = Path(__file__).resolve().parents[2]
DATA = resolve_data_dir()  # $DATAPRUNE_DATA_DIR, else ../shared/data


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=True)
    data = load_dataset("fashion-mnist", DATA, train_limit=args.limit, test_limit=10)
    train_set = TensorDataset(data.train_x, data.train_y)
    torch.manual_seed(0)
    model = build_model("mlp", 1, 10, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = None
    if args.plain:
        loader = accelerator.prepare(DataLoader(train_set, batch_size=args.batch_size))
    else:
        options = records.pruner_options(args)
        if args.method == "static-score":
            options["scores"] = torch.arange(float(args.limit))
        pruner = dataprune.Pruner(
            len(train_set), args.method, args.prune, args.epochs, seed=3, **options
        )
        loader = dataloader(accelerator, pruner, train_set, args.batch_size, not args.no_shuffle)
        accelerator.register_for_checkpointing(pruner)
    model, opt = accelerator.prepare(model, opt)
    start = 0
    if args.resume:
        accelerator.load_state(out / "state")
        start = pruner.epoch + 1
    record = {"trained": {}, "subsets": {}, "losses": [], "steps": 0}

    def sample_losses(batch):
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none")

    for epoch in range(start, args.epochs):
        trained = record["trained"].setdefault(epoch, [])
        loader.set_epoch(epoch)  # Accelerate's epoch counter, forwarded to the pruner
        if pruner is not None:
            record["subsets"][epoch] = pruner.indices().tolist()
        for batch in loader:
            if pruner is None:
                x, y = batch
                loss = F.cross_entropy(model(x), y)
            else:
                index, batch = batch
                trained += index.tolist()
                loss = pruner.loss(index, batch, sample_losses)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            record["losses"].append(loss.item())
            record["steps"] += 1
        if pruner is not None:
            pruner.end_epoch(model, loader, sample_losses)
        if epoch == args.stop_after:
            accelerator.save_state(out / "state")
            break
    if pruner is not None:
        record["total_steps"] = record["planned_steps"] = pruner.total_steps(args.batch_size)
        record["summary"] = pruner.summary()
    name = f"rank{accelerator.process_index}{'-resumed' if args.resume else ''}.json"
    (out / name).write_text(json.dumps(record))
    records.finish()


def parse(argv=None):
    parser = records.job_parser(limit=512, batch_size=32)
    return parser.parse_args(argv)


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(parse())
