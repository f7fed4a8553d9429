"""``dataprune`` command line: train, compare, export-coreset, analyze.

Every run flag comes from a :class:`RunConfig` field (its name, default and help), and every
method option from the method's ``Policy.options``, so the command line never drifts from the
library. Bad input ends in one line on stderr and exit status 2, never a traceback; SIGINT and
SIGTERM stop a run resumably.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataPruneError, error_message
from ..formats import FORMATS as DATA_FORMATS
from .config import FIELD_DEFAULTS, MAX_SEED, RunConfig
from .data import DATASETS
from .device import is_main_process, shutdown_distributed
from .files import check_writable
from .methods import harness_methods

DEFAULT_COMPARE_METHODS = "full,random,epsilon-greedy,infobatch,kakurenbo,peek"
COMPARE_PRUNE = "0.5"
COMPAREFIELD_DEFAULTS = {"epochs": 15, "out": "runs/compare"}  # compare's own defaults
_OPTION_PREFIX = "option:"


class CLIError(DataPruneError):
    """A usage problem reported as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a scheduler sends before preemption: handled like Ctrl-C."""


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
    if len(set(values)) < len(values):
        raise CLIError(f"--{name} {text!r} repeats a value: each is one set of runs")
    return values


def _names(name: str, text: str, allowed: Sequence[str]) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    for v in values:
        if v not in allowed:
            raise CLIError(f"--{name}: {v!r} is not known; choose from: {', '.join(allowed)}")
    if not values:
        raise CLIError(f"--{name} is empty")
    if len(set(values)) < len(values):
        raise CLIError(f"--{name} {text!r} repeats a name: each is one set of runs")
    return values


def _add_run_flags(
    p: argparse.ArgumentParser, command: str, defaults: dict[str, Any] | None = None
) -> None:
    """One flag per :class:`RunConfig` field (those of ``command``), then the method options.

    ``defaults`` replaces some fields' defaults for this command.
    """
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        if f.name == "options" or meta.get("command", command) != command:
            continue
        if meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(meta["group"])
        group = groups[meta["group"]]
        name = "--" + meta.get("flag", f.name.replace("_", "-"))
        default = (defaults or {}).get(f.name, f.default)
        if meta["type"] is bool and default is None:
            group.add_argument(
                name, dest=f.name, action=argparse.BooleanOptionalAction, help=meta["help"]
            )
        elif meta["type"] is bool:
            action = "store_false" if default else "store_true"
            group.add_argument(name, dest=f.name, action=action, help=meta["help"])
        else:
            choices = meta["choices"]() if "choices" in meta else None
            notes = [f"one of {', '.join(choices)}"] if choices else []
            if default is not None:
                notes.append(f"default: {default}")
            group.add_argument(
                name,
                dest=f.name,
                type=meta["type"],
                default=default,
                metavar=f.name.upper(),
                help=meta["help"] + (f" ({'; '.join(notes)})" if notes else ""),
            )
    _add_option_flags(groups.setdefault("pruning", p.add_argument_group("pruning")))


def _add_option_flags(group: argparse._ArgumentGroup) -> None:
    """A flag per method option, once per name, listing the methods that take it."""
    takers: dict[str, list[tuple[str, Any]]] = {}
    for method in harness_methods().values():
        for name, option in method.options().items():
            takers.setdefault(name, []).append((method.name, option))
    for name, uses in takers.items():
        option = uses[0][1]
        defaults = ", ".join(f"{m}: {o.default}" for m, o in uses)
        flag, dest, help = (
            "--" + (option.flag or name.replace("_", "-")),
            _OPTION_PREFIX + name,
            f"{option.help} (default {defaults})",
        )
        if isinstance(option.default, bool):  # --name and --no-name
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=help)
            continue
        group.add_argument(
            flag,
            dest=dest,
            type=type(option.default),
            choices=option.choices,
            default=None,
            metavar=name.upper(),
            help=help,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataprune",
        description="Dynamic data pruning: train on the samples worth a gradient step.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one method", description="Train one run.")
    p.add_argument(
        "--epochs-matching",
        type=float,
        default=None,
        metavar="PRUNE",
        help="baseline: full data for the sample budget of a run pruned at PRUNE",
    )
    _add_run_flags(p, "train")

    p = sub.add_parser(
        "compare",
        help="run and compare methods (the default command)",
        description="Run every method x prune x seed and print a table; writes results.json, "
        "results.csv and PNG plots into --out.",
    )
    p.add_argument("--methods", default=DEFAULT_COMPARE_METHODS, help="comma-separated methods")
    p.add_argument(
        "--prune",
        default=None,
        help=f"comma-separated prune rates in [0, 1) (default {COMPARE_PRUNE})",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--target", type=float, default=None, help="accuracy target, in (0, 1]")
    _add_run_flags(p, "compare", defaults=COMPAREFIELD_DEFAULTS)

    p = sub.add_parser(
        "prepare",
        help="write a dataset to disk as an image folder or shards, for --data-path",
        description="Write a dataset's train and test splits into OUT/<format>/ for each format "
        "(PNG images; shards by each format's own library), the folders --data-path reads.",
    )
    p.add_argument("--dataset", required=True, choices=DATASETS, help="the dataset")
    p.add_argument(
        "--formats",
        default="folder",
        help=f"comma-separated, from: {', '.join(DATA_FORMATS)} (default: folder)",
    )
    p.add_argument("--out", required=True, help="the folder to write (one sub-folder a format)")
    p.add_argument("--data-dir", default=None, help="where the dataset's files live (as train's)")
    p.add_argument("--train-limit", type=int, default=None, help="write the first N train samples")
    p.add_argument("--test-limit", type=int, default=None, help="write the first N test samples")
    p.add_argument(
        "--shard-mb", type=float, default=64.0, help="size of a shard or chunk in MB (default 64)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    p = sub.add_parser("export-coreset", help="write a static subset from scores or a run")
    p.add_argument("source", help="a score file (--scores) or a finished run directory")
    p.add_argument("--prune", type=float, required=True, help="fraction left out, in [0, 1)")
    p.add_argument(
        "--out",
        required=True,
        help="output file (.pt, with a .csv beside it), or a folder to write coreset.pt into",
    )

    p = sub.add_parser("analyze", help="plots of how often samples were selected in a run")
    p.add_argument("run_dir", help="a finished run directory (with checkpoint.pt)")
    p.add_argument("--out", default=None, help="where to write the plots (default: run_dir)")
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options given on the command line, by option name."""
    return {
        key[len(_OPTION_PREFIX) :]: value
        for key, value in vars(args).items()
        if key.startswith(_OPTION_PREFIX) and value is not None
    }


