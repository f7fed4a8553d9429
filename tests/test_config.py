"""The run's configuration (dataprune.harness.config): full-matched's step budget."""

from __future__ import annotations

from test_trainer import quick


def test_full_matched_budgets_differ_by_prune_rate():
    steps = [
        quick(method="full-matched", prune=p, epochs=5).resolve().step_budget(1437)
        for p in (0.5, 0.7)
    ]
    assert steps == [5 * 12, 5 * 7]  # ceil(719 / 64) and ceil(431 / 64) steps an epoch
