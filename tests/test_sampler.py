"""PrunedSampler (dataprune.sampler): set_epoch, a length that matches iteration, equal shards
across ranks, and a shuffle of its own each epoch."""

from __future__ import annotations

import pytest
import torch

from dataprune import Pruner
from dataprune.sampler import PrunedSampler


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
