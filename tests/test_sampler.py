"""PrunedSampler and PrunedBatchSampler (dataprune.sampler): set_epoch, a length that matches
iteration, equal shards across ranks, a shuffle of its own each epoch, and the batches of a
method that keeps a full epoch's step count."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler_cuts_as_a_loader_of_that_batch_size_does(drop_last):
    pruner = Pruner(101, "ucb", 0.4, 3, seed=1)
    reference = torch.utils.data.BatchSampler(pruner.sampler(), 8, drop_last)
    batches = pruner.batch_sampler(8, drop_last=drop_last)
    for epoch in range(3):
        batches.set_epoch(epoch)
        assert list(batches) == list(reference)
        assert len(batches) == len(reference) == pruner.epoch_batches(epoch, 8, drop_last)
    assert batches.batch_size == 8  # fixed: Accelerate may complete the last round


@pytest.mark.parametrize("drop_last", [False, True])
def test_steps_keep_a_full_epochs_batches_on_smaller_ones(drop_last):
    n, batch, epochs = 1000, 64, 5
    pruner = Pruner(n, "peek", 0.7, epochs, seed=3, warmup_epochs=1, steps=True)
    full = Pruner(n, "full", 0.0, epochs)
    assert pruner.total_steps(batch, drop_last) == full.total_steps(batch, drop_last)
    batches = pruner.batch_sampler(batch, drop_last=drop_last)
    assert batches.batch_size is None  # sizes vary by epoch
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        cut = list(batches)
        sizes = [len(b) for b in cut]
        assert len(cut) == len(batches) == full.epoch_batches(epoch, batch, drop_last)
        if pruner.keeps_steps(epoch):  # every sample of the subset, in smaller batches
            assert sorted(i for b in cut for i in b) == pruner.indices().tolist()
            assert max(sizes) - min(sizes) <= 1 and max(sizes) < batch
        assert pruner.lr_scale() == 1.0  # steps replace the stretch


def test_steps_shard_across_ranks_into_equal_step_counts():
    pruner = Pruner(101, "peek", 0.6, 2, steps=True)
    pruner.set_epoch(0)
    for world_size in (2, 3):
        counts = {len(list(pruner.batch_sampler(8, num_replicas=world_size, rank=r)))
                  for r in range(world_size)}  # fmt: skip
        assert counts == {math.ceil(math.ceil(101 / world_size) / 8)}
    # the whole subset (Accelerate shards it by batches): every rank's steps, W times over
    assert len(pruner.batch_sampler(8, num_replicas=1, rank=0)) == math.ceil(101 / 8)


def test_steps_never_cut_an_empty_batch():
    pruner = Pruner(30, "peek", 0.9, 2, steps=True)  # 3 samples, a full epoch of 30 batches
    pruner.set_epoch(0)
    assert [len(b) for b in pruner.batch_sampler(1)] == [1, 1, 1]
    assert pruner.total_steps(1) == 3 + 3


def test_steps_with_a_fixed_batch_size_loader_warn_once(caplog):
    pruner = Pruner(100, "peek", 0.5, 2, steps=True)
    pruner.set_epoch(0)
    with caplog.at_level("WARNING", logger="dataprune"):
        list(pruner.sampler())
        list(pruner.sampler())
    warnings = [r for r in caplog.records if "batch_sampler=pruner.batch_sampler" in r.message]
    assert len(warnings) == 1
