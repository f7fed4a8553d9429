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
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report.evidence import read_run  # noqa: E402
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
    """Each run against full of its seed: accuracy in points, training time as the report
    counts it (``report.evidence.read_run``: wall time less evaluation)."""
    runs = {}
    for path in sorted((out / "fashion-mnist").glob("*/result.json")):
        run = read_run(path)
        runs[" ".join([run.method, *(f"{k}={v}" for k, v in run.options)]), run.seed] = run
    lines = ["| run | minus full, points, per seed | mean | time / full's, mean |"]
    lines.append("|---|---|---|---|")
    for name in ("peek", "peek steps=True"):
        pairs = [(runs[name, s], runs["full", s]) for s in SEEDS]
        diffs = [100 * (run.value - full.value) for run, full in pairs]
        shares = [run.training_seconds / full.training_seconds for run, full in pairs]
        lines.append(f"| {name} | {per_seed(diffs)} | {statistics.fmean(shares):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    run(target)
    print(summary(target))
