"""``dataprune`` command line: train, compare, export-coreset, analyze.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .trainer import (
    RUN_METHODS,
    SCHEDULES,
    RunConfig,
    RunError,
    is_main_process,
    shutdown_distributed,
)

DEFAULT_COMPARE_METHODS = "full,random,rs2,epsilon-greedy,ucb,infobatch"


class CLIError(RuntimeError):
    """A usage problem reported as one line."""


def _floats(name: str, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(
            f"--{name} {text!r}: expected comma-separated numbers, e.g. 0.3,0.5"
        ) from None
    if not values:
        raise CLIError(f"--{name} is empty")
    for v in values:
        if not 0 <= v < 1:
            raise CLIError(f"--{name} value {v:g} is outside [0, 1): it is the fraction left out")
    return values


def _names(name: str, text: str, allowed: Sequence[str]) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    for v in values:
        if v not in allowed:
            raise CLIError(f"--{name}: {v!r} is not known; choose from: {', '.join(allowed)}")
    if not values:
        raise CLIError(f"--{name} is empty")
    return values


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS
    from .models import MODELS

    d = RunConfig()
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(DATASETS)}")
    g.add_argument(
        "--data-dir",
        default=None,
        help="where datasets live (default: $DATAPRUNE_DATA_DIR, then ../shared/data, then "
        "~/.cache/dataprune, where missing files are downloaded)",
    )
    g.add_argument("--model", default=d.model, help=f"one of {', '.join(MODELS)}")
    g.add_argument("--train-limit", type=int, default=None, help="use the first N train samples")
    g.add_argument("--test-limit", type=int, default=None, help="use the first N test samples")
    g = p.add_argument_group("pruning")
    g.add_argument("--every", type=int, default=d.every, help="re-select every N epochs")
    g.add_argument("--warmup-epochs", type=int, default=0, help="full-data epochs first")
    g.add_argument(
        "--anneal-epochs",
        type=int,
        default=None,
        help="full-data epochs at the end (default 0; infobatch: last 12.5%%)",
    )
    g.add_argument(
        "--rescale",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weight losses by 1/P(kept) (default off; on for infobatch)",
    )
    g.add_argument("--alpha", type=float, default=None, help="EMA step size of loss statistics")
    g.add_argument("--epsilon", type=float, default=d.epsilon, help="epsilon-greedy exploration")
    g.add_argument("--ucb-c", type=float, default=d.ucb_c, help="ucb: weight c of the bonus")
    g.add_argument("--ucb-bonus", choices=("std", "var"), default=d.ucb_bonus, help="ucb bonus")
    g.add_argument(
        "--shard-stats",
        action="store_true",
        help="under torchrun: each rank keeps only its 1/W shard of the per-sample statistics "
        "(same selections, less memory per rank)",
    )
    g = p.add_argument_group("static scorers (el2n, grand, forgetting)")
    g.add_argument("--score-epochs", type=int, default=d.score_epochs, help="E_s: epochs trained")
    g.add_argument("--score-runs", type=int, default=d.score_runs, help="K: runs averaged")
    g.add_argument("--class-balanced", action="store_true", help="keep per-class proportions")
    g.add_argument(
        "--scores",
        dest="scores_file",
        default=None,
        help="score file: loaded if it exists (its cost still shown), else written",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d.epochs, help="epochs of the run")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (Nesterov)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="LR schedule")
    g.add_argument(
        "--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N"
    )
    g.add_argument(
        "--compile", action="store_true", help="torch.compile the model and the statistics update"
    )
    g.add_argument("--out", default=None, help="output directory")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataprune",
        description="Dynamic data pruning: train on the samples worth a gradient step.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one method", description="Train one run.")
    p.add_argument("--method", default="full", help=f"one of {', '.join(RUN_METHODS)}")
    p.add_argument("--prune", type=float, default=0.0, help="fraction left out, in [0, 1)")
    p.add_argument(
        "--epochs-matching",
        type=float,
        default=None,
        metavar="PRUNE",
        help="baseline: full data for round((1 - PRUNE) * epochs) epochs",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after epoch N of the schedule (checkpointed; continue with --resume)",
    )
    _add_run_flags(p)

    p = sub.add_parser(
        "compare",
        help="run and compare methods (the default command)",
        description="Run every method x prune x seed and print a table; writes results.json, "
        "results.csv and PNG plots into --out.",
    )
    p.add_argument("--methods", default=DEFAULT_COMPARE_METHODS, help="comma-separated methods")
    p.add_argument("--prune", default="0.5", help="comma-separated prune rates in [0, 1)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--target", type=float, default=None, help="accuracy target (0..1)")
    _add_run_flags(p)
    p.set_defaults(epochs=15, out="runs/compare")

    p = sub.add_parser("export-coreset", help="write a static subset from scores or a run")
    p.add_argument("source", help="a score file (--scores) or a finished run directory")
    p.add_argument("--prune", type=float, required=True, help="fraction left out, in [0, 1)")
    p.add_argument("--out", required=True, help="output file (.pt; a .csv is written beside)")

    p = sub.add_parser("analyze", help="plots of how often samples were selected in a run")
    p.add_argument("run_dir", help="a finished run directory (with checkpoint.pt)")
    p.add_argument("--out", default=None, help="where to write the plots (default: run_dir)")
    return parser


def _config(args: argparse.Namespace, **overrides) -> RunConfig:
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(overrides)
    return RunConfig(**values)


def _check_writable(out: str | None) -> None:
    if out is None:
        return
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc


def cmd_train(args: argparse.Namespace) -> None:
    from .runner import run

    overrides = {}
    if args.epochs_matching is not None:
        overrides = {"method": "full-matched", "prune": args.epochs_matching}
    config = _config(args, **overrides).validate()
    _check_writable(config.out)
    result = run(config)
    if is_main_process():
        e = result.epochs[-1]
        print(
            f"{config.method} p={config.prune:g}: final accuracy {100 * result.final_accuracy:.2f}%"
            f" (best {100 * result.best_accuracy:.2f}%), wall {result.wall_seconds:.1f} s"
            f" (scoring {result.scoring_seconds:.1f} s), samples {result.samples_used:,}"
            f" over {e.epoch + 1} epochs"
        )


def cmd_compare(args: argparse.Namespace) -> None:
    from .report import write_reports
    from .runner import grid, run_grid

    methods = _names("methods", args.methods, RUN_METHODS)
    prunes = _floats("prune", args.prune)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    base = _config(args, method="full", prune=0.0).validate()
    _check_writable(base.out)
    out = Path(base.out)
    results = run_grid(grid(base, methods, prunes, seeds), out, progress=base.progress)
    if is_main_process():
        table = write_reports(results, out, target=args.target)
        print(table)
        print(f"\nresults.json, results.csv, results.md and plots written to {out}/")


def cmd_export(args: argparse.Namespace) -> None:
    from .scorers import export_coreset

    if not 0 <= args.prune < 1:
        raise CLIError(f"--prune {args.prune:g} is outside [0, 1)")
    summary = export_coreset(args.source, args.prune, args.out)
    print(", ".join(f"{k}: {v}" for k, v in summary.items()))


def cmd_analyze(args: argparse.Namespace) -> None:
    from .analyze import analyze_run

    written = analyze_run(Path(args.run_dir), Path(args.out) if args.out else None)
    for path in written:
        print(path)


COMMANDS = {
    "train": cmd_train,
    "compare": cmd_compare,
    "export-coreset": cmd_export,
    "analyze": cmd_analyze,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dataprune`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["compare", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    from .datasets import DatasetError

    finished = False
    try:
        COMMANDS[args.command](args)
        finished = True
    except (CLIError, RunError, DatasetError, ValueError, TypeError, OSError) as exc:
        if os.environ.get("DATAPRUNE_DEBUG"):
            raise
        print(f"dataprune: error: {exc} (set DATAPRUNE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "dataprune: interrupted; rerun with the same flags (train: --resume)", file=sys.stderr
        )
        return 130
    finally:
        shutdown_distributed(barrier=finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
