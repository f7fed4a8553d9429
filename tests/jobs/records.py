"""Shared by the framework jobs and their tests: the examples they run, how they are launched,
and what they write (per rank, each epoch's subset and the indices it trained)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """``examples/{name}.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finish() -> None:
    """Every rank gets here before any leaves, then the process group ends: gloo aborts a
    process ("terminate called without an active exception") whose peer closed first."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def torchrun(script: str, argv: list[str], processes: int) -> None:
    """Runs ``script`` under torchrun on its own free port, one CPU thread per process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc-per-node={processes}", script, *argv]
    subprocess.run(command, check=True, env=env, timeout=300)


def run_job(job: ModuleType, out: Path, flags: tuple[str, ...], processes: int) -> list[dict]:
    """Runs a torchrun-able job in this process (one) or under torchrun; reads its records."""
    argv = ["--out", str(out), *flags]
    if processes == 1:
        job.run(job.parse(argv))
    else:
        torchrun(job.__file__, argv, processes)
    return read(out, processes, "--resume" in flags)


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


def job_parser(limit: int, batch_size: int) -> argparse.ArgumentParser:
    """The flags every framework job takes; a job adds its own."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", default="ucb")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--no-shuffle", action="store_true")
    parser.add_argument("--steps", action="store_true", help="peek's steps=True")
    return parser


def pruner_options(args: argparse.Namespace) -> dict:
    """The method's options the job's flags ask for."""
    return {"steps": True} if args.steps else {}


def check_keeping_steps(run, out: Path, budget: int, samples: int, batch_size: int, **launch):
    """``peek`` with ``steps=True`` run by ``run`` (a test's launcher, ``launch`` its processes):
    the budget on every rank, full training's optimizer steps, and a resume after the first
    epoch that selects and trains as the uninterrupted run."""
    flags = ("--method", "peek", "--steps")
    whole = run(out / "whole", *flags, **launch)
    check_budget(whole, budget)
    per_rank = -(-samples // len(whole))  # DistributedSampler's ceil(N / W)
    assert all(r["steps"] == 3 * -(-per_rank // batch_size) for r in whole)  # 3 epochs
    run(out / "split", *flags, "--stop-after", "0", **launch)
    check_resumed(whole, run(out / "split", *flags, "--resume", **launch))


def check_resumed(whole: list[dict], resumed: list[dict], epochs=("1", "2")) -> None:
    """Each rank selected and trained the same samples, in the same order, after the resume as
    without it."""
    for rank, (a, b) in enumerate(zip(whole, resumed, strict=True)):
        for epoch in epochs:
            assert b["subsets"][epoch] == a["subsets"][epoch], (rank, epoch)
            assert b["trained"][epoch] == a["trained"][epoch], (rank, epoch)
