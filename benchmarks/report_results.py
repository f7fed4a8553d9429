"""docs/RESULTS.md from the committed result files: tables, plots and a verdict per claim.

Every number and verdict below is computed here from ``benchmarks/results/**/result.json`` (and
``selection.json``); nothing is typed by hand. Run ``python benchmarks/reproduce.py --report``.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dataprune import Pruner, methods
from dataprune.harness.config import RunConfig
from dataprune.harness.methods import scorers
from dataprune.harness.report import (
    Row,
    group,
    markdown_table,
    plot_accuracy_vs_prune,
    plot_accuracy_vs_time,
    plot_frontier,
    pyplot,
)
from dataprune.harness.results import RunResult
from dataprune.harness.verdict import (
    FAILS,
    HOLDS,
    NO_DIFFERENCE,
    mean_interval,
    overall,
    tally,
    verdict,
)
from dataprune.policies import POLICIES

STATIC = scorers()
DYNAMIC = tuple(m for m, p in POLICIES.items() if p.prunes and p.reselects)
AGGRESSIVE = (0.7, 0.9)


#: The suite in issue 15's table setting: the ablations share it, and the targets and the
#: README's headline are measured in it.
TABLE_SETTING = "fashion-mnist-table"
#: prune rate -> (accuracy target: points below full's, training-time target: share of full's)
TARGETS = {0.5: (-0.1, 0.53), 0.7: (-0.5, None)}


@dataclass(frozen=True)
class Erratum:
    """A defect found after results were measured: the method whose runs it touched, the
    package sources (prefixes of ``provenance["source"]``) that carry it, and what it did.
    Runs measured before the fix and rerun since are kept under
    ``benchmarks/results/errata/<method>/<suite>/``, so that the report measures the defect."""

    method: str
    sources: tuple[str, ...]
    fixed_in: str
    what: str


ERRATA = (
    Erratum(
        method="kakurenbo",
        sources=("e192c934c759", "a7c17008242e"),
        fixed_in="30d803a",
        what="the harness refreshed the hidden samples' losses in training mode, so every "
        "evaluation used BatchNorm statistics of the hidden (easiest) samples alone",
    ),
)


def load_results(folder: Path) -> list[RunResult]:
    return [
        RunResult.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*/result.json"))
    ]


def _row(rows: Sequence[Row], method: str, prune: float | None = None) -> Row | None:
    for row in rows:
        if row.method == method and (prune is None or row.prune == prune):
            return row
    return None


def _acc(row: Row) -> float:
    return 100 * row.final_accuracy[0]


def _fmt_acc(row: Row) -> str:
    """Mean final accuracy over seeds with its 95% interval: ``90.25±0.30%``."""
    interval = mean_interval(row.accuracy_by_seed().values())
    if interval.n < 2:
        return f"{100 * interval.mean:.2f}% (1 seed)"
    return f"{100 * interval.mean:.2f}±{100 * (interval.high - interval.mean):.2f}%"


def training_seconds(row: Row) -> float:
    """Mean wall time less evaluation: scoring, selection, training and checkpoints."""
    return statistics.fmean(
        r.wall_seconds - sum(e.eval_seconds for e in r.epochs) for r in row.runs
    )


def step_seconds(row: Row) -> float:
    """Mean training seconds per optimizer step (training alone: no selection, no evaluation)."""
    return statistics.fmean(
        sum(e.train_seconds for e in r.epochs) / max(1, sum(e.steps for e in r.epochs))
        for r in row.runs
    )


def _saves_time(row: Row, full: Row) -> bool:
    return training_seconds(row) < training_seconds(full)


def best_at(rows: Sequence[Row], prune: float, full: Row) -> Row | None:
    """The most accurate method (mean final accuracy over seeds) at ``prune`` among those that
    train in less time than ``full``: one that costs more saves nothing, whatever its accuracy."""
    candidates = [
        r for r in rows if r.prune == prune and r.method != "full" and _saves_time(r, full)
    ]
    return max(candidates, key=_acc, default=None)


def targets_section(rows: Sequence[Row], full: Row) -> str:
    """Issue 15's targets: the best method's accuracy against full's at prune 0.5 and 0.7, and
    its training time (evaluation apart) against full's at 0.5; met or missed by how much."""
    lines = [
        "| prune | best method | accuracy | vs full, points [95% CI] | accuracy target | "
        "training time / full's | time target | fastest within the accuracy target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prune, (points, time_share) in TARGETS.items():
        best = best_at(rows, prune, full)
        if best is None:
            lines.append(f"| {prune:g} | not measured yet | | | | | | |")
            continue
        gap = _gap(best, full)
        share = training_seconds(best) / training_seconds(full)
        within = [r for r in rows if r.prune == prune and _gap(r, full) >= points]
        fastest = min(within, key=training_seconds, default=None)
        lines.append(
            f"| {prune:g} | {best.method} | {_fmt_acc(best)} | {_paired(best, full)[0]} | "
            f"{points:+.1f}: {_met(gap - points)} | {share:.2f} | "
            + ("-" if time_share is None else f"≤ {time_share:.2f}: {_met(time_share - share)}")
            + " | "
            + (
                "none"
                if fastest is None
                else f"{fastest.method}, {training_seconds(fastest) / training_seconds(full):.2f}"
            )
            + " |"
        )
    slower = sorted({r.method for r in rows if r.prune in TARGETS and not _saves_time(r, full)})
    text = (
        f"Full training: {_fmt_acc(full)} in {training_seconds(full):.1f} s of training "
        "(wall time less evaluation, every other cost counted). The best method is the most "
        "accurate of those that train in less time than full"
        + (f" (not so here: {', '.join(slower)})" if slower else "")
        + ". A target is met on the mean over seeds; the interval says how surely.\n\n"
        + "\n".join(lines)
    )
    for prune in TARGETS:
        same_steps, best = _row(rows, "full-matched", prune), best_at(rows, prune, full)
        if same_steps is None or best is None or _gap(same_steps, full) >= 0:
            continue
        loss, kept = _gap(same_steps, full), _gap(best, full)
        text += (
            f"\n\nAt prune {prune:g}, `full-matched` (full data, the pruned runs' step count) "
            f"is {_paired(same_steps, full)[0]} points from full: what {100 * prune:g}% fewer "
            f"steps cost in this setting. {best.method} recovers "
            f"{100 * (1 - kept / loss):.0f}% of that."
        )
    matched = [r for r in rows if r.method == "full-matched" and r.prune in TARGETS]
    if matched and full.runs[0].steps:
        drift = statistics.fmean(step_seconds(r) for r in matched) / step_seconds(full)
        steps = ", ".join(
            f"{b.method} at {p:g}: {step_seconds(b) / step_seconds(full):.2f}"
            for p in TARGETS
            if (b := best_at(rows, p, full)) is not None
        )
        text += (
            f"\n\nTime per optimizer step against full's: {steps}. `full-matched` runs full "
            f"training's own code for fewer steps, so its ratio, {drift:.2f}, is how much "
            "slower the machine ran during the pruned runs than during full's (a shared VM; "
            "full's runs come first): what a ratio above the step count's share owes to the "
            "machine rather than to pruning."
        )
    return text


def _gap(row: Row, full: Row) -> float:
    """``row``'s accuracy minus full's in points, paired by seed (the seeds both have)."""
    diff = row.versus(full)
    return -math.inf if diff is None else 100 * diff.mean


def _met(margin: float) -> str:
    """``"met"``, or ``"missed by <margin>"`` for a negative margin."""
    return "met" if margin >= 0 else f"missed by {-margin:.2f}"


def _verdict(hits: int, total: int) -> str:
    if total == 0:
        return "not measured"
    if hits == total:
        return "holds"
    return "fails" if hits == 0 else "mixed"


def targets_table(rows: Sequence[Row], full: Row) -> str:
    """Time to full's accuracy minus 0.5 and minus 1.0 points, for every row."""
    t05 = full.final_accuracy[0] - 0.005
    t10 = full.final_accuracy[0] - 0.010
    lines = [
        f"| method | prune | time to {100 * t05:.2f}% s | time to {100 * t10:.2f}% s |",
        "|---|---|---|---|",
    ]
    for row in rows:
        a, b = row.time_to(t05), row.time_to(t10)
        lines.append(
            f"| {row.method} | {row.prune:g} | {'never' if a is None else f'{a:.1f}'} | "
            f"{'never' if b is None else f'{b:.1f}'} |"
        )
    return "\n".join(lines)


def claim_static_cost(rows: Sequence[Row], full: Row) -> str:
    full_wall = full.wall_seconds[0]
    cells = [r for r in rows if r.method in STATIC]
    lines = [
        "| scorer | prune | scoring s | total wall s | full wall s | costs more than it saves |"
    ]
    lines.append("|---|---|---|---|---|---|")
    hits = 0
    for r in cells:
        worse = r.wall_seconds[0] >= full_wall
        hits += worse
        lines.append(
            f"| {r.method} | {r.prune:g} | {r.scoring_seconds:.1f} | {r.wall_seconds[0]:.1f} | "
            f"{full_wall:.1f} | {'yes' if worse else 'no'} |"
        )
    verdict = _verdict(hits, len(cells))
    text = (
        f"**Verdict: {verdict}.** In {hits} of {len(cells)} (scorer, prune) cells the total wall "
        f"time with scoring counted is at least full training's {full_wall:.1f} s."
    )
    return text + "\n\n" + "\n".join(lines)


def erratum_of(row: Row) -> Erratum | None:
    """The erratum whose defect ``row``'s runs carry, if any."""
    for erratum in ERRATA:
        sources = (r.provenance.get("source", "") for r in row.runs)
        if row.method == erratum.method and any(s.startswith(erratum.sources) for s in sources):
            return erratum
    return None


def _marked(row: Row) -> str:
    """``row``'s method, marked ‡ when its runs carry a defect fixed since."""
    return f"`{row.method}`" + ("‡" if erratum_of(row) else "")


def errata_lines(folder: Path, rows: Sequence[Row]) -> list[str]:
    """A paragraph per erratum that touches the suite in ``folder``: for rows still from the
    defective code, what to rerun; for rows rerun since, the fix's effect, paired by seed."""
    lines = []
    for erratum in ERRATA:
        mine = [r for r in rows if r.method == erratum.method]
        head = f"**Erratum (`{erratum.method}`):** {erratum.what}; fixed in {erratum.fixed_in}."
        if any(erratum_of(r) for r in mine):
            lines.append(
                f"{head} Its runs here predate the fix and understate it. Rerun: "
                f"`python benchmarks/reproduce.py --suite {folder.name} --method "
                f"{erratum.method} --rerun-stale`."
            )
            continue
        before = group(load_results(folder.parent / "errata" / erratum.method / folder.name))
        effects = []
        for old in before:
            new = _row(mine, old.method, old.prune)
            if new is not None:
                effects.append(
                    f"prune {old.prune:g}: {_fmt_acc(old)} before, {_fmt_acc(new)} after "
                    f"({_paired(new, old)[0]} points)"
                )
        if effects:
            lines.append(
                f"{head} Rerun here with the fix after the rest of the suite, paired by seed: "
                f"{'; '.join(effects)}. {_speed_check(before, rows)}"
            )
    return lines


def _speed_check(before: Sequence[Row], rows: Sequence[Row]) -> str:
    """How fast the machine ran for a rerun, against the suite: full training's seeds run
    again beside the rerun (kept with the erratum's runs), if any, against the suite's."""
    again, suite = _row(before, "full"), _row(rows, "full")
    if again is None or suite is None:
        return "Its time ratios assume the machine's speed held; no speed check was run."
    seeds = {r.config.seed for r in again.runs}
    then = [r for r in suite.runs if r.config.seed in seeds]
    ratio = sum(r.wall_seconds for r in again.runs) / sum(r.wall_seconds for r in then)
    same = {r.config.seed: r.final_accuracy for r in again.runs} == {
        r.config.seed: r.final_accuracy for r in then
    }
    return (
        f"Full training (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, sorted(seeds)))}) "
        "run again beside the "
        f"rerun took {ratio:.2f}x its time in the suite"
        + (", at the same accuracy" if same else "")
        + ": the rerun's time ratios against full are off by about that factor."
    )


def _paired(a: Row, b: Row, claim: str = "higher") -> tuple[str, str]:
    """``a``'s accuracy minus ``b``'s, paired by seed (points, 95% CI), and the verdict on the
    claim that ``a`` is ``claim`` ("higher" or "lower") than ``b``."""
    diff = a.versus(b)
    if diff is None:
        return "no common seed", NO_DIFFERENCE
    return diff.format(scale=100), verdict(diff, claim)


def claim_random_beats_static(rows: Sequence[Row]) -> str:
    lines = ["| prune | random | static scorer | random − scorer, points | verdict |"]
    lines.append("|---|---|---|---|---|")
    verdicts = []
    for p in AGGRESSIVE:
        rnd = _row(rows, "random", p)
        statics = [r for s in STATIC if (r := _row(rows, s, p)) is not None]
        if rnd is None:
            continue
        for static in statics:
            diff, word = _paired(rnd, static)
            verdicts.append(word)
            lines.append(
                f"| {p:g} | {_fmt_acc(rnd)} | {static.method} {_fmt_acc(static)} | {diff} | "
                f"{word} |"
            )
    rates = ", ".join(f"{p:g}" for p in AGGRESSIVE)
    text = (
        f"**Verdict: {overall(verdicts)}.** Uniform random dynamic pruning is more accurate than "
        f"each static scorer at the aggressive prune rates ({rates}), paired by seed with a 95% "
        f"interval: {tally(verdicts)} (scorer, prune) comparisons."
    )
    return text + "\n\n" + "\n".join(lines)


def claim_bandits_beat_random(rows: Sequence[Row], prunes: Sequence[float]) -> str:
    lines = ["| prune | random | method | method − random, points | verdict |"]
    lines.append("|---|---|---|---|---|")
    verdicts = []
    for p in prunes:
        rnd = _row(rows, "random", p)
        if rnd is None:
            continue
        for method in ("epsilon-greedy", "ucb"):
            row = _row(rows, method, p)
            if row is None:
                continue
            diff, word = _paired(row, rnd)
            verdicts.append(word)
            lines.append(
                f"| {p:g} | {_fmt_acc(rnd)} | {method} {_fmt_acc(row)} | {diff} | {word} |"
            )
    text = (
        f"**Verdict: {overall(verdicts)}.** ε-greedy or UCB is more accurate than random, paired "
        f"by seed with a 95% interval: {tally(verdicts)} (method, prune) comparisons."
    )
    return text + "\n\n" + "\n".join(lines)


def best_speedup(rows: Sequence[Row], full: Row, points: float = 1.0) -> tuple[Row, float] | None:
    """The row with the largest speed-up over full whose accuracy is within ``points``."""
    floor = _acc(full) - points
    best = None
    for r in rows:
        if r.method == "full" or _acc(r) < floor:
            continue
        speed = full.wall_seconds[0] / r.wall_seconds[0]
        if best is None or speed > best[1]:
            best = (r, speed)
    return best


def claim_speedup(rows: Sequence[Row], full: Row) -> str:
    best = best_speedup(rows, full)
    if best is None:
        return "**Verdict: fails.** No pruned run stayed within 1 point of full accuracy."
    row, speed = best
    verdict_2x = "holds" if speed >= 2 else ("mixed" if speed >= 1.2 else "fails")
    verdict_10x = "holds" if speed >= 10 else "fails"
    return (
        f"**Verdict: up to 2x {verdict_2x}; up to 10x {verdict_10x}.** The largest speed-up "
        f"within 1 point of full's {_fmt_acc(full)} is {speed:.2f}x, by {row.method} at "
        f"prune {row.prune:g} ({_fmt_acc(row)}, {row.wall_seconds[0]:.1f} s against "
        f"{full.wall_seconds[0]:.1f} s)."
    )


def _variant(config: RunConfig) -> tuple:
    """What tells an ablation variant from the main grid's run of the same method."""
    return (
        config.method,
        config.every,
        config.options.get("bonus", "std"),
        config.rescale,
        config.anneal_epochs,
    )


def _ablation_rows(ablation: Sequence[RunResult]) -> list[Row]:
    """The ablation runs, one row per variant over its seeds."""
    variants: dict[tuple, Row] = {}
    for r in ablation:
        key = _variant(r.config)
        variants.setdefault(key, Row(r.config.method, r.config.prune, [])).runs.append(r)
    return [variants[key] for key in sorted(variants, key=str)]


def claim_rescale_and_matched(rows: Sequence[Row], ablation: Sequence[RunResult]) -> str:
    parts = []
    # 5a: rescale + anneal on (off, for infobatch) against the main grid's run, paired by seed.
    if ablation:
        lines = [
            "| method | rescale | anneal epochs | final accuracy | − main grid's run, points | "
            "verdict |",
            "|---|---|---|---|---|---|",
        ]
        verdicts = []
        p = ablation[0].config.prune
        for variant in _ablation_rows(ablation):
            config = variant.runs[0].config
            base = _row(rows, variant.method, p)
            if config.every != 1 or config.options or base is None:
                continue
            both = bool(config.rescale) and (config.anneal_epochs or 0) > 0
            diff, word = _paired(variant, base, "higher" if both else "lower")
            verdicts.append(word)
            lines.append(
                f"| {variant.method} | {config.rescale} | {config.anneal_epochs} | "
                f"{_fmt_acc(variant)} | {diff} | {word} |"
            )
        parts.append(
            f"**5a. Verdict: {overall(verdicts)}.** Turning rescaling plus full-data annealing "
            f"on raises accuracy (turning it off, for infobatch, lowers it), against the main "
            f"grid's runs at prune {p:g}, paired by seed with a 95% interval: "
            f"{tally(verdicts)} ablations.\n\n" + "\n".join(lines)
        )
    # 5b: random subsets vs full data for the same optimizer steps, paired by seed.
    lines = [
        "| prune | random | full-matched | random − full-matched, points | verdict |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    for r in rows:
        matched = _row(rows, "full-matched", r.prune)
        if r.method != "random" or matched is None:
            continue
        diff, word = _paired(r, matched, "lower")
        verdicts.append(word)
        lines.append(f"| {r.prune:g} | {_fmt_acc(r)} | {_fmt_acc(matched)} | {diff} | {word} |")
    parts.append(
        f"**5b. Verdict: {overall(verdicts)}.** Random dynamic pruning is no more accurate than "
        f"full data for the same optimizer steps, paired by seed with a 95% interval "
        f'("no difference measured" is what the claim predicts; "fails" means random is '
        f"measurably better): {tally(verdicts)} prune rates.\n\n" + "\n".join(lines)
    )
    return "\n\n".join(parts)


def _steps(row: Row) -> float:
    """Mean optimizer steps per run: a cost that does not depend on the machine's speed."""
    return statistics.fmean(r.steps for r in row.runs)


def ablation_table(ablation: Sequence[RunResult], main: Sequence[Row]) -> str:
    """Each ablation variant beside the main grid's run of the same method at the same rate,
    paired by seed; cost in optimizer steps, since the two may be measured on other days."""
    p = ablation[0].config.prune
    lines = [
        "| method | every | ucb bonus | rescale | anneal | final acc (95% CI) | "
        "− main grid's run, points | measured | optimizer steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    variants = _ablation_rows(ablation)
    for row in [r for r in main if r.prune == p and r.method in {v.method for v in variants}]:
        method, every, bonus, rescale, anneal = _variant(row.runs[0].config)
        lines.append(
            f"| {method} (main grid) | {every} | {bonus} | {rescale} | {anneal} | "
            f"{_fmt_acc(row)} | - | - | {_steps(row):,.0f} |"
        )
    for variant in variants:
        method, every, bonus, rescale, anneal = _variant(variant.runs[0].config)
        base = _row(main, method, p)
        diff, word = _paired(variant, base) if base is not None else ("-", "-")
        word = {HOLDS: "higher", FAILS: "lower"}.get(word, word)
        lines.append(
            f"| {method} | {every} | {bonus} | {rescale} | {anneal} | {_fmt_acc(variant)} | "
            f"{diff} | {word} | {_steps(variant):,.0f} |"
        )
    return "\n".join(lines)


def sometimes_section(folder: Path, figures: Path, rel: str) -> str:
    """Selection-frequency histograms and churn, from each run's selection.json."""
    files = sorted(folder.glob("*/selection.json"))
    if not files:
        return "No selection records were saved for this suite."
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lines = ["| run | always | sometimes | never |", "|---|---|---|---|"]
    for path in files:
        rec = json.loads(path.read_text())
        name = path.parent.name
        ax1.plot(range(len(rec["histogram"])), rec["histogram"], marker="o", label=name)
        ax2.plot(
            [c["epoch"] for c in rec["churn"]], [c["entered"] for c in rec["churn"]], label=name
        )
        s = rec["summary"]
        lines.append(f"| {name} | {s['always']:,} | {s['sometimes']:,} | {s['never']:,} |")
    ax1.set_xlabel("epochs in which a sample was selected")
    ax1.set_ylabel("samples")
    ax1.legend(fontsize=6)
    ax2.set_xlabel("epoch of re-selection")
    ax2.set_ylabel("samples entering the kept set")
    ax2.legend(fontsize=6)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(figures / f"{folder.name}-sometimes.png", dpi=110)
    plt.close(fig)
    return (
        "\n".join(lines)
        + f"\n\n![selection frequency and churn]({rel}/{folder.name}-sometimes.png)"
    )


def code_line(results: Sequence[RunResult]) -> str:
    """Which code produced ``results``: the package source's hash and the commit of each."""
    codes = sorted(
        {
            (r.provenance.get("source", "unknown")[:12], r.provenance.get("commit", "unknown")[:7])
            for r in results
        }
    )
    named = ", ".join(f"source {source} (commit {commit})" for source, commit in codes)
    return f"Code: {named}." if len(codes) == 1 else f"Code, {len(codes)} versions: {named}."


def suite_section(folder: Path, figures: Path, rel: str, title: str) -> tuple[str, list[Row]]:
    results = load_results(folder)
    rows = group(results)
    full = _row(rows, "full")
    if full is None:
        return f"## {title}\n\nNo results yet.\n", rows
    figures.mkdir(parents=True, exist_ok=True)
    plot_accuracy_vs_prune(rows, figures / f"{folder.name}-accuracy-vs-prune.png")
    mid = [r for r in results if r.config.seed == 0 and r.config.prune in (0.0, 0.5)]
    plot_accuracy_vs_time(mid, figures / f"{folder.name}-accuracy-vs-time.png")
    plot_frontier(rows, figures / f"{folder.name}-frontier.png", title)
    prunes = sorted({r.prune for r in rows if r.method not in ("full",)})
    ablation_dir = folder.parent / "ablations"
    # the ablations run in the table's setting (benchmarks/reproduce.py)
    ablation = load_results(ablation_dir) if folder.name == TABLE_SETTING else []
    device = results[0].device_name
    config = results[0].config
    scoring_epochs = config.resolve().scoring_epochs
    checkpoints = any(e.checkpoint_seconds for r in results for e in r.epochs)
    body = [
        f"## {title}",
        f"Device: {device}. {config.epochs} epochs, batch {config.batch_size}, peak lr "
        f"{config.lr}, {len(results)} runs; static scorers trained {scoring_epochs} "
        f"epochs x {config.score_runs} runs (forgetting: 1 run). Checkpoint writes are "
        + (
            "counted in the wall time."
            if checkpoints
            else "not in these wall times (the runs "
            "predate that accounting; the harness counts them now)."
        )
        + f" {code_line(results)}",
        *errata_lines(folder, rows),
        "### All runs",
        markdown_table(rows, full.final_accuracy[0] - 0.01),
        targets_table(rows, full),
        f"![accuracy vs prune]({rel}/{folder.name}-accuracy-vs-prune.png)",
        f"![accuracy vs wall time, prune 0.5, seed 0]({rel}/{folder.name}-accuracy-vs-time.png)",
        f"![accuracy vs wall time, every method and prune rate, with the Pareto front]"
        f"({rel}/{folder.name}-frontier.png)",
        "### Claim 1: static scorers often cost more in total time than they save",
        claim_static_cost(rows, full),
        "### Claim 2: random dynamic pruning beats static scorers at aggressive rates",
        claim_random_beats_static(rows),
        "### Claim 3: ε-greedy and UCB beat uniform random dynamic pruning",
        claim_bandits_beat_random(rows, prunes),
        "### Claim 4: up to 2x (arXiv) or 10x (TMLR) faster without significant loss",
        claim_speedup(rows, full),
        "### Claim 5: rescaling + annealing make pruning lossless; random ≈ fewer epochs",
        claim_rescale_and_matched(rows, ablation),
        '### "Sometimes" samples',
        sometimes_section(folder, figures, rel),
    ]
    if folder.name == TABLE_SETTING:
        body[2:2] = [
            "### Targets: the best method at prune 0.5 and 0.7 against full training",
            targets_section(rows, full),
        ]
    if ablation:
        body += [
            "### Ablations at prune 0.5, against the main grid's runs",
            "Each variant's accuracy minus the main grid's run of the same method, paired by "
            "seed; cost in optimizer steps rather than seconds, since the ablations may run on "
            "another day than the main grid, on a shared machine whose speed drifts.",
            ablation_table(ablation, rows),
        ]
    return "\n\n".join(body) + "\n", rows


def md_table(text: str, title_prefix: str) -> list[dict[str, str]]:
    """The rows of the markdown table under the first heading that starts with ``title_prefix``."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.lstrip("# ").startswith(title_prefix)), None
    )
    if start is None:
        return []
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    if len(table) < 2:
        return []
    return [dict(zip(table[0], row, strict=True)) for row in table[2:]]


def _number(cell: str) -> float | None:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


def _wall_ratio_line(path: Path, label: str, prune: float = 0.5) -> str:
    """Random's wall time over full's, from a compare's results.json, against (1 - p) + 0.05."""
    if not path.exists():
        return f"- {label}: not measured."
    runs = json.loads(path.read_text())["runs"]
    rows = group([RunResult.from_dict(r) for r in runs])
    full, rand = _row(rows, "full"), _row(rows, "random", prune)
    if full is None or rand is None:
        return f"- {label}: the file holds no full and random p={prune:g} pair."
    ratio = rand.wall_seconds[0] / full.wall_seconds[0]
    limit = (1 - prune) + 0.05
    verdict = "meets" if ratio <= limit else "misses"
    return (
        f"- {label}: random p={prune:g} took {ratio:.3f} of full's wall time "
        f"({rand.wall_seconds[0]:.1f} s vs {full.wall_seconds[0]:.1f} s, mean of "
        f"{len(rand.runs)} seeds; accuracy {_fmt_acc(rand)} vs {_fmt_acc(full)}): "
        f"{verdict} the target of at most {limit:.2f}."
    )


def gpu_section(folder: Path) -> str:
    """Figures of ``benchmarks/gpu_session.sh``, copied into ``folder``, with the targets of #8."""
    overhead = folder / "overhead.md"
    if not overhead.exists():
        return (
            "## GPU\n\nNot measured yet: no GPU was available to the sessions that produced "
            "these results. `bash benchmarks/gpu_session.sh` on a GPU machine produces the "
            "figures; copied into `benchmarks/results/gpu/`, they appear here."
        )
    env = (folder / "env.txt").read_text() if (folder / "env.txt").exists() else ""
    device = next((line for line in env.splitlines() if line.startswith("torch ")), "unknown")
    text = overhead.read_text()
    checks = []
    for row in md_table(text, "Training step"):
        limit = {"resnet18": 1.0, "cnn": 3.0}.get(row["model"])
        share = _number(row["difference (% of step)"])
        if limit is None or share is None:
            continue
        checks.append(
            f"- record() ({row['statistics update']}) adds {share:.2f}% to a {row['model']} "
            f"step at batch {row['batch']} ({row['step (ms)']} ms): "
            f"{'meets' if share < limit else 'misses'} the target of under {limit:g}%."
        )
    for row in md_table(text, "Selection"):
        if row["N"] in ("100M", "1B"):
            limit = {"100M": 3.0, "1B": 25.0}[row["N"]]
            topk = _number(row["topk (raw)"])
            selection_ms = [
                v for m in methods() if m != "full" and (v := _number(row.get(m, ""))) is not None
            ]
            if topk is not None:
                checks.append(
                    f"- The threshold at N={row['N']} (topk, the library's choice on CUDA) "
                    f"takes {topk:.2f} ms: {'meets' if topk <= limit else 'misses'} the target "
                    f"of at most {limit:g} ms; kthvalue takes {row['kthvalue (raw)']} ms."
                    + (
                        f" A whole selection (set_epoch) takes {min(selection_ms):.1f} to "
                        f"{max(selection_ms):.1f} ms across methods."
                        if selection_ms
                        else ""
                    )
                )
    checks.append(_wall_ratio_line(folder / "walltime.json", "Fashion-MNIST cnn, 8 epochs"))
    checks.append(_wall_ratio_line(folder / "walltime-compile.json", "the same with --compile"))
    tests = folder / "pytest.txt"
    lines = tests.read_text().splitlines() if tests.exists() else []
    outcome = [
        line.strip("= ")
        for line in lines
        if re.fullmatch(r"=* ?\d+ (passed|failed|skipped|errors?)\b.* in [\d.]+s.*", line)
    ]
    checks.append(f"- The CUDA tests (tests/test_cuda.py): {(outcome or ['no result'])[-1]}.")
    kept = ("#", "|", "device:", "total time")  # not step markers, warnings or profiler noise
    demoted = "\n".join(
        "#" + line if line.startswith("#") else line
        for line in text.splitlines()
        if not line or line.startswith(kept)
    )
    return "\n\n".join(
        [
            "## GPU",
            f"Measured by `bash benchmarks/gpu_session.sh` ({device}); the files are in "
            "`benchmarks/results/gpu/`.",
            "\n".join(checks),
            demoted.strip(),
        ]
    )


#: The pruned/full epoch wall-time ratio at prune 0.5 that loading from disk should reach.
LARGE_DATA_TARGET = 0.6


def large_data_section(folder: Path, files: Sequence[Path] | None = None) -> str:
    """The section of ``benchmarks/large_data.py``'s result files (every ``*.json`` in
    ``folder``, or ``files``): the pruned/full epoch ratio per format against the target, and
    what each format reads, decodes and steps."""
    files = sorted(folder.glob("*.json")) if files is None else list(files)
    title = "## Data on disk: decode-bound loading"
    if not files:
        return (
            f"{title}\n\nNot measured yet: `python benchmarks/large_data.py` writes the files "
            "into `benchmarks/results/large-data/`."
        )
    runs = [(path, json.loads(path.read_text())) for path in files]
    settings = []
    ratios = [
        "| format | run | full epoch (s) | pruned epoch (s) | pruned / full | target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    counts = [
        "| format | samples read | PNG decodes | bytes read (MB) | optimizer steps |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    counted = set()
    for path, run in runs:
        s = run["settings"]
        settings.append(
            f"- `{path.stem}`: {s['samples']:,} Fashion-MNIST images upscaled to {s['size']} px "
            f"(PNG), {s['workers']} DataLoader workers, batch {s['batch']}, {s['method']} at "
            f"prune {s['prune']:g}, median of {s['repeats']}; {s['cpus']} CPUs, torch "
            f"{s['torch']}, {s['date']}."
        )
        for fmt, r in run["formats"].items():
            verdict = "set at prune 0.5 only"
            if s["prune"] == 0.5:
                met = r["ratio"] <= LARGE_DATA_TARGET
                verdict = f"{'meets' if met else 'misses'} <= {LARGE_DATA_TARGET:g}"
            ratios.append(
                f"| {fmt} | `{path.stem}` | {statistics.median(r['full_seconds']):.2f} | "
                f"{statistics.median(r['pruned_seconds']):.2f} | {r['ratio']:.2f} | {verdict} |"
            )
            if fmt in counted:
                continue
            counted.add(fmt)
            full, pruned = r["full"], r["pruned"]
            cells = [f"{full[k]:,} -> {pruned[k]:,}" for k in ("reads", "decodes")]
            cells.append(f"{full['bytes'] / 1e6:.1f} -> {pruned['bytes'] / 1e6:.1f}")
            cells.append(f"{full['steps']} -> {pruned['steps']}")
            counts.append(f"| {fmt} | " + " | ".join(cells) + " |")
    return "\n\n".join(
        [
            title,
            "Measured by `python benchmarks/large_data.py` (files in "
            "`benchmarks/results/large-data/`): a full epoch and a pruned one, side by side in "
            "each repeat, read by the harness's reader from a warm page cache, with a linear "
            "model, so that decoding PNGs is the cost. Each file is one run; a format whose "
            "library needs its own environment (MDS) is a run of its own, beside the image "
            "folder again.",
            "\n".join(settings),
            "\n".join(ratios),
            "Per epoch, full -> pruned (WebDataset streams past pruned samples' bytes without "
            "extracting or decoding them: its bytes read do not shrink):",
            "\n".join(counts),
        ]
    )


#: Targets of the framework integrations at prune 0.5: pruned/full wall time, per-step overhead.
INTEGRATION_RATIO_TARGET = 0.6
INTEGRATION_OVERHEAD_TARGET = 0.02


def integrations_section(folder: Path) -> str:
    """The section of ``benchmarks/integrations.py``'s result files (every ``*.json``)."""
    title = "## Framework integrations: Lightning, the Hugging Face Trainer, Accelerate"
    files = sorted(folder.glob("*.json"))
    if not files:
        return (
            f"{title}\n\nNot measured yet: `python benchmarks/integrations.py` writes the files "
            "into `benchmarks/results/integrations/`."
        )
    parts = [
        title,
        "Measured by `python benchmarks/integrations.py` (files in "
        "`benchmarks/results/integrations/`): each framework alone on full data, and with "
        "dataprune's integration, side by side in each repeat, the same epochs; evaluation is "
        "timed apart. *wall* is the whole fit/train call, every cost counted; the per-step "
        "overhead is the pruned run's time per step (each epoch from its first step's start to "
        "its last step's end: loading and record() count, the framework's fixed work between "
        "epochs does not) against the framework alone; the time inside record() and selection, "
        "as a share of the pruned run's step time, is measured directly (the overhead is a "
        "difference of two noisy timings). Medians of ratios over the repeats.",
    ]
    for path in files:
        run = json.loads(path.read_text())
        s = run["settings"]
        parts.append(
            f"`{path.stem}`: {s['samples']:,} Fashion-MNIST images, the harness's cnn, batch "
            f"{s['batch']}, {s['epochs']} epochs, {s['method']} at prune {s['prune']:g}, "
            f"{s['repeats']} repeats; {s['cpus']} CPUs, torch {s['torch']}, {s['date']}."
        )
        rows = [
            "| integration | wall, alone (s) | wall, pruned (s) | pruned / alone | "
            "per-step overhead | record() + selection, share of step | accuracy, alone | "
            "accuracy, pruned | targets |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, r in run["integrations"].items():
            alone, pruned = r["runs"]["alone"], r["runs"]["pruned"]
            cells = [
                f"{statistics.median(x['wall_seconds'] for x in alone):.1f}",
                f"{statistics.median(x['wall_seconds'] for x in pruned):.1f}",
                f"{r['wall_ratio']:.2f}",
                f"{100 * r['step_overhead']:+.1f}%",
                f"{100 * r['machinery_share']:.1f}%",
                f"{100 * statistics.mean(x['accuracy'] for x in alone):.2f}%",
                f"{100 * statistics.mean(x['accuracy'] for x in pruned):.2f}%",
            ]
            verdict = "set at prune 0.5 only"
            if s["prune"] == 0.5:
                ratio_ok = r["wall_ratio"] <= INTEGRATION_RATIO_TARGET
                step_ok = r["step_overhead"] <= INTEGRATION_OVERHEAD_TARGET
                verdict = (
                    f"ratio {'meets' if ratio_ok else 'misses'} <= "
                    f"{INTEGRATION_RATIO_TARGET:g}; overhead {'meets' if step_ok else 'misses'} "
                    f"<= {100 * INTEGRATION_OVERHEAD_TARGET:g}%"
                )
            rows.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


#: The method a Pruner runs when none is named: the choice the settings table checks.
DEFAULT_METHOD = inspect.signature(Pruner).parameters["method"].default


def settings_section(results_dir: Path, suites: Sequence[tuple[str, str]]) -> str:
    """Which method wins depends on the setting: in each measured setting and prune rate, the
    most accurate method that trains faster than full, and the default method, against full
    and against each other (paired by seed, 95% intervals)."""
    lines = [
        "| setting | prune | best method | vs full, points | training time / full's | "
        f"`{DEFAULT_METHOD}` (the default) vs full | best − default | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, title in suites:
        rows = group(load_results(results_dir / name))
        full = _row(rows, "full")
        if full is None:
            continue
        for prune in sorted({r.prune for r in rows if r.method != "full"}):
            best, default = best_at(rows, prune, full), _row(rows, DEFAULT_METHOD, prune)
            if best is None or default is None:
                continue
            share = training_seconds(best) / training_seconds(full)
            if best is default:
                diff, word = "-", "-"
            else:
                diff, word = _paired(best, default)
                verdicts.append(word)
            lines.append(
                f"| {title} | {prune:g} | {_marked(best)} {_fmt_acc(best)} | "
                f"{_paired(best, full)[0]} | {share:.2f} | {_paired(default, full)[0]} | "
                f"{diff} | {word} |"
            )
    if len(lines) == 2:
        return "No setting is measured yet."
    better = verdicts.count(HOLDS)
    return (
        "The best method is the most accurate of those that train in less time than full "
        "(training time: wall time less evaluation, every other cost counted); *verdict* says "
        f"whether it is measurably more accurate than the default, `{DEFAULT_METHOD}`. It is in "
        f"{better} of the {len(verdicts)} cells where another method is best. The most accurate "
        "of a dozen methods on the mean is flattered by chance (the winner's curse): its "
        "paired interval against the default, not its rank, is the evidence."
        + (
            " ‡: runs from code with a defect fixed since (the setting's erratum says which)."
            if any("‡" in line for line in lines)
            else ""
        )
        + "\n\n"
        + "\n".join(lines)
    )


def headline(results_dir: Path) -> str:
    """The README's headline, in the table's setting: the most accurate method at each prune
    rate that trains faster than full (:func:`best_at`), its accuracy and its paired difference
    to full (95% intervals), and its training time against full's."""
    rows = group(load_results(results_dir / TABLE_SETTING))
    full = _row(rows, "full")
    if full is None:
        return "not measured yet"
    parts = []
    for prune in sorted({r.prune for r in rows if r.method != "full"}):
        best = best_at(rows, prune, full)
        if best is None:
            continue
        share = training_seconds(best) / training_seconds(full)
        parts.append(
            f"at prune {prune:g}, {_marked(best)} {_fmt_acc(best)} ({_paired(best, full)[0]} "
            f"points against full, {share:.2f}x its training time)"
        )
    seeds = len(full.runs)
    return (
        f"Fashion-MNIST, cnn, 8 epochs, cosine, {seeds} seeds; full training {_fmt_acc(full)}; "
        + "; ".join(parts)
    )


def write_results_md(
    results_dir: Path, out: Path, suites: Sequence[tuple[str, str]], smoke: bool = False
) -> None:
    """docs/RESULTS.md from the result files: a section per ``(name, title)`` suite (the
    folder ``results_dir / name``), then the data-on-disk, integrations and GPU sections."""
    figures = out.parent / "results"
    rel = "results"
    sections = [
        "# Results: the paper's claims measured on real data",
        "Generated by `python benchmarks/reproduce.py --report` from the result files in "
        "`benchmarks/results/`; do not edit by hand. Wall time counts every cost: static "
        "scoring, selection, training and evaluation. Accuracy is the mean over seeds ± the "
        "half-width of its 95% interval (t-based), and differences are paired by seed; static "
        "scorers score once per seed and method, and every prune rate that reuses the scores is "
        "charged their full cost.",
        "**What differs from the paper:** smaller data (Fashion-MNIST and a 5000-image real "
        "CIFAR-10 subset instead of full CIFAR-10/100), a small CNN on two CPU cores instead of "
        "ResNets on GPUs, and few epochs. Verdicts are about this setting only.",
    ]
    if not smoke:
        sections += ["## Which method, in which setting", settings_section(results_dir, suites)]
    for name, title in suites:
        folder = results_dir / name
        if folder.is_dir():
            text, _ = suite_section(folder, figures, rel, title)
        else:
            text = (
                f"## {title}\n\nNot measured yet with this code: "
                f"`python benchmarks/reproduce.py --suite {name}` runs it (resumable).\n"
            )
        sections.append(text)
    if not smoke:
        sections.append(f"**Headline:** {headline(results_dir)}.")
    if not smoke:
        sections.append(large_data_section(results_dir / "large-data"))
        sections.append(integrations_section(results_dir / "integrations"))
        sections.append(gpu_section(results_dir / "gpu"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(sections) + "\n")
