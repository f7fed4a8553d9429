"""Does peek lose less at a high mean rate if the rate changes over the run? 2 seeds.

    python benchmarks/exploration/screen_schedule.py run short 0,1 up prune=0.55 \
        prune_schedule="'linear'" prune_end=0.85
    python benchmarks/exploration/screen_schedule.py summary   # the table in docs/METHOD.md

A run is peek in one of the image settings of benchmarks/reproduce.py (``short``, ``cifar``,
``table``: benchmarks/exploration/screen.py's names), with the given RunConfig fields
(``name=value``, values as Python literals) under a label. A linear schedule's mean rate over
the pruned epochs is the mean of its ends, so ``prune=0.55 prune_end=0.85`` trains as many
samples as prune 0.7. Rows go to ``screening_schedule.jsonl`` (printed; append them). The
summary pairs each with full training of the same seed in ``benchmarks/results/<setting>/``,
and gives the compute share from the counts of samples forwarded and back-propagated (times
ran beside other work and are not compared). Exploration, not evidence.
"""

from __future__ import annotations

import ast
import json
import statistics
import sys
from pathlib import Path

from screen import SETTINGS, per_seed

from dataprune.harness.config import RunConfig
from dataprune.harness.trainer import train

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def run(setting: str, seeds: list[int], label: str, fields: list[str]) -> None:
    given = {}
    for field in fields:
        name, value = field.split("=", 1)
        given[name] = ast.literal_eval(value)
    for seed in seeds:
        config = RunConfig(**SETTINGS[setting][1], model="cnn", method="peek", seed=seed,
                           progress=False, device="cpu", **given)  # fmt: skip
        result, _ = train(config.resolve())
        summary = result.pruner_summary
        print(json.dumps({
            "setting": setting, "label": label, "seed": seed, "fields": given,
            "acc": result.final_accuracy, "fwd": summary["samples_forwarded"],
            "bwd": summary["samples_backpropagated"],
        }), flush=True)  # fmt: skip


def summary() -> str:
    """Each candidate's accuracy minus full's of the same seed, in points, with its compute
    share (the suite's forward share)."""
    rows = [
        json.loads(line) for line in (HERE / "screening_schedule.jsonl").read_text().splitlines()
    ]
    seeds = {(row["setting"], row["seed"]) for row in rows}
    full, share = {}, {}
    for setting, (folder, _) in SETTINGS.items():
        for path in (RESULTS / folder).glob("*/result.json"):
            result = json.loads(path.read_text())
            config, counts = result["config"], result["pruner_summary"]
            seen = (result["final_accuracy"], counts["samples_forwarded"],
                    counts["samples_backpropagated"])  # fmt: skip
            if config["method"] == "full":
                full[setting, config["seed"]] = seen
            elif (
                config["method"] == "peek"
                and not config["options"]
                and (setting, config["seed"]) in seeds
            ):
                rows.append({  # the suite's peek at a constant rate, beside the candidates
                    "setting": setting, "label": "peek", "seed": config["seed"],
                    "fields": {"prune": config["prune"]},
                    "acc": seen[0], "fwd": seen[1], "bwd": seen[2],
                })  # fmt: skip
        forward = RESULTS / folder / "forward_share.json"
        if forward.is_file():
            share[setting] = json.loads(forward.read_text())["forward_share"]
    cells: dict[tuple, list[tuple[float, float]]] = {}
    for row in sorted(rows, key=lambda row: row["seed"]):
        acc, fwd, bwd = full[row["setting"], row["seed"]]
        f = share[row["setting"]]
        compute = (f * row["fwd"] + (1 - f) * row["bwd"]) / (f * fwd + (1 - f) * bwd)
        fields = ", ".join(f"{k}={v}" for k, v in sorted(row["fields"].items()))
        key = (row["setting"], row["label"], fields)
        cells.setdefault(key, []).append((100 * (row["acc"] - acc), compute))
    lines = [
        "| setting | candidate | fields | minus full, points, per seed | mean | compute share |",
        "|---|---|---|---|---|---|",
    ]
    for (setting, label, fields), values in sorted(cells.items()):
        diffs = [d for d, _ in values]
        compute = statistics.fmean(c for _, c in values)
        lines.append(f"| {setting} | `{label}` | {fields} | {per_seed(diffs)} | {compute:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        setting, seeds, label = sys.argv[2:5]
        run(setting, [int(s) for s in seeds.split(",")], label, sys.argv[5:])
    else:
        print(summary())
