"""A small causal LM trained with the Hugging Face Trainer on Python's own source, with pruning.

    python examples/hf_trainer_lm.py --method ucb --prune 0.5
    python examples/hf_trainer_lm.py --plain                # the Trainer alone, no dataprune
    torchrun --nproc-per-node 2 examples/hf_trainer_lm.py   # 2 CPU processes (gloo)

The corpus is the standard library's ``.py`` files, cut into sequences of byte tokens, so it
needs no download and no tokenizer; each file's last sequence is shorter and is padded. The
model is a tiny GPT-2, randomly initialised. Only the lines marked ``# dataprune`` differ from
an ordinary Trainer script.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from dataprune.frameworks.hf import DataPruningTrainer

PAD = 256  # byte tokens are 0..255
STDLIB = Path(os.__file__).parent


def file_sequences(path: Path, length: int) -> list[dict[str, torch.Tensor]]:
    """One source file as sequences of at most ``length`` byte tokens."""
    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).long()
    items = []
    for chunk in data.split(length):
        # Token 0 is never a target (position t predicts t + 1); marking it -100 also makes
        # the Trainer's own token count, which does not shift labels here, match the loss.
        labels = torch.cat([torch.tensor([-100]), chunk[1:]])
        items.append({"input_ids": chunk, "labels": labels})
    return items


def byte_sequences(length: int, limit: int | None = None) -> list[dict[str, torch.Tensor]]:
    """The stdlib's source files, in name order, as sequences of at most ``length`` bytes."""
    items: list[dict[str, torch.Tensor]] = []
    for path in sorted(STDLIB.glob("*.py")):
        items += file_sequences(path, length)
        if limit is not None and len(items) >= limit:
            return items[:limit]
    return items


def split_corpus(length: int, train: int, held_out: int) -> tuple[list[dict], list[dict]]:
    """Training and held-out sequences of the stdlib's files: every tenth file is held out,
    so that the held-out text is other files, not other parts of the training files."""
    parts: tuple[list[dict], list[dict]] = ([], [])
    for number, path in enumerate(sorted(STDLIB.glob("*.py"))):
        parts[number % 10 == 9].extend(file_sequences(path, length))
    return parts[0][:train], parts[1][:held_out]


def pad_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pads a batch: ``PAD`` inputs, ``-100`` labels, and a 0 in the attention mask."""
    width = max(len(item["input_ids"]) for item in items)
    batch = {
        "input_ids": torch.full((len(items), width), PAD),
        "labels": torch.full((len(items), width), -100),
        "attention_mask": torch.zeros(len(items), width, dtype=torch.long),
    }
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        batch["input_ids"][row, :n] = item["input_ids"]
        batch["labels"][row, :n] = item["labels"]
        batch["attention_mask"][row, :n] = 1
    return batch


def tiny_gpt2(length: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=PAD + 1,
        n_positions=length,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=PAD,
        eos_token_id=PAD,
        pad_token_id=PAD,
    )
    return GPT2LMHeadModel(config)


def training_args(output_dir: str, epochs: int, **options) -> TrainingArguments:
    defaults = {
        "per_device_train_batch_size": 16,
        "learning_rate": 2e-3,
        "lr_scheduler_type": "cosine",  # sized by max_steps: the pruned run's own
        "warmup_steps": 10,
        "logging_steps": 25,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "remove_unused_columns": False,  # dataprune: keeps the "index" key
    }
    return TrainingArguments(output_dir, num_train_epochs=epochs, **{**defaults, **options})


def make_trainer(args, train_set, **options) -> Trainer:
    model = tiny_gpt2(args.length)
    common = {"model": model, "train_dataset": train_set, "data_collator": pad_collate}
    targs = training_args(args.output_dir, args.epochs, **options)
    if args.plain:
        return Trainer(args=targs, **common)
    chosen = (("method", args.method), ("prune", args.prune))
    pruning = {name: value for name, value in chosen if value is not None}  # dataprune
    return DataPruningTrainer(args=targs, pruning=pruning, **common)  # dataprune


@torch.no_grad()
def held_out_loss(model, items: list[dict[str, torch.Tensor]]) -> float:
    model.eval()
    batch = pad_collate(items)
    return model(**batch).loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=None, help="default: the recommended method")
    parser.add_argument("--prune", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--train", type=int, default=3800, help="training sequences")
    parser.add_argument("--held-out", type=int, default=400, help="held-out sequences")
    parser.add_argument("--output-dir", default="hf_trainer_lm_out")
    parser.add_argument("--plain", action="store_true", help="the Trainer alone, no dataprune")
    args = parser.parse_args()
    train, held_out = split_corpus(args.length, args.train, args.held_out)
    trainer = make_trainer(args, train)
    trainer.train()
    if trainer.is_world_process_zero():
        loss = held_out_loss(trainer.model, held_out)
        print(
            f"held-out loss {loss:.3f} (perplexity {math.exp(loss):.1f} per byte), "
            f"{trainer.state.global_step} steps"
        )


if __name__ == "__main__":
    main()
