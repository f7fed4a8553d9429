"""Pruner.state_dict and load_state_dict (dataprune.state): a loaded state shares no storage,
non-finite statistics load as unseen, and the state of another pruner, or a damaged one, is
refused naming what differs."""

from __future__ import annotations

import math
import re

import pytest
import torch
from test_policies import fill
from test_pruner import _raises

from dataprune import Pruner


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


# ------------------------------------------------------------------- refused states


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


def test_a_state_saved_before_an_option_existed_loads_at_its_default():
    state = Pruner(10, "peek", 0.5, 2).state_dict()
    del state["options"]["steps"]  # as a version without the option saved it
    Pruner(10, "peek", 0.5, 2).load_state_dict(state)
    with pytest.raises(ValueError, match="'steps': True"):
        Pruner(10, "peek", 0.5, 2, steps=True).load_state_dict(state)


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
