"""The methods (dataprune.policies), each held to a hand computation or to the property that
defines it: ucb, epsilon-greedy, rs2, infobatch, seta, orderdp, repb, kakurenbo,
selective-backprop and static-score; and the registry, through which one file adds a method."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from test_pruner import _raises, run_epoch

import dataprune as dp
from dataprune import Pruner, SelectionContext
from dataprune.harness.config import RunConfig
from dataprune.policies import Policy, register
from dataprune.policies.registry import POLICIES

ROOT = Path(__file__).resolve().parents[1]


def fill(pruner: Pruner, losses: torch.Tensor) -> None:
    """Record one loss for every sample."""
    pruner.record(torch.arange(pruner.num_samples), losses)


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


@pytest.mark.parametrize("bonus", ["std", "var"])
def test_ucb_with_c_zero_and_a_saturated_variance_keeps_k(bonus):
    pruner = Pruner(12, "ucb", 0.5, 2, c=0.0, bonus=bonus)
    pruner.set_epoch(0)
    fill(pruner, torch.arange(12.0))
    fill(pruner, torch.tensor([1e30] * 6 + [0.0] * 6))
    pruner.set_epoch(1)
    assert pruner.indices().numel() == 6


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


def test_infobatch_anneal_default_is_one_definition():
    from dataprune import Pruner
    from dataprune.policies import POLICIES

    infobatch = POLICIES["infobatch"]
    assert [infobatch.default_anneal_epochs(e) for e in (1, 2, 4, 8, 12, 40)] == [0, 1, 1, 1, 2, 5]
    assert Pruner(100, "infobatch", 0.5, 4).anneal_epochs == 1  # was round(0.5) = 0
    spec = RunConfig(method="infobatch", prune=0.5, epochs=4).resolve()
    assert Pruner(100, **spec.pruner_kwargs(100)).anneal_epochs == 1  # the harness's too


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


def test_kakurenbo_tau_is_checked():
    with pytest.raises(ValueError, match=r"tau.*1\.5"):
        Pruner(10, "kakurenbo", 0.5, 2, tau=1.5)


def test_peek_keeps_steps_or_stretches_never_both():
    assert Pruner(10, "peek", 0.5, 2, steps=True).policy.keeps_steps()
    assert not Pruner(10, "peek", 0.5, 2).policy.keeps_steps()
    assert not Pruner(10, "kakurenbo", 0.5, 2).policy.keeps_steps()
    with pytest.raises(ValueError, match="steps=True and stretch=True"):
        Pruner(10, "peek", 0.5, 2, steps=True, stretch=True)


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


# ---------------------------------------------------------------------- static-score


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


@pytest.mark.parametrize(
    "scores, fragment",
    [
        ([1.0, 2.0], "scores has 2 entries but num_samples=10"),
        (torch.full((10,), math.nan), "scores holds 10 NaN or inf values"),
        ("abc", "scores must be a 1-D tensor (or list) of numbers, got str"),
    ],
)
def test_static_scores_that_do_not_fit_are_refused(scores, fragment):
    with pytest.raises((ValueError, TypeError), match=re.escape(fragment)):
        Pruner(10, "static-score", 0.5, 3, scores=scores)


# ------------------------------------------------------------ one place per method


def test_a_policy_defined_in_one_file_runs_through_the_pruner(toy_method):
    assert "toy-lowest-loss" in dp.methods() and POLICIES["toy-lowest-loss"] is toy_method
    pruner = Pruner(10, "toy-lowest-loss", 0.5, 3, margin=0.5)
    pruner.set_epoch(0)
    fill(pruner, torch.arange(10.0))
    pruner.set_epoch(1)
    assert pruner.indices().tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="margin=-1.0"):
        Pruner(10, "toy-lowest-loss", 0.5, 3, margin=-1)
    with pytest.raises(ValueError, match="taken"):

        @register
        class Clash(Policy):
            name = "ucb"


def test_the_policy_docstring_shows_how_to_add_a_method():
    doc = Policy.__doc__
    assert "@register" in doc and "class LowestLoss(Policy)" in doc and "options = " in doc


@pytest.mark.parametrize(
    "selection, fragment",
    [
        (torch.arange(3), "returned a torch.int64 tensor of shape (3,), not a Selection"),
        (dp.Selection(torch.tensor([0, 0, 1])), "not sorted without repeats"),
        (dp.Selection(torch.tensor([0, 20])), "outside its samples [0, 10)"),
        (dp.Selection(torch.tensor([0, 1]), torch.tensor([1.0, -1.0])), "finite positive"),
    ],
)
def test_what_a_policy_selects_is_checked_before_it_is_used(selection, fragment):
    class Broken(Policy):
        name = "broken-selection"

        def select(self, ctx):
            return selection

    register(Broken)
    try:
        with pytest.raises(RuntimeError, match=re.escape(fragment)):
            Pruner(10, "broken-selection", 0.5, 3).set_epoch(0)
    finally:
        del POLICIES["broken-selection"]


def test_the_registry_refuses_what_is_not_a_named_policy():
    class Taken(Policy):
        name = "full"

    class Unnamed(Policy):
        name = "Bad Name"

    with pytest.raises(TypeError, match="takes a subclass of dataprune.Policy"):
        register(int)
    with pytest.raises(ValueError, match="'full' is taken"):
        register(Taken)
    with pytest.raises(TypeError, match="lower-case words joined by hyphens"):
        register(Unnamed)


def test_a_method_another_package_declares_as_an_entry_point_is_registered(
    tmp_path, monkeypatch, caplog
):
    """An installed package's ``[project.entry-points."dataprune.methods"]`` is all it takes: the
    method is listed and usable, and a plug-in that fails to import is named, not fatal."""
    from dataprune.policies import POLICIES, methods
    from dataprune.policies.registry import load_entry_points

    (tmp_path / "entry_toy.py").write_text(
        "from dataprune.policies import Policy\n\n\n"
        "class HighestLoss(Policy):\n"
        "    name = 'entry-highest-loss'\n\n"
        "    def select(self, ctx):\n"
        "        return ctx.selection(ctx.top_k(ctx.stats.mean, ctx.k))\n"
    )
    info = tmp_path / "entry_toy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: entry-toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[dataprune.methods]\nhighest = entry_toy:HighestLoss\nbroken = entry_toy_missing:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_entry_points.cache_clear()
    try:
        assert "entry-highest-loss" in methods()
        assert "entry_toy_missing:Nothing" in caplog.text
        pruner = Pruner(64, epochs=2, method="entry-highest-loss", prune=0.5)
        pruner.set_epoch(1)
        assert len(pruner.indices()) == pruner.epoch_size(1) == 32
    finally:
        POLICIES.pop("entry-highest-loss", None)
        load_entry_points.cache_clear()
