"""The evidence benchmark: every method, prune rate and seed on real data, then docs/RESULTS.md.

    python benchmarks/reproduce.py             # the full benchmark (resumable), then the report
    python benchmarks/reproduce.py --smoke     # seconds, on digits: keeps the script working in CI
    python benchmarks/reproduce.py --report    # only regenerate docs/RESULTS.md from the results

Each run writes ``result.json`` under ``benchmarks/results/<suite>/<run>/``; those files are
committed, and a rerun skips every finished run. The report is generated from them alone.
A result of other code (another ``source`` in its provenance) or another torch is refused;
``--rerun-stale`` runs those again instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dataprune.harness.analyze import load_pruner_state, selection_summary
from dataprune.harness.behaviour import all_digests
from dataprune.harness.config import RunConfig
from dataprune.harness.files import write_json
from dataprune.harness.methods import get_method, run_methods
from dataprune.harness.provenance import code_identity
from dataprune.harness.runner import grid, run_grid, run_name
from dataprune.policies import POLICIES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Every method's behaviour digests for the code of the committed results.
BEHAVIOUR = ROOT / "benchmarks" / "behaviour.json"
PRUNES = (0.5, 0.7, 0.3)  # in running order: the rates of the targets first
SEEDS = (0, 1, 2)  # paired by seed: the verdicts need 3 or more
ABLATION_PRUNE = 0.5


@dataclass
class Suite:
    """A named group of runs sharing a base configuration."""

    name: str
    title: str
    configs: list[RunConfig]


def main_suite(
    name: str,
    title: str,
    base: RunConfig,
    prunes: Sequence[float] = PRUNES,
    seeds: Sequence[int] = SEEDS,
) -> Suite:
    """Every method at each of ``prunes`` and ``seeds`` in ``base``'s setting.

    Runs go rate by rate in the order of ``prunes`` (the unpruned ones first), every seed of a
    rate before the next: an interrupted benchmark has whole rows, each with its verdict."""

    def order(config: RunConfig) -> tuple[int, int]:
        rate = prunes.index(config.prune) if config.prune in prunes else -1
        return rate, config.seed

    configs = sorted(grid(base, run_methods(), prunes, seeds), key=order)
    return Suite(name, title, configs)


def ablation_suite(base: RunConfig, seeds: Sequence[int]) -> Suite:
    """every 1 vs 2, UCB bonus sigma vs sigma^2, rescale + anneal on and off, at one rate.

    ``every=2`` over ``base``'s epochs (8) re-selects 4 times: a test of re-selecting less
    often, where a single selection over 5 epochs would be a static subset."""
    anneal = _anneal(base)
    changes = [
        ("ucb", {"every": 2}),
        ("random", {"every": 2}),
        ("ucb", {"options": {"bonus": "var"}}),
        ("ucb", {"rescale": True, "anneal_epochs": anneal}),
        ("epsilon-greedy", {"rescale": True, "anneal_epochs": anneal}),
        ("random", {"rescale": True, "anneal_epochs": anneal}),
        ("infobatch", {"rescale": False, "anneal_epochs": 0}),
    ]
    # each the main grid's configuration of its method (for_method, as grid() makes it), with
    # one thing changed
    variants = [
        dataclasses.replace(base.for_method(method, ABLATION_PRUNE, seed), **change)
        for seed in seeds
        for method, change in changes
    ]
    return Suite("ablations", "Ablations on Fashion-MNIST, the table's setting", variants)


def _anneal(config: RunConfig) -> int:
    return POLICIES["infobatch"].default_anneal_epochs(config.epochs, config.warmup_epochs)


def variant_name(config: RunConfig) -> str:
    """Run directory: method, prune, seed, and any option that differs from the defaults."""
    defaults = RunConfig()
    extras = [
        f"{f}{getattr(config, f)}"
        for f in ("every", "rescale", "anneal_epochs")
        if getattr(config, f) != getattr(defaults, f)
    ]
    extras += [f"{name}{value}" for name, value in sorted(config.options.items())]
    return "-".join([run_name(config), *extras])


def suites(smoke: bool, data_dir: str | None, device: str) -> list[Suite]:
    """The three settings of the evidence (method rankings change with them), each for every
    method at every prune rate and seed, and the ablations; with ``smoke``, one short suite.

    Each fixes its dataset's size (``train_limit``/``test_limit``), so that the data dir found
    first cannot change it: one with fewer samples is refused, and results record the counts.
    """
    common = dict(data_dir=data_dir, progress=False, model="cnn", device=device)
    if smoke:  # embedded data: runs anywhere, no files needed
        digits = RunConfig(
            dataset="digits", epochs=2, batch_size=64, score_epochs=1, score_runs=1, **common
        )
        return [main_suite("smoke", "Smoke test (digits)", digits, (0.5,), (0,))]
    fashion = dict(dataset="fashion-mnist", train_limit=60_000, test_limit=10_000, **common)
    short = RunConfig(epochs=5, batch_size=256, lr=0.1, score_epochs=2, **fashion)
    # issue 15's table: 8 epochs, batch 128, lr 0.05, cosine (per step here, not per epoch);
    # static scorers score after 2 of the 8 epochs (the harness default, 5, costs more than full)
    table = RunConfig(
        epochs=8, batch_size=128, lr=0.05, schedule="cosine", score_epochs=2, **fashion
    )
    long = RunConfig(
        dataset="cifar10",
        train_limit=5_000,
        test_limit=1_000,
        epochs=30,
        batch_size=128,
        lr=0.05,
        score_epochs=3,
        **common,
    )
    return [
        main_suite("fashion-mnist", "Fashion-MNIST (60k/10k), cnn, 5 epochs, one-cycle", short),
        main_suite("fashion-mnist-table", "Fashion-MNIST (60k/10k), cnn, 8 epochs, cosine", table),
        main_suite("cifar10-subset", "CIFAR-10 subset (5k/1k), cnn, 30 epochs, one-cycle", long),
        ablation_suite(table, SEEDS),
    ]


def run_suite(
    suite: Suite, results: Path, rerun_stale: bool = False, method: str | None = None
) -> None:
    """Run ``suite``'s unfinished runs (only ``method``'s, if given) into ``results``."""
    out = results / suite.name
    configs = []
    rescored: set[Path] = set()
    for config in suite.configs:
        if method not in (None, config.method):
            continue
        run_dir = out / variant_name(config)
        stale = rerun_stale and is_stale(run_dir)
        scores_file = None
        if get_method(config.method).scorer:
            # One scoring run per method and seed serves every prune rate; its cost is still
            # charged to each run that uses it.
            scores = out / f"scores-{config.method}-s{config.seed}.pt"
            if stale and scores not in rescored:  # scores of the old code go with its results
                scores.unlink(missing_ok=True)
                rescored.add(scores)
            scores_file = str(scores)
        configs.append(
            dataclasses.replace(config, out=str(run_dir), scores_file=scores_file, overwrite=stale)
        )
    run_grid([config.resolve() for config in configs], out=None, progress=True)
    for config in configs:
        if _dynamic(config.method) and config.prune == 0.5 and config.seed == 0:
            save_selection(Path(config.out))


def is_stale(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a result of other code or another torch than this checkout's."""
    path = run_dir / "result.json"
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    saved, method = result.get("provenance", {}), result["config"]["method"]
    return any(saved.get(field) != value for field, value in code_identity(method).items())


