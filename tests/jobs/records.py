"""What the framework jobs write: per rank, each epoch's subset and the indices it trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def torchrun(script: str, argv: list[str], processes: int) -> None:
    """Runs ``script`` under torchrun on its own free port, one CPU thread per process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc-per-node={processes}", script, *argv]
    subprocess.run(command, check=True, env=env, timeout=300)


def read(out: Path, processes: int, resumed: bool) -> list[dict]:
    suffix = "-resumed" if resumed else ""
    return [json.loads((out / f"rank{r}{suffix}.json").read_text()) for r in range(processes)]


def check_budget(records: list[dict], budget: int) -> None:
    """The same subset on every rank each epoch; together the ranks train exactly it, in the
    number of steps ``Pruner.total_steps`` predicts and the framework planned."""
    for epoch, subset in records[0]["subsets"].items():
        assert all(r["subsets"][epoch] == subset for r in records)
        assert sorted(i for r in records for i in r["trained"][epoch]) == subset
        assert len(subset) == budget
    for r in records:
        assert r["steps"] == r["total_steps"] == r["planned_steps"]
