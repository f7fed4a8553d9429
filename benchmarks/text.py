"""The text setting of the evidence: a tiny GPT-2, trained through the Hugging Face Trainer.

    python benchmarks/reproduce.py --suite text

The corpus is the standard library's ``.py`` files (``examples/hf_trainer_lm.py``), as
sequences of 128 byte tokens: every tenth file is held out, the others train. The model is a
randomly initialised GPT-2 of 2 layers, trained with AdamW for 3 epochs; each sequence's loss
is the mean of its tokens' (``dataprune.sequence_losses``). The metric is the held-out loss per
token (and its perplexity), after the last epoch. Runs go interleaved, as in the image settings
(``reproduce.interleaved``): for each seed, full training first, then the seed's other runs in
an order shuffled from the seed. Each writes ``result.json`` in ``benchmarks/results/text/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback

from dataprune.frameworks.hf import DataPruningTrainer
from dataprune.harness.files import write_json
from dataprune.harness.provenance import code_identity, git_commit, source_tree

ROOT = Path(__file__).resolve().parents[1]
LENGTH, EPOCHS, BATCH = 128, 3, 16
TRAIN_SEQUENCES, HELD_OUT_SEQUENCES = 3_800, 400
#: The methods of the image settings less those the harness adds (full-matched, the scorers).
METHODS = (
    "full", "static-random", "random", "rs2", "epsilon-greedy", "ucb", "infobatch", "seta",
    "orderdp", "repb", "kakurenbo", "peek", "selective-backprop",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TextRun:
    method: str
    prune: float
    seed: int
    options: tuple[tuple[str, Any], ...] = ()  # the method's, as sorted (name, value) pairs

    @property
    def name(self) -> str:
        """As ``reproduce.variant_name``: method, prune, seed, then each option."""
        from reproduce import option_parts

        return "-".join(
            [f"{self.method}-p{self.prune:g}-s{self.seed}", *option_parts(self.options)]
        )


def example():
    """``examples/hf_trainer_lm.py`` as a module: its corpus, collate function and model."""
    path = ROOT / "examples" / "hf_trainer_lm.py"
    spec = importlib.util.spec_from_file_location("hf_trainer_lm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus() -> tuple[list[dict], list[dict]]:
    """Training and held-out sequences: every tenth file of the stdlib is held out."""
    return example().split_corpus(LENGTH, TRAIN_SEQUENCES, HELD_OUT_SEQUENCES)


def runs() -> list[TextRun]:
    """Every run, seed by seed: full first, then the rest shuffled from the seed (peek's
    ingredients too, in the first seeds, as in the image settings)."""
    from reproduce import DECIDING, INGREDIENT_PRUNES, INGREDIENTS, MORE_SEEDS, PRUNES, SEEDS

    order = []
    for seed in (*SEEDS, *MORE_SEEDS):
        cells = [TextRun(m, p, seed) for m in METHODS if m != "full" for p in PRUNES]
        if seed in MORE_SEEDS:
            cells = [c for c in cells if (c.method, c.prune) in DECIDING]
        else:
            cells += [
                TextRun(m, p, seed, tuple(sorted(o.items())))
                for m, o in INGREDIENTS
                for p in INGREDIENT_PRUNES
            ]
        random.Random(seed).shuffle(cells)
        order += [TextRun("full", 0.0, seed), *cells]
    return order


def run_one(
    run: TextRun,
    train: list[dict],
    held_out: list[dict],
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """Train one run and measure it: training seconds (every cost of the Trainer's loop and
    the pruner's steps), the held-out loss after it (not timed). ``learning_rate`` replaces
    the example's (benchmarks/exploration/screen_text.py)."""
    lm = example()
    rate = {} if learning_rate is None else {"learning_rate": learning_rate}
    torch.manual_seed(run.seed)
    model = lm.tiny_gpt2(LENGTH)
    with tempfile.TemporaryDirectory() as scratch:
        args = lm.training_args(
            scratch,
            EPOCHS,
            per_device_train_batch_size=BATCH,
            seed=run.seed,
            logging_steps=10_000,
            disable_tqdm=True,
            **rate,
        )
        pruning = {"method": run.method, "prune": run.prune, **dict(run.options)}
        trainer = DataPruningTrainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=lm.pad_collate,
            pruning=pruning,
        )
        trainer.remove_callback(PrinterCallback)  # no log dict printed each epoch
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    loss = lm.held_out_loss(trainer.model, held_out)
    return {
        "setting": "text",
        "config": {
            **dataclasses.asdict(run),
            "options": dict(run.options),
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "learning_rate": args.learning_rate,
            "length": LENGTH,
            "train_sequences": len(train),
            "held_out_sequences": len(held_out),
        },
        "held_out_loss": loss,
        "perplexity": math.exp(loss),
        "train_seconds": seconds,
        "steps": trainer.state.global_step,
        "pruner_summary": trainer.pruner.summary(),
        "device_name": f"cpu ({torch.get_num_threads()} threads)",
        "provenance": {
            "commit": git_commit(),
            "source": source_tree(),
            **code_identity(run.method),
            "transformers": __import__("transformers").__version__,
        },
    }


def measure_forward_share(out: Path, train: list[dict], repeats: int = 20) -> None:
    """A forward pass without gradients as a share of a training step, for this model and
    batch on this machine (``forward_share.json``)."""
    from reproduce import write_forward_share

    target = out / "forward_share.json"
    if target.is_file():
        return
    lm = example()
    model = lm.tiny_gpt2(LENGTH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = lm.pad_collate(train[:BATCH])

    def step() -> None:
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            model(**batch)

    write_forward_share(
        target, step, forward, repeats, batch_size=BATCH, model="tiny-gpt2", device="cpu"
    )


def run_suite(
    out: Path,
    rerun_stale: bool = False,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> None:
    """Every unfinished run of the text setting (only those of ``methods`` and ``seeds``, if
    given), into ``out/<run>/result.json``."""
    from reproduce import is_stale

    train, held_out = corpus()
    out.mkdir(parents=True, exist_ok=True)
    measure_forward_share(out, train)
    todo = [r for r in runs() if (not methods or r.method in methods)]
    todo = [r for r in todo if not seeds or r.seed in seeds]
    for number, run in enumerate(todo, 1):
        path = out / run.name / "result.json"
        if path.is_file() and not (rerun_stale and is_stale(path.parent)):
            continue
        print(f"text: run {number} of {len(todo)}: {run.name}", flush=True)
        write_json(path, run_one(run, train, held_out))


def load(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
