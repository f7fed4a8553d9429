"""One Hugging Face Trainer run of examples/hf_trainer_lm.py that writes what each rank trained.

Run by tests/test_hf.py, in-process or under ``torchrun --nproc-per-node 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import records  # beside this file: on sys.path when run as a script or by the tests
import torch
from transformers import TrainerCallback

from dataprune.frameworks.hf import DataPruningTrainer

ROOT = Path(__file__).resolve().parents[2]


def load_example():
    return records.load_example("hf_trainer_lm")


class StopAfter(TrainerCallback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if round(state.epoch) == self.epoch + 1:
            control.should_training_stop = True


class AuditedTrainer(DataPruningTrainer):
    """Notes each epoch's subset and the indices this rank trained."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trained: dict[int, list[int]] = {}
        self.subsets: dict[int, list[int]] = {}

    def compute_loss(self, model, inputs, *args, **kwargs):
        if "index" in inputs and model.training:
            epoch = self.pruner.epoch
            self.subsets[epoch] = self.pruner.indices().tolist()
            self.trained.setdefault(epoch, []).extend(inputs["index"].tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


def run(args) -> None:
    example = load_example()
    items = example.byte_sequences(args.length, args.limit * 4)
    if args.fixed_length:  # no padding: the Trainer's token mean is then the mean per sequence
        items = [item for item in items if len(item["input_ids"]) == args.length]
    items = items[: args.limit]
    out = Path(args.out)
    options = {
        "logging_steps": 1,
        "seed": 3,
        "gradient_accumulation_steps": args.accumulate,
        "per_device_train_batch_size": args.batch_size,
        "save_strategy": "epoch",
        "disable_tqdm": True,
        "train_sampling_strategy": "sequential" if args.no_shuffle else "random",
    }
    targs = example.training_args(str(out), args.epochs, **options)
    common = {
        "model": example.tiny_gpt2(args.length),
        "args": targs,
        "train_dataset": items,
        "data_collator": example.pad_collate,
    }
    if args.plain:
        trainer = example.Trainer(**common)
    else:
        pruning = {"method": args.method, "prune": args.prune, **records.pruner_options(args)}
        trainer = AuditedTrainer(pruning=pruning, shuffle=not args.no_shuffle, **common)
    if args.stop_after is not None:
        trainer.add_callback(StopAfter(args.stop_after))
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    rank = trainer.args.process_index
    record = {
        "trained": getattr(trainer, "trained", {}),
        "subsets": getattr(trainer, "subsets", {}),
        "steps": trainer.state.global_step,
        "planned_steps": trainer.state.max_steps,
        "total_steps": None
        if args.plain
        else trainer.pruner.total_steps(args.batch_size, accumulate=args.accumulate),
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "metrics": [e for e in trainer.state.log_history if "dataprune/samples_used" in e],
        "params": [p.detach().flatten()[:50].tolist() for p in trainer.model.parameters()][:4],
    }
    name = f"rank{rank}{'-resumed' if args.resume else ''}.json"
    (out / name).write_text(json.dumps(record))
    records.finish()


def parse(argv=None):
    parser = records.job_parser(limit=128, batch_size=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--fixed-length", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(parse())
