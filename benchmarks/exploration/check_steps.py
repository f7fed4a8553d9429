"""``peek`` with ``steps=True`` as built, through the harness, in the 5-epoch setting at 0.7.

    python benchmarks/exploration/check_steps.py OUT   # 15 runs into OUT, then the table

The screening (``screen_steps.py``) measured the step-keeping variant in a loop of its own;
this runs the option the library now has, as the suite runs it: for each of seeds 0-4, full
training, then ``peek`` and ``peek`` with ``steps=True`` at prune 0.7, side by side, so that
each time ratio is over the full run made just before. Full's and peek's accuracies repeat
the suite's to the bit (the harness is deterministic on the CPU). Exploration, not evidence:
the suite's own ingredient runs, timed beside its full runs, are what RESULTS.md reports.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reproduce import Suite, run_suite, suites  # noqa: E402
from screen import per_seed  # noqa: E402

SEEDS, PRUNE = range(5), 0.7


def run(out: Path) -> None:
    short = next(s for s in suites(False, None, "cpu") if s.name == "fashion-mnist")
    base = short.configs[0]
    configs = []
    for seed in SEEDS:
        peek = base.for_method("peek", PRUNE, seed)
        configs += [
            base.for_method("full", 0.0, seed),
            peek,
            dataclasses.replace(peek, options={"steps": True}),
        ]
    run_suite(Suite(short.name, short.title, configs), out, figures=out)


def summary(out: Path) -> str:
    runs = {}
    for path in sorted((out / "fashion-mnist").glob("*/result.json")):
        result = json.loads(path.read_text())
        config = result["config"]
        name = config["method"] + "".join(f" {k}={v}" for k, v in config["options"].items())
        seconds = sum(e["train_seconds"] for e in result["epochs"])
        runs[name, config["seed"]] = (result["final_accuracy"], seconds)
    lines = ["| run | minus full, points, per seed | mean | time / full's, mean |"]
    lines.append("|---|---|---|---|")
    for name in ("peek", "peek steps=True"):
        diffs = [100 * (runs[name, s][0] - runs["full", s][0]) for s in SEEDS]
        shares = [runs[name, s][1] / runs["full", s][1] for s in SEEDS]
        lines.append(f"| {name} | {per_seed(diffs)} | {statistics.fmean(shares):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    run(target)
    print(summary(target))
