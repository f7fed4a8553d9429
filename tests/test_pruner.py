"""The Pruner (dataprune.pruner): every method at prune 0, exact budgets, warm-up, anneal and
``every`` epochs, step counts, epochs that run forward, exact resume through state dicts, and the
errors of its arguments (CPU, fast). The helpers here drive the loop the other core tests share.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dataprune import IndexedDataset, Pruner, methods


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


def _raises(exc, *fragments):
    pattern = ".*".join(re.escape(f) for f in fragments)
    return pytest.raises(exc, match=re.compile(pattern, re.S))


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


# ------------------------------------------------------------------ epochs and steps


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


def test_epochs_run_forward_and_summary_counts_the_epochs_started():
    pruner = Pruner(10, "random", 0.5, 4)
    pruner.set_epoch(0)
    pruner.set_epoch(1)
    with pytest.raises(ValueError, match=r"set_epoch\(0\) after epoch 1: epochs run forward"):
        pruner.set_epoch(0)
    pruner.set_epoch(1)  # the current epoch again: nothing changes
    summary = pruner.summary()
    assert (summary["epochs_started"], summary["samples_used"]) == (2, 10)
    assert summary["fraction_pruned"] == pytest.approx(0.5)

    skipping = Pruner(10, "random", 0.5, 4)
    skipping.set_epoch(0)
    skipping.set_epoch(3)  # epochs 1 and 2 are not trained
    summary = skipping.summary()
    assert (summary["epochs_started"], summary["samples_used"]) == (2, 10)
    assert summary["fraction_pruned"] == pytest.approx(0.5)


# -------------------------------------------------------------------- state_dict resume


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


# ---------------------------------------------------------------------------- errors


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


def test_non_finite_options_are_refused_with_the_allowed_range():
    for value in (math.inf, math.nan):
        with pytest.raises(ValueError, match=r"c=(inf|nan) is not allowed: .*finite"):
            Pruner(10, "ucb", 0.5, 2, c=value)
        with pytest.raises(ValueError, match="alpha"):
            Pruner(10, "ucb", 0.5, 2, alpha=value)
    with pytest.raises(ValueError, match="prune=nan"):
        Pruner(10, "random", math.nan, 2)
    with pytest.raises(ValueError, match="epsilon=1000.* too large"):
        Pruner(10, "epsilon-greedy", 0.5, 2, epsilon=10**400)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"device": "gpu9"}, ValueError, "device='gpu9' is not a device"),
        ({"device": 3.5}, ValueError, "device=3.5 is not a device"),
        ({"rescale": "yes"}, TypeError, "rescale must be True or False, got 'yes'"),
        ({"c": 1e39}, ValueError, "c=1e+39 is beyond float32's range"),
        ({"epsilon": 0.1}, TypeError, "unknown option 'epsilon' for method='ucb'"),
        ({"warmup_epochs": 3}, ValueError, "leave none of the 3 epochs pruned"),
        ({"epochs": 10**7}, ValueError, "epochs=10000000 must be <= 1000000"),
    ],
)
def test_pruner_arguments_are_refused_naming_the_value(kwargs, error, fragment):
    """Each once failed later (a device-side error, a stuck total_steps) or not at all."""
    arguments = {"num_samples": 10, "method": "ucb", "prune": 0.5, "epochs": 3, **kwargs}
    with pytest.raises(error, match=re.escape(fragment)):
        Pruner(**arguments)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda p: p.sampler(shuffle="x"), "shuffle must be True or False, got 'x'"),
        (lambda p: p.sampler(drop_last=2), "drop_last must be True or False, got 2"),
        (lambda p: p.total_steps(0), "batch_size=0 must be >= 1"),
    ],
)
def test_sampler_and_step_arguments_are_checked(call, fragment):
    with pytest.raises((ValueError, TypeError), match=re.escape(fragment)):
        call(Pruner(10, "ucb", 0.5, 3))
