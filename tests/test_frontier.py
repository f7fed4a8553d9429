"""The frontier plot's Pareto front, on synthetic results."""

from __future__ import annotations

from dataprune.harness.config import RunConfig
from dataprune.harness.report import group, pareto_front, plot_frontier
from dataprune.harness.results import EpochRecord, RunResult


def _result(method: str, prune: float, seed: int, accuracy: float, wall: float) -> RunResult:
    epoch = EpochRecord(0, 100, 0.5, accuracy, wall, 0.0, 0.0, wall)
    return RunResult(RunConfig(method=method, prune=prune, seed=seed), epochs=[epoch])


def test_pareto_front_keeps_the_rows_nothing_beats_in_both_time_and_accuracy(tmp_path):
    points = [  # method, prune, (accuracy, wall) of seed 0 and seed 1
        ("full", 0.0, (0.90, 10.0), (0.92, 10.0)),  # the most accurate: on the front
        ("ucb", 0.5, (0.90, 5.0), (0.90, 6.0)),  # faster, a little less accurate: on it
        ("random", 0.5, (0.88, 5.5), (0.88, 5.5)),  # slower and worse than ucb: off it
        ("ucb", 0.7, (0.85, 3.0), (0.85, 3.0)),  # fastest: on it
        ("random", 0.7, (0.85, 3.0), (0.84, 3.0)),  # as fast as ucb 0.7, less accurate: off
        ("infobatch", 0.3, (0.91, 12.0), (0.91, 12.0)),  # slower than full, worse: off
    ]
    results = [
        _result(method, prune, seed, accuracy, wall)
        for method, prune, *seeds in points
        for seed, (accuracy, wall) in enumerate(seeds)
    ]
    rows = group(results)
    front = [(r.method, r.prune) for r in pareto_front(rows)]
    assert front == [("ucb", 0.7), ("ucb", 0.5), ("full", 0.0)]
    plot_frontier(rows, tmp_path / "frontier.png", "synthetic")
    assert (tmp_path / "frontier.png").stat().st_size > 0
