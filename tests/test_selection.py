"""dataprune.selection in one process: the k-th largest and top-k over any float input, the
order keys of floats, and the random streams that hash each sample's global index (the sharded
selection across processes is in test_distributed_sharded.py)."""

from __future__ import annotations

import math

import pytest
import torch
from test_distributed_sharded import kth_vector

from dataprune.selection import RandomStream, float_order_keys, splitmix64, top_k_mask


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


def test_hash_is_splitmix64_of_the_global_index():
    stream = RandomStream.of(7, 3, 1)
    idx = torch.tensor([0, 1, 2, 65_537, 2**31 + 5, 2**40, 2**62])
    expected = [splitmix64(stream.key + (i + 1) * 0x9E3779B97F4A7C15) for i in idx.tolist()]
    assert [b & (2**64 - 1) for b in stream.bits(idx).tolist()] == expected
    # a shard hashes its own indices to the same numbers
    whole = stream.uniform(torch.arange(1000))
    assert torch.equal(whole[400:700], stream.uniform(torch.arange(400, 700)))
    assert float(whole.min()) >= 0.0 and float(whole.max()) < 1.0
    assert RandomStream.of(7, 3, 1) != RandomStream.of(7, 3, 2)


def test_float_order_keys_sort_like_floats():
    x = kth_vector(0)
    keys = float_order_keys(x)
    order = torch.argsort(keys, stable=True)
    assert bool((x[order][1:] >= x[order][:-1]).all())
    assert int(float_order_keys(torch.tensor([-0.0]))) == int(float_order_keys(torch.tensor([0.0])))
