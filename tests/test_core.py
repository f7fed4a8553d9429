"""Core behaviour of the Pruner, its policies, statistics and sampler (CPU, fast)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dataprune import IndexedDataset, Pruner, SelectionContext, methods
from dataprune.sampler import PrunedSampler
from dataprune.stats import SampleStats


def options(method: str, n: int) -> dict:
    """Options a method needs to be built at all (static-score needs one score per sample)."""
    if method == "static-score":
        return {"scores": torch.randperm(n, generator=torch.Generator().manual_seed(7)).float()}
    return {}


def make(method: str, n: int, prune: float, epochs: int, seed: int = 0, **kw) -> Pruner:
    return Pruner(n, method, prune, epochs, seed, **{**options(method, n), **kw})


def loss_of(indices: torch.Tensor, epoch: int) -> torch.Tensor:
    """A deterministic, mostly distinct positive loss per (sample, epoch)."""
    idx = indices.long()
    return ((idx * 7919 + epoch * 104729 + 13) % 1009).float() / 97.0 + 0.01


def run_epoch(pruner: Pruner, epoch: int, batch_size: int = 8) -> torch.Tensor:
    """The loop every method shares: set_epoch, ``loss`` for every batch of the sampler (the
    batch is its indices), then ``end_epoch``; returns the epoch's subset."""
    pruner.set_epoch(epoch)
    order = torch.tensor(list(pruner.sampler()), dtype=torch.long)

    def sample_losses(rows: torch.Tensor) -> torch.Tensor:
        return loss_of(rows, epoch)

    for batch in order.split(batch_size):
        pruner.loss(batch, batch, sample_losses)
    subset = pruner.indices().clone()
    pruner.end_epoch(torch.nn.Identity(), lambda rows: rows, sample_losses, batch_size)
    return subset


# --------------------------------------------------------------------------- prune = 0
@pytest.mark.parametrize("method", methods())
def test_prune_zero_selects_every_sample(method):
    n = 37
    pruner = make(method, n, 0.0, 4)
    for epoch in range(4):
        run_epoch(pruner, epoch)
        assert torch.equal(pruner.indices(), torch.arange(n))
        assert len(pruner.sampler()) == n
    assert pruner.summary()["samples_used"] == 4 * n
    assert pruner.summary()["fraction_pruned"] == 0.0
    assert pruner.summary()["samples_backpropagated"] == 4 * n  # each index trains once


def _train_digits(method: str, epochs: int = 3) -> tuple[torch.Tensor, torch.Tensor, float]:
    # One thread: the same reduction order in every run, and tiny kernels do not wait for
    # busy cores (on a loaded 2-core machine two threads make this run 30x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_digits_1(method, epochs)
    finally:
        torch.set_num_threads(threads)