def _dynamic(method: str) -> bool:
    """Whether ``method`` re-selects its subset as training goes (its selections are kept)."""
    policy = POLICIES.get(method)
    return policy is not None and policy.prunes and policy.reselects


def save_selection(run_dir: Path) -> None:
    """Keep what ``dataprune analyze`` plots as a small committed file (checkpoints are not)."""
    target = run_dir / "selection.json"
    if target.is_file() or not (run_dir / "checkpoint.pt").is_file():
        return
    state = load_pruner_state(run_dir)
    summary = selection_summary(state)
    counts = state["selected_count"].to(torch.int64)
    histogram = torch.bincount(counts, minlength=summary["epochs"] + 1).tolist()
    write_json(
        target, {"summary": summary, "histogram": histogram, "churn": state["progress"]["churn"]}
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a one-minute version for CI")
    parser.add_argument("--report", action="store_true", help="only regenerate the report")
    parser.add_argument("--data-dir", default=None, help="dataset directory")
    parser.add_argument("--results", default=None, help="results directory")
    parser.add_argument("--suite", default=None, help="run only this suite")
    parser.add_argument(
        "--method",
        default=None,
        choices=run_methods(),
        help="run only this method's runs (with --rerun-stale: rerun a method after a fix)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--digests",
        action="store_true",
        help=f"write every method's behaviour digests to {BEHAVIOUR.relative_to(ROOT)} and stop",
    )
    parser.add_argument(
        "--rerun-stale",
        action="store_true",
        help="rerun results of other code or torch instead of refusing them",
    )
    args = parser.parse_args(argv)
    if args.digests:
        write_json(BEHAVIOUR, all_digests())
        print(f"behaviour digests written to {BEHAVIOUR}")
        return 0
    results = Path(args.results) if args.results else RESULTS
    if args.smoke and args.results is None:
        results = ROOT / "runs" / "smoke"
    from report_results import write_results_md

    every = suites(args.smoke, args.data_dir, args.device)
    selected = [s for s in every if args.suite in (None, s.name)]
    if not args.report:
        for suite in selected:
            run_suite(suite, results, args.rerun_stale, args.method)
    out = results / "RESULTS.md" if args.smoke else ROOT / "docs" / "RESULTS.md"
    sections = [(s.name, s.title) for s in every if s.name != "ablations"]
    write_results_md(results, out, sections, smoke=args.smoke)
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
