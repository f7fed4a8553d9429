"""Why peek misses its targets in the text setting: its variants there, 2 seeds.

    python benchmarks/exploration/screen_text.py run 0.5 0,1 peek stretch=False
    python benchmarks/exploration/screen_text.py run 0.0 0,1 full learning_rate=0.004
    python benchmarks/exploration/screen_text.py summary   # the table in docs/METHOD.md

A run is benchmarks/text.py's (a tiny GPT-2 under AdamW through the HF Trainer, 3 epochs), with
the method's options and the learning rate given as ``name=value``. One candidate is not a
registered option: ``x-peek-sqrt``, peek whose stretch is ``sqrt(N / k)`` rather than
``N / k``. Rows go to ``screening_text.jsonl`` (printed; append them). The summary pairs each
with full training of the same seed in ``benchmarks/results/text/``. Exploration, not
evidence: its times ran beside other work and are not compared.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

from screen import per_seed

from dataprune.policies import register
from dataprune.policies.peek import Peek

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import text  # noqa: E402  (benchmarks/text.py)

#: The suite's own runs shown beside the candidates: peek at its defaults, and a rule without
#: the stretch.
COMPARED = ("peek", "epsilon-greedy")


@register
class PeekSqrtStretch(Peek):
    """peek with a gentler stretch: ``sqrt(N / k)`` times the learning rate."""

    name = "x-peek-sqrt"

    def lr_scale(self, num_samples: int, epoch_size: int) -> float:
        return math.sqrt(num_samples / epoch_size) if self.params["stretch"] else 1.0


def run(prune: float, seeds: list[int], method: str, settings: list[str]) -> None:
    given = {}
    for setting in settings:
        name, value = setting.split("=", 1)
        given[name] = ast.literal_eval(value)
    learning_rate = given.pop("learning_rate", None)
    train, held_out = text.corpus()
    for seed in seeds:
        options = tuple(sorted(given.items()))
        result = text.run_one(
            text.TextRun(method, prune, seed, options), train, held_out, learning_rate
        )
        print(json.dumps({
            "method": method, "prune": prune, "seed": seed, "options": given,
            "learning_rate": result["config"]["learning_rate"],
            "loss": result["held_out_loss"], "steps": result["steps"],
        }), flush=True)  # fmt: skip


def summary() -> str:
    """Each candidate's held-out loss against full's of the same seed, in percent."""
    rows = [json.loads(line) for line in (HERE / "screening_text.jsonl").read_text().splitlines()]
    full, seeds = {}, {row["seed"] for row in rows}
    for path in (HERE.parent / "results" / "text").glob("*/result.json"):
        result = json.loads(path.read_text())
        config = result["config"]
        if config["method"] == "full":
            full[config["seed"]] = result["held_out_loss"]
        elif config["method"] in COMPARED and config["seed"] in seeds:  # the suite's, beside
            rows.append({**config, "options": {}, "loss": result["held_out_loss"]})
    cells: dict[tuple, list[float]] = {}
    for row in rows:
        settings = [f"{k}={v}" for k, v in sorted(row["options"].items())]
        if row["learning_rate"] != 2e-3:
            settings.append(f"learning_rate={row['learning_rate']:g}")
        key = (row["prune"], row["method"], ", ".join(settings))
        cells.setdefault(key, []).append(100 * (row["loss"] / full[row["seed"]] - 1))
    lines = [
        "| prune | candidate | settings | above full, %, per seed | mean |",
        "|---|---|---|---|---|",
    ]
    for (prune, method, settings), diffs in sorted(cells.items()):
        lines.append(f"| {prune} | `{method}` | {settings or '-'} | {per_seed(diffs)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        prune, seeds, method, *settings = sys.argv[2:]
        run(float(prune), [int(s) for s in seeds.split(",")], method, settings)
    else:
        print(summary())