def _train_digits_1(method: str, epochs: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    n = len(y)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    pruner = make(method, n, 0.0, epochs)
    loader = DataLoader(
        IndexedDataset(TensorDataset(x, y)), batch_size=64, sampler=pruner.sampler()
    )
    last = math.nan
    for epoch in range(epochs):
        pruner.set_epoch(epoch)
        for idx, batch in loader:
            loss = pruner.loss(
                idx, batch, lambda b: F.cross_entropy(model(b[0]), b[1], reduction="none")
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            last = float(loss.detach())
    return model.weight.detach().clone(), model.bias.detach().clone(), last


@pytest.fixture(scope="module")
def full_digits_run():
    return _train_digits("full")


@pytest.mark.parametrize("method", [m for m in methods() if m != "full"])
def test_prune_zero_training_is_bit_identical_to_full(method, full_digits_run):
    weight, bias, last_loss = _train_digits(method)
    ref_weight, ref_bias, ref_last = full_digits_run
    assert ref_last < 0.5  # the reference run actually learned something
    assert torch.equal(weight, ref_weight)
    assert torch.equal(bias, ref_bias)
    assert last_loss == ref_last


# ---------------------------------------------------------------------------- budget
@pytest.mark.parametrize("method", methods())
@pytest.mark.parametrize(
    "n, prune", [(101, 0.3), (7, 0.5), (1000, 0.9), (999, 0.25), (2, 0.5), (11, 0.64)]
)
def test_budget_is_exact(method, n, prune):
    pruner = make(method, n, prune, 4, anneal_epochs=0)
    expected = round((1 - prune) * n) if pruner.policy.prunes else n
    for epoch in range(4):
        subset = run_epoch(pruner, epoch)
        assert subset.numel() == expected
        assert subset.unique().numel() == expected
        assert int(subset.min()) >= 0 and int(subset.max()) < n
        assert torch.equal(subset, subset.sort().values)
    assert pruner.summary()["samples_used"] == 4 * expected


# -------------------------------------------------------------------- epsilon-greedy
def test_epsilon_one_is_exactly_random():
    n, prune, epochs = 200, 0.4, 6
    greedy = Pruner(n, "epsilon-greedy", prune, epochs, seed=3, epsilon=1.0)
    rand = Pruner(n, "random", prune, epochs, seed=3)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        greedy.set_epoch(epoch)
        rand.set_epoch(epoch)
        assert torch.equal(greedy.indices(), rand.indices())
        idx = torch.randint(0, n, (150,), generator=gen)
        greedy.record(idx, torch.rand(150, generator=gen) * 10)
    assert bool(greedy.stats.seen.any())


# ------------------------------------------------------------------------------- rs2
@pytest.mark.parametrize("n, prune", [(12, 2 / 3), (20, 0.75), (10, 0.5)])
def test_rs2_divisible_rounds_partition_the_dataset(n, prune):
    k = round((1 - prune) * n)
    assert n % k == 0
    per_cycle = n // k
    epochs = 3 * per_cycle
    pruner = Pruner(n, "rs2", prune, epochs, seed=5)
    subsets = [run_epoch(pruner, e) for e in range(epochs)]
    for c in range(3):
        cycle = torch.cat(subsets[c * per_cycle : (c + 1) * per_cycle])
        assert torch.equal(cycle.sort().values, torch.arange(n))
    assert not torch.equal(subsets[0], subsets[per_cycle])  # a fresh permutation per cycle


@pytest.mark.parametrize("n, prune", [(10, 0.3), (11, 0.64), (13, 1 / 13), (9, 0.5)])
def test_rs2_uses_each_sample_once_per_cycle(n, prune):
    k = round((1 - prune) * n)
    assert n % k != 0
    epochs = 4 * n  # many cycles, every straddle offset
    pruner = Pruner(n, "rs2", prune, epochs, seed=1)
    counts = torch.zeros(n, dtype=torch.long)
    for r in range(epochs):
        subset = run_epoch(pruner, r)
        assert subset.numel() == k and subset.unique().numel() == k  # no duplicate in a round
        counts[subset] += 1
        # positions 0 .. (r+1)k-1 hold floor((r+1)k/N) whole cycles and a partial one
        whole, extra = divmod((r + 1) * k, n)
        assert set((counts - whole).tolist()) <= {0, 1}
        assert int((counts - whole).sum()) == extra


# ------------------------------------------------------------- hand-computed policies
# N=6, alpha=0.5. Epoch 0 records x, epoch 1 records y for samples 0..4; sample 5 unseen.
X = [1.0, 2.0, 6.0, 5.0, 0.5]
Y = [3.0, 2.0, 0.0, 5.0, 4.5]
# d = y - x = [2, 0, -6, 0, 4]; mean = x + d/2; var = (1 - 1/2) * (0 + d^2/2) = d^2/4
HAND_MEAN = [2.0, 2.0, 3.0, 5.0, 2.5, 0.0]
HAND_VAR = [1.0, 0.0, 9.0, 0.0, 4.0, 0.0]


def _hand_pruner(method: str, **kw) -> Pruner:
    pruner = Pruner(6, method, 0.5, 3, seed=0, alpha=0.5, **kw)
    assert pruner.k == 3
    seen = torch.arange(5)
    pruner.set_epoch(0)
    pruner.record(seen, torch.tensor(X))
    pruner.set_epoch(1)
    pruner.record(seen, torch.tensor(Y))
    assert pruner.stats.mean.tolist() == HAND_MEAN
    assert pruner.stats.var.tolist() == HAND_VAR
    assert pruner.stats.seen.tolist() == [True] * 5 + [False]
    pruner.set_epoch(2)
    return pruner


@pytest.mark.parametrize(
    "bonus, c, expected",
    [
        ("std", 0.0, [2, 3, 5]),  # mean: 5 > 3 > 2.5
        ("std", 1.0, [2, 3, 5]),  # mean + std = [3, 2, 6, 5, 4.5]
        ("std", 2.0, [2, 4, 5]),  # mean + 2 std = [4, 2, 9, 5, 6.5]
        ("var", 1.0, [2, 4, 5]),  # mean + var = [3, 2, 12, 5, 6.5]
        ("var", 0.25, [2, 3, 5]),  # mean + var/4 = [2.25, 2, 5.25, 5, 3.5]
    ],
)
def test_ucb_matches_hand_computation(bonus, c, expected):
    pruner = _hand_pruner("ucb", bonus=bonus, c=c)
    assert pruner.indices().tolist() == expected


def test_epsilon_greedy_matches_hand_computation():
    pruner = _hand_pruner("epsilon-greedy", epsilon=0.0)
    assert pruner.indices().tolist() == [2, 3, 5]  # unseen 5, then the two highest means

    # epsilon=1/3 of k=3: greedy keeps unseen 5 and top-mean 3, one more drawn from {0, 1, 2, 4}
    explored = set()
    for seed in range(40):
        pruner = Pruner(6, "epsilon-greedy", 0.5, 3, seed=seed, alpha=0.5, epsilon=1 / 3)
        pruner.set_epoch(0)
        pruner.record(torch.arange(5), torch.tensor(X))
        pruner.set_epoch(1)
        pruner.record(torch.arange(5), torch.tensor(Y))
        pruner.set_epoch(2)
        chosen = pruner.indices().tolist()
        assert len(chosen) == 3 and {3, 5} <= set(chosen)
        explored |= set(chosen) - {3, 5}
    assert explored == {0, 1, 2, 4}


def test_epsilon_greedy_rescale_weights_explored_samples():
    pruner = _hand_pruner("epsilon-greedy", epsilon=1 / 3, rescale=True)
    chosen = pruner.indices().tolist()
    (explored,) = set(chosen) - {3, 5}
    # greedy samples weigh 1, the explored one 1 / P = (N - n_greedy) / (k - n_greedy) = 4
    out = pruner.record(torch.tensor([3, 5, explored]), torch.ones(3))
    assert float(out) == pytest.approx((1 + 1 + 4) / 3)


@pytest.mark.parametrize("method, kw", [("ucb", {}), ("epsilon-greedy", {"epsilon": 0.0})])
def test_unseen_samples_are_chosen_first(method, kw):
    n = 20
    pruner = Pruner(n, method, 0.75, 3, **kw)
    pruner.set_epoch(0)
    pruner.record(torch.arange(15), torch.full((15,), 1e6))
    pruner.set_epoch(1)
    assert pruner.indices().tolist() == [15, 16, 17, 18, 19]


# ---------------------------------------------------------------------- SampleStats
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


# ------------------------------------------------------------------------- infobatch
def test_infobatch_weights_are_unbiased_and_budget_exact():
    n, prune, seeds = 200, 0.3, 1500
    k = round((1 - prune) * n)
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(n, generator=gen) * 4 + 0.1
    totals = torch.zeros(seeds, dtype=torch.float64)
    per_sample = torch.zeros(n, dtype=torch.float64)
    for seed in range(seeds):
        # epoch 0 is a full warm-up epoch that sees every loss; epoch 1 is pruned
        # max_weight lifted: the low group's 1/P(kept) is 2.5 here, past the default bound
        pruner = Pruner(
            n, "infobatch", prune, 2, seed=seed, warmup_epochs=1, anneal_epochs=0, max_weight=1e6
        )
        pruner.set_epoch(0)
        pruner.record(torch.arange(n), losses)
        pruner.set_epoch(1)
        kept = pruner.indices()
        assert kept.numel() == k
        weights = pruner.state_dict()["progress"]["weights"].double()
        totals[seed] = (weights[kept] * losses[kept].double()).sum()
        per_sample[kept] += weights[kept]
        if seed < 3:  # record() applies the same weights: its mean is the weighted sum / k
            out = pruner.record(kept, losses[kept])
            assert float(out) * k == pytest.approx(float(totals[seed]), rel=1e-5)
    low = losses < losses.mean()
    assert int((~low).sum()) < k  # every high-loss sample is kept...
    assert float(per_sample[~low].min()) == seeds  # ...with weight 1
    assert float(totals.std()) > 0  # the subsets differ between seeds
    assert float(totals.mean()) == pytest.approx(float(losses.double().sum()), rel=0.005)
    # every sample's expected weight (P(kept) * 1/P(kept)) is 1
    assert torch.allclose(per_sample / seeds, torch.ones(n, dtype=torch.float64), atol=0.2)


@pytest.mark.parametrize("prune", [0.3, 0.5, 0.7, 0.9])
def test_infobatch_weights_stay_within_the_bound(prune):
    n = 1000
    losses = torch.rand(n, generator=torch.Generator().manual_seed(1)) * 4 + 0.1
    for max_weight in (2.0, 1.25):
        pruner = Pruner(
            n, "infobatch", prune, 3, warmup_epochs=1, anneal_epochs=0, max_weight=max_weight
        )
        pruner.set_epoch(0)
        pruner.record(torch.arange(n), losses)
        pruner.set_epoch(1)
        kept = pruner.indices()
        weights = pruner.state_dict()["progress"]["weights"][kept]
        assert kept.numel() == round((1 - prune) * n)
        # unbounded, these were up to |L| / (|L| - d_L) = 25 (prune 0.5) and |H| / k (0.7, 0.9)
        assert float(weights.max()) <= max_weight
        assert float(weights.min()) >= 1.0
        # so the returned loss is at most max_weight times the plain mean
        plain = float(losses[kept].mean())
        assert float(pruner.record(kept, losses[kept])) <= max_weight * plain * (1 + 1e-6)


def test_infobatch_first_epoch_trains_at_weight_one():
    n = 500
    pruner = Pruner(n, "infobatch", 0.7, 4)
    pruner.set_epoch(0)  # nothing seen yet: a uniform subset, not scaled up by N / k
    kept = pruner.indices()
    assert kept.numel() == 150
    assert torch.equal(pruner.state_dict()["progress"]["weights"], torch.ones(n))
    losses = torch.linspace(0.5, 3.0, 150)
    assert float(pruner.record(kept, losses)) == pytest.approx(float(losses.mean()), rel=1e-6)


def test_infobatch_first_epoch_starves_nobody():
    n, prune, runs = 1000, 0.3, 100
    k = round((1 - prune) * n)
    counts = torch.zeros(n)
    for seed in range(runs):
        pruner = Pruner(n, "infobatch", prune, 8, seed=seed)
        pruner.set_epoch(0)
        assert pruner.indices().numel() == k
        counts[pruner.indices()] += 1
    assert float(counts.min()) > 40 and float(counts.max()) < 100  # Binomial(100, 0.7)
    assert float(counts.mean()) == pytest.approx(70.0)


def test_infobatch_defaults_anneal_rescale_alpha():
    pruner = Pruner(64, "infobatch", 0.5, 16)
    assert pruner.anneal_epochs == 2 and pruner.rescale and pruner.alpha == 1.0
    sizes = [run_epoch(pruner, e).numel() for e in range(16)]
    assert sizes == [32] * 14 + [64] * 2
    assert Pruner(64, "infobatch", 0.5, 8).anneal_epochs == 1
    assert Pruner(64, "infobatch", 0.5, 8, anneal_epochs=0).anneal_epochs == 0
    assert Pruner(64, "random", 0.5, 16).anneal_epochs == 0


# ------------------------------------------------------------------------------ seta
def test_seta_window_slides_over_loss_groups_cyclically():
    n = 1000
    losses = torch.randperm(n, generator=torch.Generator().manual_seed(2)).float()
    ranks = losses.argsort()  # sample ids, easiest first
    # r=0: the share is everything; 5 groups of 200 ranks, a window of 2, budget 400 = window
    pruner = Pruner(n, "seta", 0.6, 8, warmup_epochs=1, r=0.0, window=0.4, anneal=0.0)
    assert pruner.rounds == 7
    pruner.set_epoch(0)
    pruner.record(torch.arange(n), losses)
    for epoch in range(1, 8):
        pruner.set_epoch(epoch)
        first = (epoch - 1) % 5
        window = torch.cat([ranks[200 * ((first + g) % 5) :][:200] for g in range(2)])
        assert torch.equal(pruner.indices(), window.sort().values), epoch


def test_seta_defaults_share_thinning_top_up_and_anneal():
    n = 1000
    losses = torch.randperm(n, generator=torch.Generator().manual_seed(3)).float()
    rank_of = losses.argsort().argsort()
    for prune, expected in ((0.28, "exact"), (0.6, "thinned"), (0.1, "topped up")):
        pruner = Pruner(n, "seta", prune, 9, warmup_epochs=1)
        assert pruner.rounds == 8 and pruner.alpha == 1.0
        pruner.set_epoch(0)
        pruner.record(torch.arange(n), losses)
        pruner.set_epoch(1)  # round 0: groups 0-3 of 5 of a uniform 900, easiest first
        kept = rank_of[pruner.indices()].float()
        assert pruner.indices().numel() == round((1 - prune) * n), expected
        if expected == "exact":  # the 720 easiest of the share, so ranks < 1000 * 4 / 5 or so
            assert float(kept.max()) < 850 and 350 < float(kept.mean()) < 450
        elif expected == "thinned":  # 400 of the window's 720: as easy as the window
            assert float(kept.max()) < 850
        else:  # the window and 180 others from anywhere
            assert float(kept.max()) > 900
        for epoch in range(2, 9):
            pruner.set_epoch(epoch)
        # the last of 8 selections is uniform: as many of each half of the ranks
        kept = rank_of[pruner.indices()]
        assert abs(int((kept < 500).sum()) - int((kept >= 500).sum())) < 0.2 * kept.numel()


def test_seta_first_selection_before_any_loss_is_uniform():
    a = Pruner(500, "seta", 0.5, 4, seed=1)
    b = Pruner(500, "random", 0.5, 4, seed=1)
    a.set_epoch(0)
    b.set_epoch(0)
    assert a.indices().numel() == 250
    assert not torch.equal(a.indices(), b.indices())  # its own stream


# --------------------------------------------------------------------------- orderdp
def test_orderdp_keeps_the_highest_losses_of_a_uniform_share():
    n = 200
    pruner = Pruner(n, "orderdp", 0.5, 3, seed=4)
    pruner.set_epoch(0)
    pruner.record(torch.arange(n), torch.arange(n, dtype=torch.float32))  # loss i for sample i
    pruner.set_epoch(1)
    kept = pruner.indices()
    assert kept.numel() == 100
    # 150 drawn uniformly; of them, the 100 highest losses are kept: the 50 lowest drawn drop
    share = SelectionContext(
        pruner.stats, 150, 1, 4, type(pruner.policy), rounds=pruner.rounds
    ).random_mask(150, "share")
    drawn = share.nonzero().squeeze(1)
    assert kept.tolist() == drawn[-100:].tolist()
    again = Pruner(n, "orderdp", 0.2, 3, seed=4)  # more than the share of 150: the share grows
    again.set_epoch(0)
    assert again.indices().numel() == 160


# ------------------------------------------------------------------------------ repb
def test_repb_prunes_below_its_local_mean_and_weights_by_selection_frequency():
    n = 40
    pruner = Pruner(n, "repb", 0.25, 4, warmup_epochs=1, anneal_epochs=0, window=1)
    pruner.set_epoch(0)  # a full epoch
    # window=1: each batch is compared with its own mean. Batch 1 has losses 0..19 (mean
    # 9.5), batch 2 has 100..119 (mean 109.5): below are 0-9 and 20-29, not the lowest 20.
    pruner.record(torch.arange(20), torch.arange(20, dtype=torch.float32))
    pruner.record(torch.arange(20, 40), 100 + torch.arange(20, dtype=torch.float32))
    below = pruner.policy.buffers["below_local"][:-1]
    assert below.nonzero().squeeze(1).tolist() == [*range(10), *range(20, 30)]
    pruner.set_epoch(1)
    dropped = set(range(n)) - set(pruner.indices().tolist())
    assert len(dropped) == 10 and dropped <= {*range(10), *range(20, 30)}
    # the first pruned epoch: E / N_i(E) = 1 / 1 for every kept sample
    weights = pruner.state_dict()["progress"]["weights"]
    assert bool((weights == 1.0).all())
    pruner.set_epoch(2)  # the stale statistics again: the 10 dropped before may drop again
    kept = pruner.indices()
    weights = pruner.state_dict()["progress"]["weights"]
    back = [i for i in kept.tolist() if i in dropped]  # kept now, dropped in epoch 1: 2 / 1
    assert back and all(weights[i] == 2.0 for i in back)
    assert all(weights[i] == 1.0 for i in kept.tolist() if i not in dropped)


# ------------------------------------------------------------------------- kakurenbo
HAND_LOSS = torch.tensor([0.1, 0.2, 0.05, 0.3, 0.01, 0.5, 0.02, 0.6, 0.7, 0.8])


def _hand_kakurenbo(prune: float, **kw) -> Pruner:
    """Ten samples recorded once (epoch 0), then epoch 1 selected."""
    pruner = Pruner(10, "kakurenbo", prune, 3, anneal_epochs=0, **kw)
    pruner.set_epoch(0)
    pruner.record(torch.arange(10), HAND_LOSS)
    pruner.set_epoch(1)
    return pruner


def _hidden(pruner: Pruner) -> list[int]:
    kept = set(pruner.indices().tolist())
    return [i for i in range(pruner.num_samples) if i not in kept]


def test_kakurenbo_hides_the_lowest_losses_of_confidently_learned_samples():
    # tau=0.7 qualifies a loss <= -log 0.7 = 0.357: samples 0-4 and 6; the three lowest hide
    pruner = _hand_kakurenbo(0.3)
    assert _hidden(pruner) == [2, 4, 6]
    assert _hidden(_hand_kakurenbo(0.6)) == [0, 1, 2, 3, 4, 6]
    assert pruner.lr_scale() == pytest.approx(10 / 7)  # 1 / (1 - F_e), F_e = 3/10


def test_kakurenbo_hides_every_qualifying_sample_and_fills_uniformly_when_too_few():
    # tau=0.9 qualifies a loss <= 0.105: samples 0, 2, 4, 6; prune 0.6 hides them and 2 others
    subsets = set()
    for seed in range(20):
        hidden = set(_hidden(_hand_kakurenbo(0.6, tau=0.9, seed=seed)))
        assert {0, 2, 4, 6} <= hidden and len(hidden) == 6
        subsets.add(tuple(sorted(hidden - {0, 2, 4, 6})))
        assert _hidden(_hand_kakurenbo(0.6, tau=0.9, seed=seed)) == sorted(hidden)  # pure
    assert len(subsets) > 5  # drawn from the six others, by seed
    # before any loss nothing qualifies: the first selection is uniform
    first = Pruner(500, "kakurenbo", 0.5, 4, seed=1)
    first.set_epoch(0)
    assert first.indices().numel() == 250


def test_kakurenbo_end_epoch_measures_every_hidden_sample_in_eval_mode():
    n = 64
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    x = torch.randn(n, 3)
    pruner = Pruner(n, "kakurenbo", 0.5, 2, anneal_epochs=0)
    pruner.set_epoch(0)
    modes = []

    def sample_losses(rows: torch.Tensor) -> torch.Tensor:
        modes.append((model.training, torch.is_grad_enabled()))
        return model(x[rows]).pow(2).mean(1)

    for rows in pruner.indices().split(16):
        pruner.loss(rows, rows, sample_losses)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = pruner.stats.seen.clone()
    pruner.end_epoch(model, lambda rows: rows, sample_losses, batch_size=16)
    assert bool(pruner.stats.seen.all()) and not bool(seen.all())  # the hidden ones too
    assert modes[-1] == (False, False) and model.training  # measured in eval mode, restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    summary = pruner.summary()
    assert (summary["samples_forwarded"], summary["samples_backpropagated"]) == (n, n // 2)
    pruner.end_epoch(model, lambda rows: rows, sample_losses, batch_size=16)  # once an epoch
    assert pruner.summary()["samples_forwarded"] == n


def test_lr_scale_is_one_except_in_kakurenbo_pruned_epochs():
    pruner = Pruner(10, "kakurenbo", 0.5, 3, warmup_epochs=1, anneal_epochs=1)
    scales = []
    for epoch in range(3):
        pruner.set_epoch(epoch)
        scales.append(pruner.lr_scale())
    assert scales == [1.0, 2.0, 1.0]
    ucb = Pruner(10, "ucb", 0.5, 3)
    ucb.set_epoch(0)
    assert ucb.lr_scale() == 1.0
    scheduled = Pruner(100, "kakurenbo", 0.3, 3, prune_schedule="linear", prune_end=0.1)
    rates = []
    for epoch in range(3):
        scheduled.set_epoch(epoch)
        rates.append(scheduled.lr_scale())
    assert rates == pytest.approx([100 / 70, 100 / 80, 100 / 90])  # F decreasing over training


def test_attach_steps_at_the_scaled_rate_and_leaves_the_schedule_alone(caplog):
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    pruner = Pruner(10, "kakurenbo", 0.5, 2, anneal_epochs=0)
    pruner.attach(optimizer)
    pruner.attach(optimizer)  # once is enough: a second attach changes nothing
    pruner.set_epoch(0)
    weight.grad = torch.ones(2)
    optimizer.step()
    assert weight.tolist() == pytest.approx([0.8, 0.8])  # a step at 2 x 0.1
    assert optimizer.param_groups[0]["lr"] == 0.1  # restored: the schedule's own rate
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    with caplog.at_level("WARNING", logger="dataprune"):  # a scale and no optimizer: said once
        alone = Pruner(10, "kakurenbo", 0.5, 2, anneal_epochs=0)
        alone.set_epoch(0)
        alone.record(torch.arange(5), torch.ones(5))
        alone.end_epoch(torch.nn.Identity(), lambda rows: rows, lambda rows: rows.float(), 5)
        alone.end_epoch(torch.nn.Identity(), lambda rows: rows, lambda rows: rows.float(), 5)
    assert len([r for r in caplog.records if "pruner.attach(optimizer)" in r.message]) == 1


def test_kakurenbo_tau_is_checked():
    with pytest.raises(ValueError, match=r"tau.*1\.5"):
        Pruner(10, "kakurenbo", 0.5, 2, tau=1.5)


# ---------------------------------------------------------------- selective backprop
def test_selective_backprop_trains_each_batchs_highest_losses(tmp_path):
    pruner = Pruner(50, "selective-backprop", 0.5, 3)
    assert pruner.budgets == [50] * 3  # every sample is forwarded, every epoch
    rows_of = pruner.policy.batch_rows
    losses = torch.tensor([0.5, 3.0, math.nan, 3.0, 1.0, 2.0])
    assert rows_of(losses, 0.5).tolist() == [1, 3, 5]  # NaN lowest
    assert rows_of(torch.ones(4), 0.5).tolist() == [0, 1]  # ties: the earlier
    assert rows_of(torch.ones(1), 0.5).tolist() == [0]  # at least one
    assert rows_of(torch.ones(0), 0.5).numel() == 0
    odd = rows_of(torch.arange(7.0, requires_grad=True), 0.5)  # round(3.5) = 4
    assert odd.tolist() == [3, 4, 5, 6] and odd.dtype == torch.int64

    pruner.set_epoch(0)
    weight = torch.tensor(1.0, requires_grad=True)
    calls = []

    def sample_losses(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        rows, values = batch
        calls.append((rows.tolist(), torch.is_grad_enabled()))
        return weight * values

    index = torch.tensor([7, 8, 9, 10])
    loss = pruner.loss(index, (index, torch.tensor([1.0, 4.0, 2.0, 3.0])), sample_losses)
    assert calls == [([7, 8, 9, 10], False), ([8, 10], True)]  # measured, then the top half
    assert float(loss.detach()) == 3.5
    loss.backward()
    assert float(weight.grad) == 3.5
    assert pruner.stats.seen[7:11].all()  # every forwarded sample is recorded
    summary = pruner.summary()
    assert (summary["samples_forwarded"], summary["samples_backpropagated"]) == (6, 2)
    torch.save(pruner.state_dict(), tmp_path / "p.pt")
    again = Pruner(50, "selective-backprop", 0.5, 3)
    again.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    assert again.summary()["samples_backpropagated"] == 2
    with _raises(ValueError, "pruner.loss(indices, batch, sample_losses)"):
        pruner.record(index, torch.ones(4))


# ---------------------------------------------------------------------------- rescale
def test_rescale_random_weights_and_weighted_mean():
    n = 100
    pruner = Pruner(n, "random", 0.75, 3, rescale=True, anneal_epochs=1)
    pruner.set_epoch(0)
    subset = pruner.indices()
    assert subset.numel() == 25
    batch = subset[:10]
    losses = torch.linspace(0.5, 5.0, 10)
    out = pruner.record(batch, losses)
    assert float(out) == pytest.approx(float((losses * 4.0).mean()), rel=1e-6)
    pruner.set_epoch(2)  # annealed full epoch: weight 1 again
    assert float(pruner.record(batch, losses)) == pytest.approx(float(losses.mean()), rel=1e-6)

    plain = Pruner(n, "random", 0.75, 3)
    plain.set_epoch(0)
    assert float(plain.record(batch, losses)) == pytest.approx(float(losses.mean()), rel=1e-6)


def test_record_result_is_differentiable():
    pruner = Pruner(10, "random", 0.5, 2, rescale=True)
    pruner.set_epoch(0)
    batch = pruner.indices()
    x = torch.ones(5, requires_grad=True)
    pruner.record(batch, x * 3).backward()
    assert torch.allclose(x.grad, torch.full((5,), 3 * 2 / 5))


# ------------------------------------------------------------------ schedule and steps
def test_every_warmup_and_anneal_schedule():
    n, epochs = 100, 10
    pruner = Pruner(n, "ucb", 0.5, epochs, every=3, warmup_epochs=1, anneal_epochs=2)
    subsets = []
    for epoch in range(epochs):
        subsets.append(run_epoch(pruner, epoch))
    full = torch.arange(n)
    assert torch.equal(subsets[0], full)
    assert torch.equal(subsets[8], full) and torch.equal(subsets[9], full)
    for e in range(1, 8):
        assert subsets[e].numel() == 50
    assert torch.equal(subsets[1], subsets[2]) and torch.equal(subsets[1], subsets[3])
    assert torch.equal(subsets[4], subsets[5]) and torch.equal(subsets[4], subsets[6])
    assert not torch.equal(subsets[3], subsets[4])  # stats changed: re-selected
    assert not torch.equal(subsets[6], subsets[7])
    assert [pruner.is_pruned_epoch(e) for e in range(epochs)] == [False] + [True] * 7 + [False] * 2
    assert [c["epoch"] for c in pruner.progress.churn] == [4, 7]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("method", ["random", "infobatch", "full"])
def test_total_steps_matches_a_real_run(method, drop_last):
    n, batch, epochs = 103, 8, 6
    pruner = Pruner(n, method, 0.37, epochs, warmup_epochs=1, anneal_epochs=1)
    data = IndexedDataset(TensorDataset(torch.arange(n)))
    loader = DataLoader(
        data, batch_size=batch, sampler=pruner.sampler(drop_last=drop_last), drop_last=drop_last
    )
    steps = counted = 0
    for epoch in range(epochs):
        pruner.set_epoch(epoch)
        steps += len(loader)
        for idx, (_,) in loader:
            counted += 1
            pruner.record(idx, loss_of(idx, epoch))
    assert steps == counted
    assert pruner.total_steps(batch, drop_last=drop_last) == steps
    if method != "full":
        k = round(0.63 * n)
        per_epoch = (k // batch) if drop_last else math.ceil(k / batch)
        assert steps < epochs * math.ceil(n / batch) and per_epoch > 0


# ---------------------------------------------------------------- prune-rate schedules
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


def test_scheduled_state_with_another_schedule_is_refused():
    n = 60
    state = Pruner(n, "ucb", 0.2, 5, prune_schedule="linear", prune_end=0.8).state_dict()
    with _raises(ValueError, "prune_end=0.8", "prune_end=0.7"):
        Pruner(n, "ucb", 0.2, 5, prune_schedule="linear", prune_end=0.7).load_state_dict(state)
    with _raises(ValueError, "prune_schedule='linear'", "prune_schedule='cosine'"):
        Pruner(n, "ucb", 0.2, 5, prune_schedule="cosine", prune_end=0.8).load_state_dict(state)
    state = Pruner(n, "ucb", 0.2, 5, prune_schedule=lambda e: 0.1 * e).state_dict()
    other = Pruner(n, "ucb", 0.2, 5, prune_schedule=lambda e: 0.1 * (e < 3) * e)
    with _raises(ValueError, "epoch 3 a budget of 42", "this pruner's gives 60"):
        other.load_state_dict(state)


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


# -------------------------------------------------------------------- state_dict resume
def _stats_equal(a: Pruner, b: Pruner) -> None:
    assert torch.equal(a.stats.table, b.stats.table)
    assert torch.equal(a.selected_count, b.selected_count)
    sa, sb = a.summary(), b.summary()
    for key in (
        "samples_used",
        "samples_forwarded",
        "samples_backpropagated",
        "record_calls",
        "epochs_started",
        "fraction_pruned",
    ):
        assert sa[key] == sb[key]


@pytest.mark.parametrize("method", methods())
@pytest.mark.parametrize("every, warmup, split", [(1, 0, 3), (2, 1, 4)])
def test_state_dict_resume_is_exact(method, every, warmup, split, tmp_path):
    n, prune, epochs = 50, 0.4, 6
    kw = {"every": every, "warmup_epochs": warmup}
    a = make(method, n, prune, epochs, seed=9, **kw)
    a_subsets = [run_epoch(a, e) for e in range(epochs)]

    b = make(method, n, prune, epochs, seed=9, **kw)
    b_subsets = [run_epoch(b, e) for e in range(split)]
    path = tmp_path / "pruner.pt"
    torch.save(b.state_dict(), path)
    c = make(method, n, prune, epochs, seed=9, **kw)
    c.load_state_dict(torch.load(path, weights_only=True))
    b_subsets += [run_epoch(c, e) for e in range(split, epochs)]

    for sa, sb in zip(a_subsets, b_subsets, strict=True):
        assert torch.equal(sa, sb)
    _stats_equal(a, c)
    if a.policy.prunes:
        assert any(s.numel() < n for s in a_subsets)


def test_loaded_state_does_not_share_storage():
    a = Pruner(10, "ucb", 0.5, 3)
    a.set_epoch(0)
    a.record(torch.arange(5), torch.ones(5))
    state = a.state_dict()
    b = Pruner(10, "ucb", 0.5, 3)
    b.load_state_dict(state)
    before = a.stats.table.clone()
    b.record(torch.arange(10), torch.full((10,), 7.0))
    assert torch.equal(a.stats.table, before)
    assert torch.equal(state["stats"], before)


# --------------------------------------------------------------------------- sampler
def test_sampler_needs_set_epoch_and_forwards_it():
    pruner = Pruner(40, "random", 0.5, 3, seed=2)
    sampler = pruner.sampler()
    with pytest.raises(RuntimeError, match="set_epoch"):
        iter(sampler)
    sampler.set_epoch(1)
    assert pruner.epoch == 1
    ref = Pruner(40, "random", 0.5, 3, seed=2)
    ref.set_epoch(1)
    assert torch.equal(pruner.indices(), ref.indices())
    assert sorted(sampler) == ref.indices().tolist()


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_length_matches_iteration(shuffle, drop_last):
    pruner = Pruner(53, "rs2", 0.3, 4, anneal_epochs=1)
    for epoch in range(4):
        pruner.set_epoch(epoch)
        for world_size in (1, 2, 3, 4):
            for rank in range(world_size):
                sampler = PrunedSampler(pruner, shuffle, drop_last, world_size, rank)
                assert len(sampler) == len(list(sampler))
    pruned = Pruner(53, "rs2", 0.3, 4, anneal_epochs=1)
    pruned.set_epoch(1)
    if not shuffle:
        assert list(pruned.sampler(shuffle=False)) == pruned.indices().tolist()


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shards_equally_across_ranks(drop_last):
    pruner = Pruner(100, "random", 0.3, 2, seed=4)
    pruner.set_epoch(0)
    subset = set(pruner.indices().tolist())
    assert len(subset) == 70
    shards = [
        list(PrunedSampler(pruner, drop_last=drop_last, num_replicas=3, rank=r)) for r in range(3)
    ]
    sizes = {len(s) for s in shards}
    assert sizes == ({23} if drop_last else {24})
    union = set().union(*shards)
    if drop_last:
        assert union <= subset and len(union) == 69
    else:
        assert union == subset
    with pytest.raises(ValueError, match="rank=3"):
        PrunedSampler(pruner, num_replicas=3, rank=3)


def test_shuffle_differs_between_epochs_but_not_between_calls():
    pruner = Pruner(30, "full", 0.0, 3)
    sampler = pruner.sampler()
    pruner.set_epoch(0)
    first = list(sampler)
    assert list(sampler) == first
    pruner.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(30))


# ---------------------------------------------------------------------------- errors
def _raises(exc, *fragments):
    pattern = ".*".join(re.escape(f) for f in fragments)
    return pytest.raises(exc, match=re.compile(pattern, re.S))


def test_bad_prune_and_method_and_options():
    with _raises(ValueError, "prune=-0.1"):
        Pruner(10, "random", -0.1, 2)
    with _raises(ValueError, "prune=1.0", "[0.0, 1.0)"):
        Pruner(10, "random", 1.0, 2)
    with pytest.raises(ValueError, match="method='nope'") as info:
        Pruner(10, "nope", 0.5, 2)
    assert all(m in str(info.value) for m in methods())
    with _raises(TypeError, "'colour'", "method='ucb'", "bonus, c"):
        Pruner(10, "ucb", 0.5, 2, colour=1)
    with _raises(ValueError, "epsilon=2.0"):
        Pruner(10, "epsilon-greedy", 0.5, 2, epsilon=2)
    with _raises(ValueError, "bonus='cube'", "std, var"):
        Pruner(10, "ucb", 0.5, 2, bonus="cube")
    with _raises(TypeError, "num_samples", "2.5"):
        Pruner(2.5, "random", 0.5, 2)


def test_bad_static_scores():
    with _raises(TypeError, "static-score", "scores="):
        Pruner(6, "static-score", 0.5, 2)
    with _raises(ValueError, "scores has 5 entries", "num_samples=6"):
        Pruner(6, "static-score", 0.5, 2, scores=torch.ones(5))
    with _raises(ValueError, "scores holds 1 NaN"):
        Pruner(6, "static-score", 0.5, 2, scores=[1.0, 2.0, math.nan, 3.0, 4.0, 5.0])
    ok = Pruner(6, "static-score", 0.5, 2, scores=[6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
    ok.set_epoch(0)
    assert ok.indices().tolist() == [0, 2, 4]


def test_bad_record_inputs():
    pruner = Pruner(10, "random", 0.5, 2)
    pruner.set_epoch(0)
    with _raises(IndexError, "num_samples=10", "[0, 10]"):
        pruner.record(torch.tensor([0, 10]), torch.ones(2))
    with _raises(IndexError, "num_samples=10", "[-1, 3]"):
        pruner.record(torch.tensor([-1, 3]), torch.ones(2))
    with _raises(TypeError, "indices", "torch.float32"):
        pruner.record(torch.tensor([0.0, 1.0]), torch.ones(2))
    with _raises(ValueError, "losses must have one entry per index", "(4,)", "got (3,)"):
        pruner.record(torch.arange(4), torch.ones(3))
    with _raises(ValueError, "indices must be 1-D", "(2, 2)"):
        pruner.record(torch.arange(4).view(2, 2), torch.ones(2, 2))
    with _raises(ValueError, "losses must have one entry per index", "(2, 2)"):
        pruner.record(torch.arange(2), torch.ones(2, 2))
    with _raises(ValueError, "scalar", "reduction='none'"):
        pruner.record(torch.arange(4), torch.ones(4).mean())
    with _raises(TypeError, "losses", "floating-point", "torch.int64"):
        pruner.record(torch.arange(2), torch.ones(2, dtype=torch.long))
    assert pruner.summary()["record_calls"] == 0
    assert not bool(pruner.stats.seen.any())


def test_bad_state_dict_and_epoch():
    state = Pruner(10, "random", 0.5, 2).state_dict()
    with _raises(ValueError, "num_samples=10", "num_samples=20"):
        Pruner(20, "random", 0.5, 2).load_state_dict(state)
    with _raises(ValueError, "method='random'", "method='ucb'"):
        Pruner(10, "ucb", 0.5, 2).load_state_dict(state)
    with _raises(ValueError, "prune=0.5", "prune=0.25"):
        Pruner(10, "random", 0.25, 2).load_state_dict(state)
    pruner = Pruner(10, "random", 0.5, 2)
    with _raises(RuntimeError, "set_epoch"):
        pruner.indices()
    with _raises(RuntimeError, "set_epoch"):
        list(pruner.sampler())
    with _raises(ValueError, "epoch=2", "<= 1"):
        pruner.set_epoch(2)


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_kth_largest_partition_and_topk_paths_agree(n):
    """The CUDA path (topk on the smaller side) checked on the CPU against the partition path."""
    from dataprune.selection import kth_largest

    gen = torch.Generator().manual_seed(n)
    scores = torch.randint(0, 5, (n,), generator=gen).float()  # many ties
    scores[: n // 3] = float("inf")
    expected = scores.sort(descending=True).values
    for k in range(1, n + 1, max(1, n // 50)):
        for primitive in ("partition", "topk"):
            assert kth_largest(scores, k, primitive).item() == expected[k - 1].item()