def _config(args: argparse.Namespace, **overrides: Any) -> RunConfig:
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(overrides)
    return RunConfig(**values)


def _check_writable(out: str | None, flag: str = "--out") -> None:
    if out is not None:
        check_writable(out, flag)


def cmd_train(args: argparse.Namespace) -> None:
    from .runner import run

    overrides: dict[str, Any] = {"options": _options(args)}
    if args.epochs_matching is not None:
        matching = args.epochs_matching
        if not 0 <= matching < 1:
            raise CLIError(f"--epochs-matching {matching:g} is outside [0, 1): it is a prune rate")
        if args.method != FIELD_DEFAULTS["method"] or args.prune != FIELD_DEFAULTS["prune"]:
            raise CLIError(
                "--epochs-matching PRUNE is itself the method (full data for a run pruned at "
                "PRUNE): leave out --method and --prune"
            )
        overrides.update(method="full-matched", prune=matching)
    spec = _config(args, **overrides).resolve()
    config = spec.config
    _check_writable(config.out)
    result = run(spec)
    if is_main_process():
        e = result.epochs[-1]
        print(
            f"{config.method} p={config.prune:g}: final accuracy {100 * result.final_accuracy:.2f}%"
            f" (best {100 * result.best_accuracy:.2f}%), wall {result.wall_seconds:.1f} s"
            f" (scoring {result.scoring_seconds:.1f} s), samples {result.samples_used:,}"
            f" over {e.epoch + 1} epochs"
        )


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds {text!r}: expected comma-separated integers") from None
    if not seeds:
        raise CLIError("--seeds is empty")
    if len(set(seeds)) < len(seeds):
        raise CLIError(f"--seeds {text!r} repeats a seed: each seed is one run")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise CLIError(f"--seeds value {seed} is outside [0, {MAX_SEED}]")
    return seeds


def cmd_compare(args: argparse.Namespace) -> None:
    from .report import write_reports
    from .runner import grid, run_grid

    known = harness_methods()
    methods = _names("methods", args.methods, known)
    unused = {name: entry.unused_fields() for name, entry in known.items()}
    seeds = _seeds(args.seeds)
    pruning = [m for m in methods if "prune" not in unused[m]]
    if args.prune is not None and not pruning:
        raise CLIError("--prune applies to pruning methods, and --methods holds none")
    prunes = _floats("prune", args.prune or COMPARE_PRUNE)
    if args.target is not None and not 0 < args.target <= 1:
        raise CLIError(f"--target {args.target:g} is outside (0, 1]: it is a test accuracy")
    options = _options(args)
    for name in options:
        if not any(name in known[m].options() for m in methods):
            users = [m for m, entry in known.items() if name in entry.options()]
            raise CLIError(
                f"the option {name!r} applies to {', '.join(users)}, none of which is in --methods"
            )
    template = _config(args, options=options)  # each run's method, rate and seed come next
    defaults = {**FIELD_DEFAULTS, **COMPAREFIELD_DEFAULTS}
    for name in set().union(*unused.values()):
        if getattr(template, name) != defaults[name] and all(name in unused[m] for m in methods):
            flag = _flag_names()[name]
            raise CLIError(f"--{flag} applies to none of --methods {','.join(methods)}")
    specs = [config.resolve() for config in grid(template, methods, prunes, seeds)]
    _check_writable(template.out)
    out = Path(template.out)
    results = run_grid(specs, out, progress=template.progress)
    if is_main_process():
        table = write_reports(results, out, target=args.target)
        print(table)
        print(f"\nresults.json, results.csv, results.md and plots written to {out}/")


