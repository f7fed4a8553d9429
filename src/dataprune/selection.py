"""Selection math: top-k in O(N) with the right primitive for each device, an exact radix select
over sharded scores, and counter-based random numbers for tie-breaking and sampling.

Measured (see ``benchmarks/overhead.py``): on the CPU ``numpy.partition`` finds the k-th value
several times faster than ``torch.kthvalue`` or ``torch.topk`` and an order of magnitude faster
than a sort. On CUDA ``torch.kthvalue`` over one long vector is very slow (hundreds of ms at
100M), while ``torch.topk`` is fast, so CUDA uses ``topk`` on the smaller side of the split.

Randomness is counter-based: a sample's random number is a hash of ``(seed, round, stream,
global sample index)`` (:class:`RandomStream`), not a draw from a generator. A selection is then
a pure function of the seed, the round and the statistics: the same on CPU and CUDA, the same
whether the statistics sit in one process or are sharded over ranks (each rank hashes only its
own indices), and nothing needs saving to resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
from torch import Tensor

from .distributed import all_gather_sizes, all_reduce_sum, world
from .errors import InvalidValue

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64 increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_HASH_CHUNK = 1 << 18


class Stream(IntEnum):
    """Ids of the random streams outside any one selection round; a policy's own streams are
    named by purpose (:func:`dataprune.policies.base.stream_id`)."""

    RS2_ORDER = 0x5252  # rs2: the permutation of each cycle, RandomStream.of(seed, id, cycle)
    SHUFFLE = 0x5348  # the sampler's shuffle order, make_generator(seed, id, epoch)
    RANDOM_MASK_TIES = 0x7469  # random_mask: ties between equal hashed uniforms


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def splitmix64(z: int) -> int:
    """The splitmix64 finaliser on a Python int (reference for the tensor version)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _shift_right(z: Tensor, bits: int, out: Tensor) -> Tensor:
    """Logical right shift of int64 into ``out`` (``>>`` is arithmetic on negative values)."""
    return torch.bitwise_right_shift(z, bits, out=out).bitwise_and_((1 << (64 - bits)) - 1)


@dataclass(frozen=True)
class RandomStream:
    """Counter-based random numbers: one 64-bit hash per global sample index.

    ``bits(i)`` is the i-th output of splitmix64 started from a key hashed from
    ``(seed, round, stream)``, computed on int64 tensors (multiplication wraps; right shifts
    are made logical by masking), so it is identical on every device and for any subset of
    indices a rank asks for.
    """

    key: int

    @classmethod
    def of(cls, *parts: int) -> RandomStream:
        key = 0
        for part in parts:
            key = splitmix64(key + _GOLDEN + (int(part) & _MASK64))
        return cls(key)

    def bits(self, indices: Tensor) -> Tensor:
        """64 random bits per index (int64 tensor on the indices' device)."""
        return self._hash(indices, torch.int64)

    def uniform(self, indices: Tensor) -> Tensor:
        """float32 in [0, 1): the top 24 bits, so every value is exact."""
        return self._hash(indices, torch.float32, 40, 0).mul_(2.0**-24)

    def order_keys(self, indices: Tensor) -> Tensor:
        """int32 keys (the top 32 bits, as signed) that order tied samples at random."""
        return self._hash(indices, torch.int32, 32, 1 << 31)

    def _hash(
        self, indices: Tensor, dtype: torch.dtype, shift: int | None = None, bias: int = 0
    ) -> Tensor:
        """``(bits >> shift) - bias`` as ``dtype`` (the raw bits if ``shift`` is None).

        On the CPU it runs over cache-sized chunks with two reused buffers: the dozen passes of
        the hash then stay in cache (about 4x faster than whole-tensor passes at 50M).
        """
        indices = indices.reshape(-1)
        n = indices.numel()
        out = torch.empty(n, dtype=dtype, device=indices.device)
        chunk = _HASH_CHUNK if indices.device.type == "cpu" else max(n, 1)
        z = torch.empty(min(n, chunk), dtype=torch.int64, device=indices.device)
        tmp = torch.empty_like(z)
        for start in range(0, n, chunk):
            zc, tc = z[: min(chunk, n - start)], tmp[: min(chunk, n - start)]
            zc.copy_(indices[start : start + chunk])
            zc.add_(1).mul_(_signed64(_GOLDEN)).add_(_signed64(self.key))
            for bits, mix in ((30, _MIX1), (27, _MIX2), (31, None)):
                _shift_right(zc, bits, tc)
                zc.bitwise_xor_(tc)
                if mix is not None:
                    zc.mul_(_signed64(mix))
            if shift is not None:
                zc = _shift_right(zc, shift, tc).sub_(bias)
            out[start : start + chunk].copy_(zc)
        return out


