"""Prune-rate schedules (dataprune.schedule): hand-computed budgets, exact budgets and step counts
under every schedule, exact resume, and the errors of schedules that do not fit."""

from __future__ import annotations

import math

import pytest
import torch
from test_pruner import _raises, _stats_equal, loss_of, make, run_epoch
from torch.utils.data import DataLoader, TensorDataset

from dataprune import IndexedDataset, Pruner

SCHEDULES = [
    {"prune_schedule": "linear", "prune_end": 0.8},
    {"prune_schedule": "cosine", "prune_end": 0.1},
    {"prune_schedule": lambda epoch: (0.2, 0.7, 0.0, 0.5, 0.9, 0.3, 0.6)[epoch]},
]


def test_named_schedules_hand_computed():
    n = 100
    linear = Pruner(n, "ucb", 0.2, 9, prune_schedule="linear", prune_end=0.8, warmup_epochs=1)
    # the 8 pruned epochs go from 0.2 to 0.8 in steps of 0.6 / 7; halves round to even
    rates = [0.2 + 0.6 * t / 7 for t in range(8)]
    assert linear.budgets == [n] + [max(1, round((1 - r) * n)) for r in rates]
    assert linear.budgets == [100, 80, 71, 63, 54, 46, 37, 29, 20]
    cosine = Pruner(n, "ucb", 0.8, 5, prune_schedule="cosine", prune_end=0.0, anneal_epochs=1)
    # t = 0, 1/3, 2/3, 1: (1 - cos(pi t)) / 2 = 0, 1/4, 3/4, 1; the last rate is 0: full data
    assert cosine.budgets == [20, 40, 80, 100, 100]
    assert [cosine.is_pruned_epoch(e) for e in range(5)] == [True, True, True, False, False]
    # every=3: each selection's epochs share the rate of its first epoch
    every = Pruner(n, "ucb", 0.2, 7, prune_schedule="linear", prune_end=0.8, every=3)
    assert every.budgets == [80, 80, 80, 50, 50, 50, 20]
    assert Pruner(n, "ucb", 0.3, 4).budgets == [70] * 4  # constant, the default


@pytest.mark.parametrize("method", ["ucb", "infobatch", "static-random", "static-score", "rs2"])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=["linear", "cosine", "callable"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_scheduled_budget_is_exact_everywhere(method, schedule, drop_last):
    n, batch, epochs = 103, 8, 7
    pruner = make(method, n, 0.2, epochs, anneal_epochs=0, **schedule)
    data = IndexedDataset(TensorDataset(torch.arange(n)))
    sampler = pruner.sampler(drop_last=drop_last)
    loader = DataLoader(data, batch_size=batch, sampler=sampler, drop_last=drop_last)
    steps, sizes, subsets = 0, [], []
    for epoch in range(epochs):
        pruner.set_epoch(epoch)
        subsets.append(pruner.indices().clone())
        assert len(sampler) == len(list(sampler)) == pruner.epoch_size(epoch)
        sizes.append(pruner.indices().numel())
        for idx, (_,) in loader:
            steps += 1
            pruner.record(idx, loss_of(idx, epoch))
    assert sizes == pruner.budgets == [pruner.epoch_size(e) for e in range(epochs)]
    assert len(set(sizes)) > 2  # the rate moved
    assert pruner.total_steps(batch, drop_last=drop_last) == steps
    assert pruner.summary()["samples_used"] == sum(sizes)
    if not pruner.policy.reselects:  # one ranking: a smaller budget keeps a subset of it
        for a, b in zip(subsets, subsets[1:], strict=False):
            small, large = sorted((a, b), key=len)
            assert bool(torch.isin(small, large).all())


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["linear", "cosine", "callable"])
def test_scheduled_resume_is_exact(schedule, tmp_path):
    n, epochs = 60, 7
    a = Pruner(n, "ucb", 0.2, epochs, seed=3, **schedule)
    a_subsets = [run_epoch(a, e) for e in range(epochs)]
    b = Pruner(n, "ucb", 0.2, epochs, seed=3, **schedule)
    b_subsets = [run_epoch(b, e) for e in range(4)]
    torch.save(b.state_dict(), tmp_path / "p.pt")
    c = Pruner(n, "ucb", 0.2, epochs, seed=3, **schedule)
    c.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    b_subsets += [run_epoch(c, e) for e in range(4, epochs)]
    for sa, sb in zip(a_subsets, b_subsets, strict=True):
        assert torch.equal(sa, sb)
    _stats_equal(a, c)


def test_bad_prune_schedules():
    with _raises(ValueError, "prune_schedule='step'", "constant, linear, cosine"):
        Pruner(10, "ucb", 0.5, 4, prune_schedule="step")
    with _raises(ValueError, "prune_schedule='linear' needs prune_end"):
        Pruner(10, "ucb", 0.5, 4, prune_schedule="linear")
    with _raises(ValueError, "prune_end=0.2", "prune_schedule='constant'"):
        Pruner(10, "ucb", 0.5, 4, prune_end=0.2)
    with _raises(ValueError, "prune_end=1.0", "[0.0, 1.0)"):
        Pruner(10, "ucb", 0.5, 4, prune_schedule="cosine", prune_end=1.0)
    with _raises(ValueError, "prune_end=0.3", "callable"):
        Pruner(10, "ucb", 0.5, 4, prune_schedule=lambda e: 0.5, prune_end=0.3)
    with _raises(ValueError, "prune_schedule(2)=nan", "[0.0, 1.0)"):
        Pruner(10, "ucb", 0.5, 4, prune_schedule=lambda e: math.nan if e == 2 else 0.5)
    with _raises(TypeError, "prune_schedule(0)", "str"):
        Pruner(10, "ucb", 0.5, 4, prune_schedule=lambda e: "half")
    with _raises(ValueError, "warmup_epochs=2 + anneal_epochs=2", "none of the 4 epochs"):
        Pruner(10, "ucb", 0.0, 4, prune_schedule="linear", prune_end=0.5, warmup_epochs=2,
               anneal_epochs=2)  # fmt: skip
