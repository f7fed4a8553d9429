"""Top-k selection in O(N), with the right primitive for each device and random tie-breaking.

Measured (see ``benchmarks/overhead.py``): on the CPU ``numpy.partition`` finds the k-th value
several times faster than ``torch.kthvalue`` or ``torch.topk`` and an order of magnitude faster
than a sort. On CUDA ``torch.kthvalue`` over one long vector is very slow (hundreds of ms at
100M), while ``torch.topk`` is fast, so CUDA uses ``topk`` on the smaller side of the split.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def kth_largest(scores: Tensor, k: int) -> Tensor:
    """The k-th largest value of a 1-D float tensor (0-dim tensor on the same device)."""
    n = scores.numel()
    if scores.device.type == "cpu":
        values = scores.numpy()
        return torch.as_tensor(np.partition(values, n - k)[n - k])
    smallest_side = n - k + 1
    if k <= smallest_side:
        return torch.topk(scores, k, sorted=False).values.min()
    return torch.topk(scores, smallest_side, largest=False, sorted=False).values.max()


def top_k_mask(scores: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Bool mask of exactly ``k`` samples with the highest scores.

    Samples tied at the threshold are chosen uniformly at random, so equal scores (for example
    the ``+inf`` of samples never seen) never favour low indices.
    """
    n = scores.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return mask
    threshold = kth_largest(scores, k).to(scores.device)
    mask = scores > threshold
    missing = k - int(mask.sum())
    if missing > 0:
        ties = (scores == threshold).nonzero().squeeze(1)
        keys = torch.rand(ties.numel(), generator=generator, device=generator.device)
        chosen = torch.topk(keys, missing, sorted=False).indices.to(scores.device)
        mask[ties[chosen]] = True
    return mask


def random_mask(n: int, k: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Bool mask of ``k`` of ``n`` samples drawn uniformly without replacement."""
    keys = torch.rand(n, generator=generator, device=generator.device).to(device)
    return top_k_mask(keys, k, generator)


def make_generator(device: torch.device, *seeds: int) -> torch.Generator:
    """A generator on ``device`` seeded from a tuple of ints (counter-based: no state to save)."""
    seed = 0
    for s in seeds:
        seed = (seed * 1_000_003 + int(s) + 0x9E3779B1) % (2**63 - 1)
    gen_device = device if device.type == "cuda" else "cpu"
    return torch.Generator(device=gen_device).manual_seed(seed)
