"""Paired-by-seed verdicts on synthetic results: intervals, words, and the report's use of them."""

from __future__ import annotations

import math

import pytest

from dataprune.harness.config import RunConfig
from dataprune.harness.report import group, markdown_table, records
from dataprune.harness.results import EpochRecord, RunResult
from dataprune.harness.verdict import (
    FAILS,
    HOLDS,
    NO_DIFFERENCE,
    mean_interval,
    overall,
    paired_difference,
    t_critical,
    tally,
    verdict,
)


def test_t_critical_values_and_interpolation():
    assert t_critical(1) == 12.706 and t_critical(2) == 4.303 and t_critical(30) == 2.042
    assert t_critical(35) == pytest.approx(2.030, abs=1e-3)  # tables: 2.030
    assert t_critical(1000) == pytest.approx(1.962, abs=1e-3)  # tables: 1.962
    assert all(t_critical(d) > t_critical(d + 1) for d in range(1, 200))
    with pytest.raises(ValueError, match="df=0"):
        t_critical(0)


def test_mean_interval_by_hand():
    # mean 0.2, sd 0.1, n 3: half width 4.303 * 0.1 / sqrt(3)
    interval = mean_interval([0.1, 0.2, 0.3])
    half = 4.303 * 0.1 / math.sqrt(3)
    assert interval.mean == pytest.approx(0.2)
    assert (interval.low, interval.high) == pytest.approx((0.2 - half, 0.2 + half))
    assert not interval.excludes_zero
    assert interval.format(scale=100) == "+20.00 [-4.84, +44.84]"
    one = mean_interval([0.5])
    assert one.n == 1 and not one.excludes_zero and one.format() == "+0.50 (1 seed)"


def test_paired_difference_pairs_by_seed_not_by_position():
    # Seeds differ a lot (a shared offset per seed); within a seed, a is always 0.5 higher.
    offset = {0: 0.0, 1: 3.0, 2: -2.0, 7: 1.0}
    a = {s: 80.5 + o for s, o in offset.items()}
    b = {s: 80.0 + o + 0.01 * s for s, o in reversed(list(offset.items()))}
    diff = paired_difference(a, b)
    assert diff.n == 4 and diff.mean == pytest.approx(0.475)  # 0.5 - 0.01 * seed
    assert diff.low > 0.4 and diff.high < 0.55
    assert verdict(diff, "higher") == HOLDS and verdict(diff, "lower") == FAILS
    # unpaired, the same numbers overlap: mean +- std of a and b intersect
    assert paired_difference({0: 1.0, 5: 2.0}, {5: 1.5, 9: 0.0}).n == 1  # only seed 5 in common
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_verdict_words():
    noisy = mean_interval([-0.2, 0.1, 0.3])
    assert verdict(noisy) == NO_DIFFERENCE and verdict(noisy, "lower") == NO_DIFFERENCE
    lower = mean_interval([-0.5, -0.6, -0.7])
    assert verdict(lower, "higher") == FAILS and verdict(lower, "lower") == HOLDS
    with pytest.raises(ValueError, match="claim='better'"):
        verdict(lower, "better")
    assert overall([HOLDS, HOLDS]) == HOLDS
    assert overall([HOLDS, NO_DIFFERENCE]) == "mixed"
    assert overall([]) == NO_DIFFERENCE
    assert (
        tally([HOLDS, FAILS, HOLDS]) == "holds in 2, fails in 1, no difference measured in 0 of 3"
    )


def _result(method: str, prune: float, seed: int, accuracy: float) -> RunResult:
    epoch = EpochRecord(0, 100, 0.5, accuracy, 1.0, 0.1, 0.1, 1.2)
    return RunResult(RunConfig(method=method, prune=prune, seed=seed), epochs=[epoch])


def test_report_compares_each_row_with_full_by_seed():
    results = [_result("full", 0.0, s, a) for s, a in ((0, 0.90), (1, 0.92), (2, 0.88))]
    results += [_result("ucb", 0.5, s, a) for s, a in ((0, 0.895), (1, 0.915), (2, 0.875))]
    results += [_result("random", 0.5, s, a) for s, a in ((0, 0.91), (1, 0.90), (2, 0.89))]
    rows = group(results)
    by_method = {r["method"]: r for r in records(rows, target=None)}
    assert by_method["full"]["vs_full"] is None
    ucb = by_method["ucb"]
    assert ucb["vs_full"] == pytest.approx(-0.005) and ucb["vs_full_seeds"] == 3
    assert ucb["higher_than_full"] == FAILS  # 0.5 points lower in every seed
    assert by_method["random"]["higher_than_full"] == NO_DIFFERENCE
    table = markdown_table(rows, target=None)
    assert "| -0.50 [-0.50, -0.50] lower |" in table
    assert "| full | 0 | 90.00 ± 4.97 |" in table  # t(2) = 4.303 times 2 points / sqrt(3)
    assert "vs full, points (95% CI by seed)" in table


def test_a_table_of_one_seed_claims_no_interval():
    results = [_result("full", 0.0, 0, 0.90), _result("ucb", 0.5, 0, 0.89)]
    table = markdown_table(group(results), target=None)
    assert "95% CI" not in table and "vs full, points (one seed, no interval) |" in table
    assert "| ucb | 0.5 | 89.00 | 89.00 |" in table and "| -1.00 (1 seed) |" in table