# ------------------------------------------------------------------ exact k-th largest over ranks
_SIGN32 = 1 << 31
_RADIX_BITS = 16  # two passes over a 32-bit key


def float_order_keys(scores: Tensor) -> Tensor:
    """Signed int32 keys ordered exactly like the float32 ``scores`` (``-0.0`` counts as ``0.0``).

    Positive floats keep their bit pattern; negative ones get their magnitude bits flipped, so
    comparing keys as signed ints compares the floats. Scores must not be NaN.
    """
    bits = (scores.to(torch.float32) + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


def order_key_to_float(key: int) -> Tensor:
    """The float32 (0-dim, CPU) whose :func:`float_order_keys` key is ``key``."""
    bits = key if key >= 0 else key ^ 0x7FFFFFFF
    return torch.tensor([bits], dtype=torch.int32).view(torch.float32)[0]


def radix_select(keys: Tensor, k: int) -> tuple[int, int]:
    """The k-th largest of all ranks' int32 ``keys`` and how many keys are strictly larger.

    Exact radix select: two passes over 16-bit digits, most significant first. Each pass counts
    the digits of the keys that share the prefix chosen so far (one histogram all_reduce) and
    keeps only the keys in the bucket that holds the k-th largest, so the work is O(local size)
    and the traffic a few small all_reduces, never a global sort or gather. Outside
    torch.distributed it is an ordinary (single-process) selection.
    """
    total = sum(all_gather_sizes(keys.numel()))
    if not 1 <= k <= total:
        raise InvalidValue(f"k={k} must be in [1, {total}] (the number of keys over all ranks)")
    bins = 1 << _RADIX_BITS
    low_mask = bins - 1
    candidates = keys.to(torch.int32)
    prefix = greater = 0
    remaining = k
    for shift in range(32 - _RADIX_BITS, -1, -_RADIX_BITS):
        digits = (candidates >> shift) & low_mask
        if shift == 32 - _RADIX_BITS:  # unsigned order of the top digit: flip the sign bit
            digits ^= bins >> 1
        local = torch.bincount(digits, minlength=bins)
        hist = all_reduce_sum(local.clone()).cpu()
        at_least = hist.flip(0).cumsum(0).flip(0)  # at_least[d] = number of digits >= d
        digit = int((at_least >= remaining).sum()) - 1
        above = int(at_least[digit] - hist[digit])
        remaining -= above
        greater += above
        prefix = (prefix << _RADIX_BITS) | digit
        if shift and int(local[digit]) != candidates.numel():  # (all tied: nothing to drop)
            candidates = candidates[digits == digit]
    return prefix - _SIGN32, greater


#: The k-th-value primitive per device type, from ``benchmarks/overhead.py``: numpy's partition
#: on the CPU; ``topk`` elsewhere (CUDA's ``kthvalue`` takes 723 ms at 100M against 2.3 ms).
KTH_PRIMITIVE = {"cpu": "partition"}


def kth_largest(scores: Tensor, k: int, primitive: str | None = None) -> Tensor:
    """The k-th largest value of a 1-D float or int tensor (0-dim tensor, CPU or its device).

    ``primitive`` ("partition" or "topk") overrides the per-device choice of ``KTH_PRIMITIVE``.
    """
    n = scores.numel()
    primitive = primitive or KTH_PRIMITIVE.get(scores.device.type, "topk")
    if primitive == "partition":
        values = scores.cpu().numpy()
        return torch.as_tensor(np.partition(values, n - k)[n - k])
    smallest_side = n - k + 1
    if k <= smallest_side:
        return torch.topk(scores, k, sorted=False).values.min()
    return torch.topk(scores, smallest_side, largest=False, sorted=False).values.max()


def top_k_mask(
    scores: Tensor,
    k: int,
    ties: RandomStream,
    shard: tuple[int, int] | None = None,
) -> Tensor:
    """Bool mask of exactly ``k`` samples with the highest scores.

    Samples tied at the threshold are chosen by the random keys ``ties`` gives their global
    indices (and, for equal keys, the lower index), so equal scores (for example the ``+inf`` of
    samples never seen) never favour low indices. ``shard=(offset, total)``: ``scores`` are the
    rows ``[offset, offset + len(scores))`` of ``total`` scores spread over the ranks of
    torch.distributed in contiguous, rank-ordered shards; ``k`` counts over all of them, the
    threshold comes from :func:`~dataprune.distributed.radix_select` and the mask returned is
    this rank's part of exactly the mask one process would compute over all scores.
    Any float is a valid score, so the mask always holds exactly ``k``: ``+inf`` ranks first,
    and NaN counts as ``-inf`` (a score nobody can read is never preferred to a real one).
    """
    n = scores.numel()
    if scores.is_floating_point():
        scores = scores.nan_to_num(-math.inf, math.inf, -math.inf)
    offset, total = shard if shard is not None else (0, n)
    if k >= total:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    if shard is None:
        threshold = kth_largest(scores, k).to(scores.device)
        mask = scores > threshold
        missing = k - int(mask.sum())
    else:
        key, greater = radix_select(float_order_keys(scores), k)
        threshold = order_key_to_float(key).to(scores.device)
        mask = scores > threshold
        missing = k - greater
    if missing > 0:
        tied = (scores == threshold).nonzero().squeeze(1)
        chosen = _pick_ties(ties.order_keys(tied + offset), missing, shard is not None)
        mask[tied[chosen]] = True
    return mask


def _pick_ties(keys: Tensor, m: int, sharded: bool) -> Tensor:
    """Bool mask of the ``m`` largest ``keys`` (over all ranks if ``sharded``); equal keys go
    to the lower position, i.e. the lower global index, since shards are in rank order."""
    if sharded:
        key, greater = radix_select(keys, m)
        threshold = torch.tensor(key, dtype=keys.dtype, device=keys.device)
    else:
        threshold = kth_largest(keys, m).to(keys.device)
    chosen = keys > threshold
    rest = m - (greater if sharded else int(chosen.sum()))
    if rest > 0:
        equal = (keys == threshold).nonzero().squeeze(1)
        before = 0
        if sharded:
            before = sum(all_gather_sizes(equal.numel())[: world()[0]])
        take = min(max(rest - before, 0), equal.numel())
        chosen[equal[:take]] = True
    return chosen


def random_mask(
    n: int,
    k: int,
    stream: RandomStream,
    device: torch.device,
    shard: tuple[int, int] | None = None,
) -> Tensor:
    """Bool mask of ``k`` of ``n`` samples drawn uniformly without replacement.

    The samples with the ``k`` largest hashed uniforms (ties: a second hashed key, then the
    lower index); with ``shard=(offset, total)`` this rank's ``n`` rows of it.
    """
    offset = 0 if shard is None else shard[0]
    keys = stream.uniform(torch.arange(offset, offset + n, device=device))
    return top_k_mask(keys, k, RandomStream.of(stream.key, Stream.RANDOM_MASK_TIES), shard)


def make_generator(*seeds: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from a tuple of ints (the sampler's shuffle order)."""
    return torch.Generator().manual_seed(RandomStream.of(*seeds).key & (2**63 - 1))
