"""The screening that chose peek's ingredients: candidate variants of existing methods, 2 seeds.

    python benchmarks/exploration/screen.py run table 0.5 0,1 x-kak-r10,x-ucb-lin
    python benchmarks/exploration/screen.py summary      # the table in docs/METHOD.md

Each candidate is an existing policy with some of: the stretch (a pruned epoch at ``N / k``
times the learning rate, ``lin``; capped at 2, ``cap2``; its square root, ``sqrt``), a
measurement of a random share of the hidden samples after each epoch (``r10``: a tenth), and
another ``tau``. Runs go in the harness with the settings of benchmarks/reproduce.py; the
summary pairs each with full training of the same seed from the 2026-11 suites
(``benchmarks/results/archive/``). What ``screening.jsonl`` holds was measured before two
fixes: the first batch of rows (``table``, prune 0.5) applied the stretch to the loss rather
than the learning rate (the same step under SGD, weight decay apart), and every measurement of
hidden samples ran after an epoch's first batch instead of its last. Exploration, not evidence:
RESULTS.md measures the final method and its ingredients.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from dataprune.harness.config import RunConfig
from dataprune.harness.trainer import train
from dataprune.policies import Option, register
from dataprune.policies.epsilon_greedy import EpsilonGreedy
from dataprune.policies.kakurenbo import Kakurenbo
from dataprune.policies.random import Random
from dataprune.policies.ucb import UCB
from dataprune.selection import RandomStream, top_k_mask

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parent / "results" / "archive"
SETTINGS = {  # reproduce.py's, by their short names here
    "table": ("fashion-mnist-table", dict(dataset="fashion-mnist", train_limit=60_000,
              test_limit=10_000, epochs=8, batch_size=128, lr=0.05, schedule="cosine")),
    "short": ("fashion-mnist", dict(dataset="fashion-mnist", train_limit=60_000,
              test_limit=10_000, epochs=5, batch_size=256, lr=0.1)),
    "cifar": ("cifar10-subset", dict(dataset="cifar10", train_limit=5_000, test_limit=1_000,
              epochs=30, batch_size=128, lr=0.05)),
}  # fmt: skip
#: name: (policy, stretch, share of the hidden samples measured, tau)
CANDIDATES = {
    "x-rand-lin": (Random, "lin", None, None),
    "x-eps-lin": (EpsilonGreedy, "lin", None, None),
    "x-ucb-lin": (UCB, "lin", None, None),
    "x-kak-r0": (Kakurenbo, "lin", 0.0, None),
    "x-kak-r10": (Kakurenbo, "lin", 0.1, None),
    "x-kak-r25": (Kakurenbo, "lin", 0.25, None),
    "x-kak-r10-cap2": (Kakurenbo, "cap2", 0.1, None),
    "x-kakt0-r10": (Kakurenbo, "lin", 0.1, 0.0),
    "x-kakt9-r10": (Kakurenbo, "lin", 0.1, 0.9),
}


def candidate(name: str, base: type, stretch: str, share: float | None, tau: float | None):
    def lr_scale(self, num_samples: int, epoch_size: int) -> float:
        ratio = num_samples / epoch_size
        return {"lin": ratio, "cap2": min(ratio, 2.0), "sqrt": math.sqrt(ratio)}[stretch]

    def remeasure(self, ctx, hidden):
        count = round(share * hidden.numel())
        keys = RandomStream.of(ctx.seed, ctx.round, 77).uniform(hidden)
        return hidden[top_k_mask(keys, count, RandomStream.of(ctx.seed, ctx.round, 78))]

    attrs = {"name": name, "lr_scale": lr_scale}
    if share is not None:
        attrs["remeasure"] = remeasure
    if tau is not None:
        attrs["options"] = {"tau": Option(tau, "tau", 0.0, 1.0, flag=f"{name}-tau")}
    return register(type(name.replace("-", "_"), (base,), attrs))


def run(setting: str, prune: float, seeds: list[int], methods: list[str]) -> None:
    for name, spec in CANDIDATES.items():
        candidate(name, *spec)
    for method in methods:
        for seed in seeds:
            config = RunConfig(**SETTINGS[setting][1], model="cnn", method=method, prune=prune,
                               seed=seed, progress=False, device="cpu")  # fmt: skip
            result, _ = train(config.resolve())
            summary = result.pruner_summary
            train_seconds = result.wall_seconds - sum(e.eval_seconds for e in result.epochs)
            print(json.dumps({
                "setting": setting, "method": method, "prune": prune, "seed": seed,
                "acc": result.final_accuracy, "train": train_seconds,
                "fwd": summary["samples_forwarded"], "bwd": summary["samples_backpropagated"],
            }), flush=True)  # fmt: skip


def per_seed(diffs: list[float]) -> str:
    """Two table cells: each seed's difference, and their mean."""
    return f"{', '.join(f'{d:+.2f}' for d in diffs)} | {statistics.fmean(diffs):+.2f}"


def summary() -> str:
    """Each candidate's accuracy minus full's of the same seed, in points, per setting."""
    rows = [json.loads(line) for line in (HERE / "screening.jsonl").read_text().splitlines()]
    full = {}
    for setting, (folder, _) in SETTINGS.items():
        for path in (ARCHIVE / folder).glob("full-p0-s*/result.json"):
            result = json.loads(path.read_text())
            full[setting, result["config"]["seed"]] = result["final_accuracy"]
    cells: dict[tuple, list[float]] = {}
    for row in rows:
        if row["method"] == "full":
            continue
        key = (row["setting"], row["prune"], row["method"])
        cells.setdefault(key, []).append(100 * (row["acc"] - full[row["setting"], row["seed"]]))
    lines = [
        "| setting | prune | candidate | minus full, points, per seed | mean |",
        "|---|---|---|---|---|",
    ]
    for (setting, prune, method), diffs in sorted(cells.items()):
        lines.append(f"| {setting} | {prune} | `{method}` | {per_seed(diffs)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        setting, prune, seeds, methods = sys.argv[2:6]
        run(setting, float(prune), [int(s) for s in seeds.split(",")], methods.split(","))
    else:
        print(summary())
