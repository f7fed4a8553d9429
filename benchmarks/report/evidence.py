"""The result files of a setting, and what is measured from them: paired by seed against full
training (or any other cell), the difference, the time share and the compute share."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dataprune.harness.methods import run_methods
from dataprune.harness.verdict import Interval, mean_interval

from .tables import (
    ARCHIVE,
    BASELINES,
    BEHAVIOUR,
    SETTINGS,
    TARGETS,
    TIE_BREAK_PRUNE,
    Metric,
    Target,
)

Options = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Run:
    """One result file, in the terms the report compares runs in."""

    method: str
    prune: float
    seed: int
    options: Options
    value: float  # the setting's metric: final test accuracy, or held-out loss per token
    training_seconds: float  # every cost but evaluation
    steps: int
    forwarded: int | None  # None: written before the pruner counted them
    backpropagated: int | None
    perplexity: float | None
    device: str
    commit: str
    behaviour: dict[str, str]  # the method's behaviour digests when it ran


def read_run(path: Path) -> Run:
    """A run of either schema: the harness's ``RunResult`` or the text setting's."""
    result = json.loads(path.read_text())
    config, summary = result["config"], result.get("pruner_summary", {})
    common = dict(
        method=config["method"],
        prune=config["prune"],
        seed=config["seed"],
        options=tuple(sorted(config.get("options", {}).items())),
        forwarded=summary.get("samples_forwarded"),
        backpropagated=summary.get("samples_backpropagated"),
        device=result.get("device_name", ""),
        commit=result.get("provenance", {}).get("commit", "")[:7],
        behaviour=result.get("provenance", {}).get("behaviour", {}),
    )
    if result.get("setting") == "text":
        return Run(
            **common,
            value=result["held_out_loss"],
            training_seconds=result["train_seconds"],
            steps=result["steps"],
            perplexity=result["perplexity"],
        )
    epochs = result["epochs"]
    return Run(
        **common,
        value=result["final_accuracy"],
        training_seconds=result["wall_seconds"] - sum(e["eval_seconds"] for e in epochs),
        steps=sum(e.get("steps", 0) for e in epochs),
        perplexity=None,
    )


@dataclass
class Cell:
    """A method at a prune rate (with options, for peek's variants), by seed."""

    method: str
    prune: float
    options: Options
    runs: dict[int, Run]
    archived: bool = False

    @property
    def name(self) -> str:
        extras = options_text(self.options)
        return f"{self.method} ({extras})" if extras else self.method


def options_text(options: Iterable[tuple[str, object]]) -> str:
    """``name=value`` for each option, comma-separated ("" for none)."""
    return ", ".join(f"{key}={value}" for key, value in options)


def cells(runs: list[Run], archived: bool = False) -> list[Cell]:
    """The runs by cell, in the order of ``run_methods()``, then prune rate and options."""
    by_key: dict[tuple, Cell] = {}
    for run in runs:
        key = (run.method, run.prune, run.options)
        by_key.setdefault(key, Cell(*key, {}, archived)).runs[run.seed] = run
    order = run_methods()
    return sorted(by_key.values(), key=lambda c: (order.index(c.method), c.prune, c.options))


@dataclass
class Setting:
    """One setting's results: this edition's, then the archived ones (marked)."""

    name: str
    metric: Metric
    cells: list[Cell]
    archived_full: Cell | None  # what the archived cells are compared with
    forward_share: float | None  # f: a forward pass's share of a training step

    def cell(
        self, method: str, prune: float = 0.0, options: dict[str, object] | None = None
    ) -> Cell | None:
        """This edition's cell of ``method`` at ``prune`` with ``options``, if measured."""
        key = (method, prune, tuple(sorted((options or {}).items())), False)
        found = (c for c in self.cells if (c.method, c.prune, c.options, c.archived) == key)
        return next(found, None)

    @property
    def full(self) -> Cell | None:
        return self.cell("full")

    def baseline(self, cell: Cell) -> Cell | None:
        """The full training ``cell`` ran beside: its own suite's."""
        return self.archived_full if cell.archived else self.full

    def versus(self, cell: Cell | None, other: Cell | None) -> Comparison | None:
        """``cell`` against ``other``, paired by seed (None: either is missing)."""
        return compare(cell, other, self.metric, self.forward_share) if cell and other else None

    def versus_full(self, cell: Cell | None) -> Comparison | None:
        return self.versus(cell, self.baseline(cell) if cell else None)

    @property
    def runs(self) -> list[Run]:
        return [run for c in self.cells if not c.archived for run in c.runs.values()]


def read_runs(folder: Path) -> list[Run]:
    return [read_run(path) for path in sorted(folder.glob("*/result.json"))]


def carried(
    archived: list[Run], fresh: set[str], behaviour: dict[str, dict[str, str]]
) -> list[Run]:
    """The archived runs :data:`ARCHIVE` reports: the scorers', and those of any method this
    edition did not rerun, wherever they carry this code's behaviour digests (full's too)."""
    return [
        run
        for run in archived
        if (run.method in ARCHIVE.methods or run.method not in fresh or run.method == "full")
        and run.behaviour == behaviour.get(run.method)
    ]


def load_setting(results_dir: Path, name: str) -> Setting | None:
    """The setting's results, or None where it has none yet."""
    folder = results_dir / name
    runs = read_runs(folder)
    behaviour = json.loads(BEHAVIOUR.read_text()) if BEHAVIOUR.is_file() else {}
    archived = read_runs(results_dir / ARCHIVE.folder / name)
    old = cells(carried(archived, {r.method for r in runs}, behaviour), True)
    if not runs and all(c.method == "full" for c in old):
        return None
    share = folder / "forward_share.json"
    return Setting(
        name,
        SETTINGS[name],
        cells(runs) + [c for c in old if c.method != "full"],
        next((c for c in old if c.method == "full"), None),
        json.loads(share.read_text())["forward_share"] if share.is_file() else None,
    )


@dataclass(frozen=True)
class Comparison:
    """One cell against another over the seeds both have."""

    difference: Interval  # in the metric's unit
    time_share: Interval  # training time over the other's, seed by seed
    compute_share: float | None


def compare(
    cell: Cell, other: Cell, metric: Metric, forward_share: float | None = None
) -> Comparison | None:
    seeds = sorted(cell.runs.keys() & other.runs.keys())
    if not seeds:
        return None
    mine, theirs = [cell.runs[s] for s in seeds], [other.runs[s] for s in seeds]
    pairs = list(zip(mine, theirs, strict=True))
    return Comparison(
        mean_interval(metric.difference(a.value, b.value) for a, b in pairs),
        mean_interval(a.training_seconds / b.training_seconds for a, b in pairs),
        compute_share(mine, theirs, forward_share),
    )


def compute_share(runs: list[Run], others: list[Run], forward_share: float | None) -> float | None:
    """(f·F + (1−f)·B) / (f·F' + (1−f)·B'): samples forwarded F and back-propagated B, each
    weighted by its share of a step's cost, against the other runs'."""
    counted = all(r.forwarded is not None for r in [*runs, *others])
    if forward_share is None or not counted:
        return None

    def cost(group: list[Run]) -> float:
        return sum(
            forward_share * r.forwarded + (1 - forward_share) * r.backpropagated for r in group
        )

    return cost(runs) / cost(others)


def goodness(metric: Metric, difference: float) -> float:
    """A difference oriented so that more is better, whatever the metric."""
    return difference if metric.higher_is_better else -difference


@dataclass(frozen=True)
class Check:
    met: bool
    text: str


def check_limit(label: str, value: float, limit: float, metric: Metric) -> Check:
    """``value`` against a floor (accuracy) or a ceiling (loss): met, or missed by how much."""
    if not math.isfinite(value):  # an interval's end, from a single seed
        return Check(False, f"{label}: no interval from 1 seed")
    margin = goodness(metric, value - limit)
    word = "met" if margin >= 0 else f"missed by {-margin:.2f}{metric.unit}"
    return Check(margin >= 0, f"{label} {value:+.2f}, {word}")


def check_time(share: float, limit: float, label: str = "time") -> Check:
    over = share - limit
    return Check(over <= 0, f"{label} {share:.2f}, " + ("met" if over <= 0 else f"{over:.2f} over"))


def target_checks(target: Target, comparison: Comparison, metric: Metric) -> list[Check]:
    """Each part of ``target``: the time share, the mean difference, the interval's end."""
    mean_limit, end_limit = target.limits[metric.name]
    diff = comparison.difference
    checks = [
        check_time(comparison.time_share.mean, target.time_share),
        check_limit("mean", diff.mean, mean_limit, metric),
    ]
    if end_limit is not None:
        if metric.higher_is_better:
            checks.append(check_limit("lower end", diff.low, end_limit, metric))
        else:
            checks.append(check_limit("upper end", diff.high, end_limit, metric))
    return checks


def meets(setting: Setting, method: str, target: Target) -> bool:
    comparison = setting.versus_full(setting.cell(method, target.prune))
    return comparison is not None and all(
        check.met for check in target_checks(target, comparison, setting.metric)
    )


def is_candidate(cell: Cell) -> bool:
    """Whether ``cell`` is a method a user could pick: of this edition, pruning, no options."""
    return not cell.archived and not cell.options and cell.method not in BASELINES


def candidates(settings: list[Setting]) -> list[str]:
    names = {c.method for s in settings for c in s.cells if is_candidate(c)}
    return sorted(names, key=run_methods().index)


def pareto_front(
    points: list[tuple[Cell, Comparison]], metric: Metric
) -> list[tuple[Cell, Comparison]]:
    """The points no other beats in both time share and difference to full, by time share."""
    front: list[tuple[Cell, Comparison]] = []
    ordered = sorted(
        points,
        key=lambda p: (p[1].time_share.mean, -goodness(metric, p[1].difference.mean)),
    )
    for cell, comparison in ordered:  # cheaper first: keep each better than all before it
        better = goodness(metric, comparison.difference.mean)
        if not front or better > goodness(metric, front[-1][1].difference.mean):
            front.append((cell, comparison))
    return front


def recommended_method(settings: list[Setting]) -> str | None:
    """The method that meets the most targets over all settings; a tie goes to the best mean
    rank of the difference to full at :data:`TIE_BREAK_PRUNE` (1: the best candidate)."""
    names = candidates(settings)
    ranks: dict[str, list[int]] = {name: [] for name in names}
    for setting in settings:
        scored = []
        for name in names:
            comparison = setting.versus_full(setting.cell(name, TIE_BREAK_PRUNE))
            if comparison:
                scored.append((goodness(setting.metric, comparison.difference.mean), name))
        for rank, (_, name) in enumerate(sorted(scored, reverse=True), 1):
            ranks[name].append(rank)

    def evidence(name: str) -> tuple[int, float]:
        mean_rank = statistics.fmean(ranks[name]) if ranks[name] else float("inf")
        return -targets_met(settings, name), mean_rank

    return min(names, key=evidence, default=None)


def targets_met(settings: list[Setting], method: str) -> int:
    return sum(meets(s, method, t) for s in settings for t in TARGETS)


def measured_prunes(setting: Setting, method: str) -> set[float]:
    """The rates at which ``method`` was measured in ``setting`` (this edition, no options)."""
    return {c.prune for c in setting.cells if c.method == method and is_candidate(c)}


def targets_measured(settings: list[Setting], method: str) -> int:
    """How many targets ``method`` was measured for (this edition, at the target's rate)."""
    return sum(t.prune in measured_prunes(s, method) for s in settings for t in TARGETS)


def supported_prunes(settings: list[Setting], method: str) -> list[float]:
    """The targets' rates whose target ``method`` meets in every setting it was measured in."""
    measured = [s for s in settings if measured_prunes(s, method)]
    return [t.prune for t in TARGETS if measured and all(meets(s, method, t) for s in measured)]


def recommended_prune(settings: list[Setting], method: str) -> float:
    """The rate the evidence supports for ``method``: the highest of
    :func:`supported_prunes`; where there is none, the lowest rate it was measured at."""
    supported = supported_prunes(settings, method)
    if supported:
        return max(supported)
    rates = [prune for s in settings for prune in measured_prunes(s, method)]
    return min(rates, default=TIE_BREAK_PRUNE)
