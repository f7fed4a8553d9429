"""SampleStats (dataprune.stats): the exact EMA of each sample's loss and of its variance,
non-finite and repeated losses, the compiled update, and statistics that saturate instead of
overflowing."""

from __future__ import annotations

import math

import pytest
import torch
from test_policies import fill

from dataprune import Pruner
from dataprune.stats import SampleStats


def test_sample_stats_hand_computed_ema():
    stats = SampleStats(4, alpha=0.5)
    stats.update(torch.tensor([0, 1]), torch.tensor([2.0, 4.0]))
    assert stats.table.tolist() == [[2, 0, 1], [4, 0, 1], [0, 0, 0], [0, 0, 0]]
    stats.update(torch.tensor([0]), torch.tensor([4.0]))  # d=2: mean 3, var .5*(0+.5*4)=1
    stats.update(torch.tensor([0]), torch.tensor([1.0]))  # d=-2: mean 2, var .5*(1+.5*4)=1.5
    assert stats.table[0].tolist() == [2.0, 1.5, 3.0]
    assert stats.seen.tolist() == [True, True, False, False]

    stats = SampleStats(1, alpha=0.25)
    mean, var = 0.0, 0.0
    for i, x in enumerate([3.0, 7.0, -1.0, 2.5]):
        stats.update(torch.tensor([0]), torch.tensor([x]))
        if i == 0:
            mean, var = x, 0.0
        else:
            d = x - mean
            mean, var = mean + 0.25 * d, 0.75 * (var + 0.25 * d * d)
    assert stats.mean.item() == pytest.approx(mean, rel=1e-6)
    assert stats.var.item() == pytest.approx(var, rel=1e-6)


def test_lone_loss_is_stored_exactly_next_to_large_ones():
    stats = SampleStats(3, alpha=0.5)
    losses = torch.tensor([1e8, 1e-8, 3.0])
    stats.update(torch.arange(3), losses)
    assert torch.equal(stats.mean, losses)


