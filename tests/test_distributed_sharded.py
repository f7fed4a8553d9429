"""Sharded statistics and the distributed k-th largest, in 2 and 3 CPU processes (gloo).

One spawn per world size runs every scenario and saves what each rank saw; the tests compare
those records with each other and with single-process results.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dataprune import Pruner
from dataprune.distributed import all_gather_indices
from dataprune.selection import (
    RandomStream,
    float_order_keys,
    kth_largest,
    order_key_to_float,
    radix_select,
    top_k_mask,
)


def distributed_kth_largest(local_scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of all ranks' float32 scores, by the radix select on their keys."""
    key, _ = radix_select(float_order_keys(local_scores.flatten()), k)
    return order_key_to_float(key)


N, PRUNE, EPOCHS = 203, 0.4, 5
METHODS = {
    "random": {},
    "static-random": {},
    "rs2": {},
    "epsilon-greedy": {"epsilon": 0.3},
    "ucb": {},
    "infobatch": {},
    "seta": {"window": 0.6},  # a window of 3 of 5 groups, topped up to the budget
    "seta-thinned": {"method": "seta", "r": 0.0},  # a window of 4, thinned
    "static-score": {"scores": (torch.arange(N) % 7).float()},  # heavy ties at the threshold
    "kakurenbo": {"tau": 0.1},  # after the first epochs, enough samples qualify
    "kakurenbo-filled": {"method": "kakurenbo"},  # too few qualify: topped up uniformly
    "orderdp": {},
    "repb": {"window": 3},  # weighted by selection frequency: the weights gathered too
}
KTH_SIZES = (1, 2, 50, 333, 600, 999, 1000)