def cmd_prepare(args: argparse.Namespace) -> None:
    try:
        from .prepare import check_target, prepare_dataset
    except ImportError as error:
        raise CLIError(
            f"dataprune prepare needs Pillow ({error}): pip install 'dataprune[images]'"
        ) from error

    formats = _names("formats", args.formats, DATA_FORMATS)
    if not 0 < args.shard_mb <= 1 << 20:
        raise CLIError(f"--shard-mb {args.shard_mb:g} is outside (0, 1048576]: it is megabytes")
    check_target(Path(args.out))  # not the working directory, and writable
    if Path(args.out).exists() and not args.overwrite:
        raise CLIError(f"--out {args.out} exists: pass --overwrite to replace it")
    try:
        paths = prepare_dataset(
            args.dataset,
            args.out,
            formats,
            data_dir=args.data_dir,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
            shard_bytes=round(args.shard_mb * 1e6),
            overwrite=args.overwrite,
            progress=args.progress,
        )
    except ImportError as error:  # a format's library is not installed
        raise CLIError(str(error)) from error
    for name, path in paths.items():
        print(f"{name}: {path}  (dataprune train --data-path {path})")


def cmd_export(args: argparse.Namespace) -> None:
    from .coreset import export_coreset

    if not 0 <= args.prune < 1:
        raise CLIError(f"--prune {args.prune:g} is outside [0, 1)")
    if not args.out:
        raise CLIError("--out is empty: give a file or folder to write the coreset into")
    summary = export_coreset(args.source, args.prune, args.out)
    print(", ".join(f"{k}: {v}" for k, v in summary.items()))


def cmd_analyze(args: argparse.Namespace) -> None:
    from .analyze import analyze_run

    if args.out is not None:
        _check_writable(args.out)
    written = analyze_run(Path(args.run_dir), Path(args.out) if args.out else None)
    for path in written:
        print(path)


COMMANDS = {
    "train": cmd_train,
    "compare": cmd_compare,
    "prepare": cmd_prepare,
    "export-coreset": cmd_export,
    "analyze": cmd_analyze,
}


def _flag_names() -> dict[str, str]:
    """Each RunConfig field's and method option's command-line flag, without the dashes."""
    flags = {
        f.name: f.metadata.get("flag", f.name.replace("_", "-"))
        for f in dataclasses.fields(RunConfig)
    }
    for method in harness_methods().values():
        for option_name, option in method.options().items():
            flags[option_name] = option.flag or option_name.replace("_", "-")
    return flags


def _as_flags(message: str) -> str:
    """A message that begins with a field or option name (``seed=...``), in flag form."""
    name, sep, rest = message.partition("=")
    flags = _flag_names()
    if sep and name in flags:
        return f"--{flags[name]} {rest}"
    return message


@contextlib.contextmanager
def _log_lines_on_stderr() -> Iterator[None]:
    """The library's log lines (NaN losses, --verify) on this command's stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dataprune: %(message)s"))
    log = logging.getLogger("dataprune")
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dataprune`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["compare", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    finished = False
    try:
        with _log_lines_on_stderr():
            COMMANDS[args.command](args)
        finished = True
    except (DataPruneError, OSError) as exc:  # the user's to fix (OSError: a path or a disk)
        if os.environ.get("DATAPRUNE_DEBUG"):
            raise
        print(
            f"dataprune: error: {_as_flags(error_message(exc))} (set DATAPRUNE_DEBUG=1 for a "
            "traceback)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug, not a usage problem: still one line, and a way to report
        if os.environ.get("DATAPRUNE_DEBUG"):
            raise
        first_line = (error_message(exc).strip().splitlines() or ["no details"])[0]
        print(
            f"dataprune: internal error: {type(exc).__name__}: {first_line} (please report it, "
            "with the traceback DATAPRUNE_DEBUG=1 shows)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        hint = "rerun the same command" + (" with --resume" if args.command == "train" else "")
        print(
            f"dataprune: {what}; every finished epoch is checkpointed: {hint} to continue",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        shutdown_distributed(barrier=finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
