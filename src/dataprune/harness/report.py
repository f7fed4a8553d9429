"""Tables, JSON, CSV and plots of a comparison. Runs of the same method and prune rate with
different seeds are aggregated as mean and standard deviation, and compared with full data
paired by seed (mean difference and 95% interval, :mod:`dataprune.harness.verdict`)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .files import write_json
from .methods import run_methods
from .results import RunResult
from .verdict import Interval, mean_interval, paired_difference, verdict


@dataclass
class Row:
    """One (method, prune) line of the comparison, over its seeds."""

    method: str
    prune: float
    runs: list[RunResult]

    def _mean_std(self, values: Sequence[float]) -> tuple[float, float]:
        values = list(values)
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def final_accuracy(self) -> tuple[float, float]:
        return self._mean_std(r.final_accuracy for r in self.runs)

    @property
    def best_accuracy(self) -> tuple[float, float]:
        return self._mean_std(r.best_accuracy for r in self.runs)

    @property
    def wall_seconds(self) -> tuple[float, float]:
        return self._mean_std(r.wall_seconds for r in self.runs)

    @property
    def scoring_seconds(self) -> float:
        return statistics.fmean(r.scoring_seconds for r in self.runs)

    @property
    def samples_used(self) -> float:
        return statistics.fmean(r.samples_used for r in self.runs)

    @property
    def scores_source(self) -> str:
        return ", ".join(sorted({r.scores_source for r in self.runs if r.scores_source}))

    def accuracy_by_seed(self) -> dict[int, float]:
        """Final accuracy of each seed's run."""
        return {r.config.seed: r.final_accuracy for r in self.runs}

    def versus(self, other: Row) -> Interval | None:
        """This row's final accuracy minus ``other``'s, paired by seed (None: no common seed)."""
        mine, theirs = self.accuracy_by_seed(), other.accuracy_by_seed()
        return paired_difference(mine, theirs) if set(mine) & set(theirs) else None

    def time_to(self, target: float) -> float | None:
        """Mean time to reach ``target`` over seeds; None if any seed never reached it."""
        times = [r.time_to_accuracy(target) for r in self.runs]
        if any(t is None for t in times):
            return None
        return statistics.fmean(times)


def group(results: Sequence[RunResult]) -> list[Row]:
    """Rows per (method, prune), in the order of ``run_methods()`` and then by prune rate."""
    rows: dict[tuple[str, float], Row] = {}
    for result in results:
        key = (result.config.method, result.config.prune)
        rows.setdefault(key, Row(key[0], key[1], [])).runs.append(result)
    order = run_methods()
    return sorted(rows.values(), key=lambda r: (order.index(r.method), r.prune))


def default_target(rows: Sequence[Row], points: float = 1.0) -> float | None:
    """Full data's mean final accuracy minus ``points`` percentage points."""
    full = [row for row in rows if row.method == "full"]
    return full[0].final_accuracy[0] - points / 100 if full else None


def _pct(values: Sequence[float]) -> str:
    """Mean over seeds ± the half-width of its 95% interval, in percent."""
    interval = mean_interval(values)
    if interval.n < 2:
        return f"{100 * interval.mean:.2f}"
    return f"{100 * interval.mean:.2f} ± {100 * (interval.high - interval.mean):.2f}"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def records(rows: Sequence[Row], target: float | None) -> list[dict[str, object]]:
    """One flat dict per row: the content of the table, CSV and JSON summary."""
    full = [row for row in rows if row.method == "full"]
    full_wall = full[0].wall_seconds[0] if full else None
    out = []
    for row in rows:
        wall = row.wall_seconds[0]
        diff = versus_full(row, rows)
        out.append(
            {
                "method": row.method,
                "prune": row.prune,
                "seeds": len(row.runs),
                "final_accuracy": row.final_accuracy[0],
                "final_accuracy_std": row.final_accuracy[1],
                "best_accuracy": row.best_accuracy[0],
                "wall_seconds": wall,
                "wall_seconds_std": row.wall_seconds[1],
                "scoring_seconds": row.scoring_seconds,
                "speedup_over_full": full_wall / wall if full_wall and wall else None,
                "target_accuracy": target,
                "time_to_target": None if target is None else row.time_to(target),
                "samples_used": row.samples_used,
                "scores_source": row.scores_source,
                # final accuracy minus full's, paired by seed, with its 95% interval
                "vs_full": None if diff is None else diff.mean,
                "vs_full_low": None if diff is None else diff.low,
                "vs_full_high": None if diff is None else diff.high,
                "vs_full_seeds": None if diff is None else diff.n,
                "higher_than_full": None if diff is None else verdict(diff, "higher"),
            }
        )
    return out


def markdown_table(rows: Sequence[Row], target: float | None) -> str:
    """The comparison as a markdown table; wall time counts scoring, selection and evaluation."""
    target_label = "n/a" if target is None else f"{100 * target:.2f}%"
    one_seed = all(len(row.runs) < 2 for row in rows)  # no interval to show
    ci = "" if one_seed else " (95% CI)"
    versus = "one seed, no interval" if one_seed else "95% CI by seed"
    header = (
        f"| method | prune | final acc %{ci} | best acc %{ci} | wall s | scoring s | "
        "speed-up | "
        f"time to {target_label} s | samples used | vs full, points ({versus}) |"
    )
    lines = [header, "|" + "---|" * 10]
    for row, rec in zip(rows, records(rows, target), strict=True):
        scoring = f"{rec['scoring_seconds']:.1f}" if rec["scoring_seconds"] else "0"
        if row.scores_source and row.scores_source != "computed":
            scoring += " (loaded)"
        speedup = rec["speedup_over_full"]
        lines.append(
            f"| {row.method} | {row.prune:g} | {_pct([r.final_accuracy for r in row.runs])} | "
            f"{_pct([r.best_accuracy for r in row.runs])} | {row.wall_seconds[0]:.1f} | "
            f"{scoring} | "
            f"{'-' if speedup is None else f'{speedup:.2f}x'} | "
            f"{'-' if target is None else _secs(rec['time_to_target'])} | "
            f"{row.samples_used:,.0f} | {_versus(row, rows)} |"
        )
    return "\n".join(lines)


