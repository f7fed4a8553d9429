"""The core under hostile input: overflowing losses, non-finite scores, bad states, odd epochs.

Each test pins one defect a review found, so that it cannot come back.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch

import dataprune as dp
from dataprune import Pruner
from dataprune.policies import Policy, register
from dataprune.policies.registry import POLICIES
from dataprune.selection import RandomStream, top_k_mask


def fill(pruner: Pruner, losses: torch.Tensor) -> None:
    """Record one loss for every sample."""
    pruner.record(torch.arange(pruner.num_samples), losses)


# ---------------------------------------------------------------- overflowing statistics
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


@pytest.mark.parametrize("bonus", ["std", "var"])
def test_ucb_with_c_zero_and_a_saturated_variance_keeps_k(bonus):
    pruner = Pruner(12, "ucb", 0.5, 2, c=0.0, bonus=bonus)
    pruner.set_epoch(0)
    fill(pruner, torch.arange(12.0))
    fill(pruner, torch.tensor([1e30] * 6 + [0.0] * 6))
    pruner.set_epoch(1)
    assert pruner.indices().numel() == 6


def test_non_finite_statistics_in_a_loaded_state_load_as_unseen():
    pruner = Pruner(10, "ucb", 0.5, 2)
    pruner.set_epoch(0)
    fill(pruner, torch.arange(10.0))
    state = pruner.state_dict()
    state["stats"][[2, 5], 0] = math.nan
    state["stats"][7, 1] = math.inf
    other = Pruner(10, "ucb", 0.5, 2)
    other.load_state_dict(state)
    assert other.stats.seen.tolist() == [i not in (2, 5, 7) for i in range(10)]
    other.set_epoch(1)
    assert other.indices().numel() == 5
    assert {2, 5, 7} <= set(other.indices().tolist())  # unseen samples are tried first


# ------------------------------------------------------------------- selection is total
@pytest.mark.parametrize("nans", [1, 2, 5, 9])
def test_top_k_is_exact_over_any_float_input(nans):
    """NaN scores (two or more raised a numpy ValueError; one lost a sample) count as -inf."""
    scores = torch.arange(10.0)
    scores[:nans] = math.nan
    scores[-1] = math.inf
    scores[-2] = -math.inf
    for k in range(1, 11):
        mask = top_k_mask(scores, k, RandomStream.of(1, 2, 3))
        assert int(mask.sum()) == k
        finite_rank = (~scores.isnan()) & (scores > -math.inf)
        if k <= int(finite_rank.sum()):  # real scores beat NaN and -inf
            assert bool(mask[finite_rank].sum() == k)


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


# --------------------------------------------------------------------- visible divergence
def test_nan_and_inf_losses_are_logged_once_an_epoch(caplog):
    pruner = Pruner(8, "random", 0.0, 3)
    with caplog.at_level(logging.WARNING, logger="dataprune"):
        pruner.set_epoch(0)
        for _ in range(3):
            loss = pruner.record(torch.arange(4), torch.tensor([1.0, math.nan, math.inf, 2.0]))
        assert float(loss) == pytest.approx(1.5)  # the finite ones' mean
        pruner.set_epoch(1)
        pruner.record(torch.arange(4), torch.ones(4))
        pruner.set_epoch(2)
        pruner.record(torch.arange(2), torch.tensor([math.nan, 1.0]))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("2 NaN or inf losses in epoch 0 (2 in the run so far)")
    assert lines[1].startswith("1 NaN or inf losses in epoch 2 (7 in the run so far)")
    assert pruner.summary()["nonfinite_losses_skipped"] == 7


def test_an_inf_loss_still_gives_nan_gradients_as_documented():
    """record() leaves an inf loss out of the mean, but cannot cancel the NaN gradient of the
    graph behind it (0 * inf): the docs say so instead of promising a zero gradient."""
    p = torch.tensor([0.0, 0.5], requires_grad=True)
    pruner = Pruner(2, "full", 0.0, 1)
    pruner.set_epoch(0)
    pruner.record(torch.arange(2), -torch.log(p)).backward()
    assert math.isnan(float(p.grad[0])) and float(p.grad[1]) == pytest.approx(-2.0)
    assert "NaN whatever this" in Pruner.record.__doc__


# -------------------------------------------------------------------- load_state_dict
def test_a_state_saved_with_other_method_options_is_refused():
    state = Pruner(10, "ucb", 0.5, 2, c=2.0).state_dict()
    with pytest.raises(ValueError, match=r"options=\{'c': 2.0, 'bonus': 'std'\}"):
        Pruner(10, "ucb", 0.5, 2).load_state_dict(state)
    state = Pruner(10, "epsilon-greedy", 0.5, 2, epsilon=0.3).state_dict()
    with pytest.raises(ValueError, match="epsilon"):
        Pruner(10, "epsilon-greedy", 0.5, 2).load_state_dict(state)
    scores = torch.arange(10.0)
    state = Pruner(10, "static-score", 0.5, 2, scores=scores).state_dict()
    assert str(state["options"]["scores"]).startswith("sha256:")
    Pruner(10, "static-score", 0.5, 2, scores=scores.clone()).load_state_dict(state)
    with pytest.raises(ValueError, match="scores"):
        Pruner(10, "static-score", 0.5, 2, scores=scores.flip(0)).load_state_dict(state)


@pytest.mark.parametrize("bad", [None, [1, 2], b"bytes", 3])
def test_a_state_that_is_not_a_dict_says_what_is_expected(bad):
    with pytest.raises(TypeError, match="the dict that Pruner.state_dict"):
        Pruner(10, "random", 0.5, 2).load_state_dict(bad)


def test_a_state_with_missing_keys_or_wrong_tensors_is_refused():
    good = Pruner(50, "random", 0.5, 2)
    good.set_epoch(0)
    state = good.state_dict()
    for key in ("stats", "counters"):
        partial = {k: v for k, v in state.items() if k != key}
        with pytest.raises(ValueError, match=f"lacks '{key}'"):
            Pruner(50, "random", 0.5, 2).load_state_dict(partial)
    no_churn = {k: v for k, v in state["progress"].items() if k != "churn"}
    with pytest.raises(ValueError, match="lacks 'progress.churn'"):
        Pruner(50, "random", 0.5, 2).load_state_dict({**state, "progress": no_churn})
    progress = state["progress"]
    cases = {
        "subset": {**state, "progress": {**progress, "subset": torch.tensor([10**6, *range(24)])}},
        "'stats' must be .*(50, 3)": {**state, "stats": torch.zeros(49, 3)},  # not selected_count
        "selected_count": {**state, "selected_count": torch.zeros(50)},
        "sorted": {**state, "progress": {**progress, "subset": progress["subset"].flip(0)}},
        "epoch": {**state, "progress": {**progress, "epoch": 7}},
    }
    for fragment, bad in cases.items():
        with pytest.raises(ValueError, match=fragment):
            Pruner(50, "random", 0.5, 2).load_state_dict(bad)


# -------------------------------------------------------------------- epoch bookkeeping
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


# ------------------------------------------------------------ the second battery's inputs
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


def test_a_float64_loss_past_float32_range_is_skipped_not_stored_as_inf():
    """1e300 is finite in float64 but overflows the float32 statistics."""
    pruner = Pruner(10, "ucb", 0.5, 3)
    pruner.set_epoch(0)
    loss = pruner.record(torch.arange(10), torch.full((10,), 1e300, dtype=torch.float64))
    assert float(loss) == 0.0
    assert pruner.summary()["nonfinite_losses_skipped"] == 10
    assert bool(torch.isfinite(pruner.stats.table).all())


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


@pytest.mark.parametrize(
    "section, field, value, fragment",
    [
        ("progress", "epoch", -5, "progress['epoch'] must be None or an int >= 0, got -5"),
        ("counters", "samples_forwarded", -1, "counters['samples_forwarded'] must be a number"),
    ],
)
def test_state_values_out_of_range_are_refused(section, field, value, fragment):
    pruner = Pruner(10, "ucb", 0.5, 3)
    pruner.set_epoch(0)
    state = pruner.state_dict()
    state[section] = {**state[section], field: value}
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Pruner(10, "ucb", 0.5, 3).load_state_dict(state)


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