def kth_vector(seed: int) -> torch.Tensor:
    """1000 floats with many ties, signed zeros and infinities."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(1000, generator=gen) * 3).round() / 2
    x[::11] = 0.0
    x[5::11] = -0.0
    x[::97] = math.inf
    x[3::89] = -math.inf
    return x


def loss_of(indices: torch.Tensor, epoch: int) -> torch.Tensor:
    """A deterministic loss per (sample, epoch) with many equal values, some NaN."""
    loss = ((indices * 31 + epoch * 17) % 13).float() / 4 + 0.25
    return torch.where(indices % 41 == epoch, math.nan, loss)


def _run(pruner: Pruner, epoch: int) -> torch.Tensor:
    """One epoch of the loop every method shares (the batch is its indices)."""
    pruner.set_epoch(epoch)
    order = pruner.sampler().local_indices()

    def sample_losses(rows: torch.Tensor) -> torch.Tensor:
        return loss_of(rows, epoch)

    for batch in order.split(16):
        pruner.loss(batch, batch, sample_losses)
    subset = pruner.indices().clone()
    pruner.end_epoch(torch.nn.Identity(), lambda rows: rows, sample_losses, 16)
    return subset


def _worker(rank: int, world_size: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world_size
    )
    record: dict = {"kth": {}, "subsets": {}, "weights": {}, "state": {}, "gathered": {}}
    start, end = rank * 1000 // world_size, (rank + 1) * 1000 // world_size
    for every in (1, 3, 97):  # dense: sent as bitmasks; sparse: as index lists
        local = torch.arange(start, end)
        record["gathered"][every] = all_gather_indices(
            local[local % every == 0], start, end - start
        )
    for seed in range(3):
        x = kth_vector(seed)
        lo, hi = rank * x.numel() // world_size, (rank + 1) * x.numel() // world_size
        record["kth"][seed] = [float(distributed_kth_largest(x[lo:hi], k)) for k in KTH_SIZES]
        stream = RandomStream.of(seed)
        for k in KTH_SIZES:
            record["kth"][seed, k] = top_k_mask(x[lo:hi], k, stream, (lo, x.numel()))
    for name, options in METHODS.items():
        kw = {"seed": 5, "anneal_epochs": 0, **options}
        method = kw.pop("method", name)
        sharded = Pruner(N, method, PRUNE, EPOCHS, shard_stats=True, **kw)
        plain = Pruner(N, method, PRUNE, EPOCHS, **kw)
        assert sharded.shard == (rank * N // world_size, (rank + 1) * N // world_size)
        assert plain.shard is None
        record["subsets"][name] = [(_run(sharded, e), _run(plain, e)) for e in range(EPOCHS)]
        record["weights"][name] = (sharded.progress.weights, plain.progress.weights)
        gathered = sharded.gathered_state_dict()
        record["state"][name] = (
            gathered["stats"],
            gathered["selected_count"],
            plain.state_dict()["stats"],
            plain.state_dict()["selected_count"],
        )
        # A shard's own state, and a whole state, load back into a sharded pruner.
        for state in (sharded.state_dict(), gathered):
            again = Pruner(N, method, PRUNE, EPOCHS, shard_stats=True, **kw)
            again.load_state_dict(state)
            assert torch.equal(again.stats.table, sharded.stats.table)
            assert torch.equal(again.selected_count, sharded.selected_count)
    for n in (1, 2, 4):  # shards of 0 or 1 samples
        for method in ("ucb", "random", "infobatch", "seta", "kakurenbo", "orderdp", "repb"):
            tiny = Pruner(n, method, 0.5, 3, seed=1, anneal_epochs=0, shard_stats=True)
            plain = Pruner(n, method, 0.5, 3, seed=1, anneal_epochs=0)
            for epoch in range(3):
                assert torch.equal(_run(tiny, epoch), _run(plain, epoch)), (n, method, epoch)
    torch.save(record, os.path.join(tmp, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"world{w}")
def ranks(request, tmp_path_factory) -> list[dict]:
    world_size = request.param
    tmp = tmp_path_factory.mktemp(f"world{world_size}")
    mp.spawn(_worker, args=(world_size, str(tmp)), nprocs=world_size, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def test_all_gather_indices_dense_and_sparse(ranks):
    for every in (1, 3, 97):
        for record in ranks:
            assert torch.equal(record["gathered"][every], torch.arange(0, 1000, every))


def test_distributed_kth_largest_matches_one_process(ranks):
    for seed in range(3):
        x = kth_vector(seed)
        expected = [float(kth_largest(x, k)) for k in KTH_SIZES]
        assert expected == [float(distributed_kth_largest(x, k)) for k in KTH_SIZES]
        for record in ranks:
            assert record["kth"][seed] == expected


def test_sharded_top_k_mask_is_the_single_process_mask(ranks):
    for seed in range(3):
        x = kth_vector(seed)
        for k in KTH_SIZES:
            single = top_k_mask(x, k, RandomStream.of(seed))
            sharded = torch.cat([record["kth"][seed, k] for record in ranks])
            assert int(single.sum()) == k
            assert torch.equal(sharded, single), (seed, k)


@pytest.mark.parametrize("method", list(METHODS))
def test_sharded_statistics_select_what_unsharded_ones_do(ranks, method):
    k = round((1 - PRUNE) * N)
    for epoch in range(EPOCHS):
        reference = ranks[0]["subsets"][method][epoch][1]
        assert reference.numel() == k
        for record in ranks:
            sharded, plain = record["subsets"][method][epoch]
            assert torch.equal(plain, reference)  # every rank, unsharded
            assert torch.equal(sharded, reference), (method, epoch)  # every rank, sharded
    stats, count, plain_stats, plain_count = ranks[0]["state"][method]
    assert torch.equal(stats, plain_stats) and torch.equal(count, plain_count)
    assert bool((plain_stats[:, 2] > 0).any())
    sharded_weights, plain_weights = ranks[-1]["weights"][method]
    assert (sharded_weights is None) == (plain_weights is None)
    if plain_weights is not None:
        assert torch.equal(sharded_weights, plain_weights)


def test_selections_use_the_statistics(ranks):
    # ucb: epoch 0 is a random pick among unseen samples; later ones follow the losses
    subsets = [plain for _, plain in ranks[0]["subsets"]["ucb"]]
    assert not torch.equal(subsets[0], subsets[1])
    rand = [plain for _, plain in ranks[0]["subsets"]["random"]]
    assert not torch.equal(rand[0], rand[1])


def test_without_torch_distributed_shard_stats_changes_nothing():
    a = Pruner(N, "ucb", PRUNE, 3, seed=1, shard_stats=True)
    b = Pruner(N, "ucb", PRUNE, 3, seed=1)
    assert a.shard is None
    for epoch in range(3):
        assert torch.equal(_run(a, epoch), _run(b, epoch))