def versus_full(row: Row, rows: Sequence[Row]) -> Interval | None:
    """``row``'s final accuracy minus full data's, paired by seed (None for full itself)."""
    full = [r for r in rows if r.method == "full"]
    return row.versus(full[0]) if full and row is not full[0] else None


def _versus(row: Row, rows: Sequence[Row]) -> str:
    """The paired difference to full, with "higher" or "lower" where its interval says so."""
    diff = versus_full(row, rows)
    if diff is None:
        return "-"
    word = {"holds": " higher", "fails": " lower"}.get(verdict(diff, "higher"), "")
    return diff.format(scale=100) + word


def write_reports(results: Sequence[RunResult], out: Path, target: float | None = None) -> str:
    """Write ``results.json``, ``results.csv`` and the PNG plots into ``out``; return the table."""
    rows = group(results)
    if target is None:
        target = default_target(rows)
    table = markdown_table(rows, target)
    out.mkdir(parents=True, exist_ok=True)
    summary = records(rows, target)
    write_json(out / "results.json", {"summary": summary, "runs": [r.to_dict() for r in results]})
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    (out / "results.md").write_text(table + "\n")
    plot_accuracy_vs_time(results, out / "accuracy_vs_time.png")
    plot_accuracy_vs_prune(rows, out / "accuracy_vs_prune.png")
    return table


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    """Labels, grid and legend of an accuracy-against-time plot; writes and closes it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def plot_accuracy_vs_time(results: Sequence[RunResult], path: Path) -> None:
    """Test accuracy against cumulative wall time (scoring counted), one line per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        if not result.epochs:
            continue
        c = result.config
        times = [result.scoring_seconds] + [e.wall_seconds for e in result.epochs]
        accs = [math.nan] + [100 * e.test_accuracy for e in result.epochs]
        label = c.method if c.method == "full" else f"{c.method} p={c.prune:g}"
        ax.plot(times, accs, marker=".", label=f"{label} s{c.seed}")
    _save(
        fig,
        ax,
        path,
        "wall-clock seconds (scoring, selection, training and evaluation)",
        "test accuracy %",
    )


def plot_accuracy_vs_prune(rows: Sequence[Row], path: Path) -> None:
    """Final accuracy (mean ± std over seeds) against prune rate, one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = sorted({row.method for row in rows} - {"full"})
    for method in methods:
        points = sorted((r.prune, *r.final_accuracy) for r in rows if r.method == method)
        ax.errorbar(
            [p for p, _, _ in points],
            [100 * m for _, m, _ in points],
            yerr=[100 * s for _, _, s in points],
            marker="o",
            capsize=3,
            label=method,
        )
    for row in rows:
        if row.method == "full":
            ax.axhline(100 * row.final_accuracy[0], color="black", ls="--", label="full")
    ax.set_xlabel("prune rate (fraction left out per pruned epoch)")
    ax.set_ylabel("final test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_front(rows: Sequence[Row]) -> list[Row]:
    """The rows no other row beats: none is both as fast (mean wall time, every cost counted)
    and as accurate (mean final accuracy) and better in one of them. Ordered by time."""
    points = sorted(rows, key=lambda r: (r.wall_seconds[0], -r.final_accuracy[0]))
    front: list[Row] = []
    for row in points:  # faster rows come first: keep each one more accurate than all before
        if not front or row.final_accuracy[0] > front[-1].final_accuracy[0]:
            front.append(row)
    return front


def plot_frontier(rows: Sequence[Row], path: Path, title: str) -> None:
    """Final accuracy against wall time (means over seeds, every cost counted) of every method
    and prune rate, one marker per method, with the Pareto front (:func:`pareto_front`) drawn."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, method in enumerate(sorted({r.method for r in rows})):
        mine = sorted((r for r in rows if r.method == method), key=lambda r: r.prune)
        times = [r.wall_seconds[0] for r in mine]
        accs = [100 * r.final_accuracy[0] for r in mine]
        # more methods than colours: the marker tells apart those that share one
        ax.scatter(times, accs, s=18, marker="os^D"[i // 10 % 4], label=method)
        for r, t in zip(mine, times, strict=True):
            if r.method != "full":
                ax.annotate(f"{r.prune:g}", (t, 100 * r.final_accuracy[0]), fontsize=6)
    front = pareto_front(rows)
    ax.step(
        [r.wall_seconds[0] for r in front],
        [100 * r.final_accuracy[0] for r in front],
        where="post",
        color="black",
        lw=1,
        label="Pareto front",
    )
    ax.set_title(title, fontsize=9)
    _save(
        fig,
        ax,
        path,
        "wall-clock seconds, mean over seeds (scoring, selection, training, evaluation)",
        "final test accuracy %, mean over seeds",
    )