def test_nonfinite_losses_leave_stats_untouched():
    stats = SampleStats(4, alpha=0.5)
    stats.update(torch.arange(4), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    before = stats.table.clone()
    stats.update(torch.tensor([0, 1, 2, 3]), torch.tensor([math.nan, math.inf, -math.inf, 6.0]))
    assert torch.equal(stats.table[:3], before[:3])
    assert stats.table[3].tolist() == [5.0, 1.0, 2.0]  # d=2: mean 5, var .5*(0+.5*4)=1

    pruner = Pruner(4, "ucb", 0.5, 2)
    pruner.set_epoch(0)
    out = pruner.record(torch.arange(4), torch.tensor([math.nan, 3.0, math.inf, 5.0]))
    assert float(out) == 4.0  # mean of the finite losses only
    assert pruner.stats.seen.tolist() == [False, True, False, True]
    assert pruner.summary()["nonfinite_losses_skipped"] == 2
    out = pruner.record(torch.tensor([0, 1]), torch.tensor([math.nan, math.nan]))
    assert float(out) == 0.0 and not math.isnan(float(out))


def test_duplicate_indices_apply_the_mean_once():
    stats = SampleStats(5, alpha=0.5)
    stats.update(torch.tensor([3, 3, 3, 4]), torch.tensor([1.0, 2.0, math.nan, 6.0]))
    assert stats.table[3].tolist() == [1.5, 0.0, 1.0]
    assert stats.table[4].tolist() == [6.0, 0.0, 1.0]
    stats.update(torch.tensor([3, 3]), torch.tensor([4.0, 2.0]))  # mean 3: d=1.5
    assert stats.table[3].tolist() == [2.25, 0.5625, 2.0]
    stats.update(torch.tensor([4, 4]), torch.tensor([math.nan, math.inf]))
    assert stats.table[4].tolist() == [6.0, 0.0, 1.0]


def test_batch_order_does_not_change_the_table():
    gen = torch.Generator().manual_seed(11)
    indices = torch.randint(0, 50, (600,), generator=gen)
    losses = torch.rand(600, generator=gen) * 5
    losses[::37] = math.nan
    warm = torch.rand(50, generator=gen)
    tables = []
    for perm_seed in range(3):
        perm = torch.randperm(600, generator=torch.Generator().manual_seed(perm_seed))
        stats = SampleStats(50, alpha=0.8)
        stats.update(torch.arange(50)[::2], warm[::2])
        stats.update(indices[perm], losses[perm])
        tables.append(stats.table)
    assert torch.equal(tables[0], tables[1]) and torch.equal(tables[0], tables[2])
    assert int(tables[0][:, 2].max()) == 2  # repeated indices counted once per call


def _random_batches(num_samples, sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    for size in sizes:
        indices = torch.randint(0, num_samples, (size,), generator=gen)
        losses = torch.rand(size, generator=gen) * 5
        losses[torch.randint(0, size, (3,), generator=gen)] = math.nan
        yield indices, losses


def test_compiled_update_matches_eager_and_ignores_batch_order():
    eager = SampleStats(60, alpha=0.8)
    compiled = [SampleStats(60, alpha=0.8, compile=True) for _ in range(2)]
    shards = [SampleStats(30, alpha=0.8, offset=o, total=60, compile=True) for o in (0, 30)]
    for indices, losses in _random_batches(60, (70, 71, 40, 90, 70, 13), seed=5):
        eager.update(indices, losses)
        for perm_seed, table in enumerate(compiled + shards):
            perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(perm_seed))
            table.update(indices[perm], losses[perm])
    assert torch.equal(compiled[0].table, compiled[1].table)
    assert torch.equal(torch.cat([s.table for s in shards]), compiled[0].table)
    torch.testing.assert_close(compiled[0].table, eager.table, rtol=1e-5, atol=1e-6)
    assert int(eager.table[:, 2].max()) >= 2


def test_compiled_update_serves_every_batch_size_with_one_compile():
    from torch._dynamo.utils import counters

    stats = SampleStats(1000, alpha=0.8, compile=True)
    stats.update(torch.arange(70), torch.rand(70))  # compiles (or reuses this process's code)
    before = stats.table.clone()
    stats.update(torch.zeros(0, dtype=torch.long), torch.zeros(0))  # a no-op, never compiled
    assert torch.equal(stats.table, before)
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for size in (29, 78, 513, 4096):
            stats.update(torch.randint(0, 1000, (size,)), torch.rand(size))
    assert counters["stats"]["unique_graphs"] == graphs  # nothing new traced either


def test_compiled_update_uses_each_tables_own_alpha():
    # Compiled code is cached per process (and on disk): a second alpha must not reuse the first.
    for alpha in (1.0, 0.8, 0.3):
        eager, compiled = SampleStats(3, alpha), SampleStats(3, alpha, compile=True)
        for loss in (1.0, 3.0, 2.0):
            batch = (torch.tensor([0, 1]), torch.tensor([loss, 2 * loss]))
            eager.update(*batch)
            compiled.update(*batch)
        torch.testing.assert_close(compiled.table, eager.table, rtol=1e-6, atol=0)


def test_duplicate_means_ignore_the_rest_of_the_batch():
    stats = SampleStats(4, alpha=0.5)
    losses = torch.tensor([1e17, 1.0, 2.0, -3e30])
    stats.update(torch.tensor([0, 1, 1, 2]), losses)
    assert torch.equal(stats.mean[:3], torch.stack([losses[0], torch.tensor(1.5), losses[3]]))


def test_more_samples_than_the_sort_key_holds_is_refused():
    with pytest.raises(ValueError, match=r"num_samples=2147483648 must be <= 2147483647"):
        Pruner(2**31, "random", 0.5, 2)
    with pytest.raises(ValueError, match=r"offset=2147483640, total=4294967306"):
        SampleStats(10, 0.8, offset=2**31 - 8, total=2**32 + 10)


def test_int32_indices_update_their_own_rows():
    stats = SampleStats(4, alpha=0.5)
    stats.update(torch.tensor([1, 2, 3], dtype=torch.int32), torch.tensor([1.0, 2.0, 3.0]))
    assert stats.mean.tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("alpha", [1.0, 0.8])
def test_a_loss_past_float32_range_of_its_square_keeps_statistics_finite(alpha):
    """A loss jump past ~1.8e19 once made the variance inf * 0 = NaN (alpha=1), and a NaN
    score then crashed selection ('kth out of bounds'), also after every --resume."""
    pruner = Pruner(20, "ucb", 0.5, 3, alpha=alpha)
    pruner.set_epoch(0)
    fill(pruner, torch.ones(20))
    fill(pruner, torch.full((20,), 3e38))
    assert bool(torch.isfinite(pruner.stats.table).all())
    if alpha == 1.0:
        assert bool((pruner.stats.var == 0).all())  # the latest loss only: no spread
    else:
        assert float(pruner.stats.var.max()) == torch.finfo(torch.float32).max
    pruner.set_epoch(1)
    assert pruner.indices().numel() == 10
    # The state saved now loads and selects again (resume no longer repeats a crash).
    resumed = Pruner(20, "ucb", 0.5, 3, alpha=alpha)
    resumed.load_state_dict(pruner.state_dict())
    resumed.set_epoch(2)
    assert resumed.indices().numel() == 10
