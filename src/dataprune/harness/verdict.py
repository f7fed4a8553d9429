"""Verdicts from seeds paired by seed: a mean difference, its 95% confidence interval, and a
word that claims a difference only where the interval excludes zero.

Runs of two methods with the same seed share the initial weights, the data order and the
augmentation, so the difference within a seed is far less noisy than the two methods' spreads:
compared by seed, 3 seeds can separate methods that overlapping mean ± std cannot.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import InvalidValue

#: Two-sided 95% critical values of Student's t by degrees of freedom (t_{0.975, df}).
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip
_Z95 = 1.960  # df -> infinity

HOLDS, FAILS, NO_DIFFERENCE = "holds", "fails", "no difference measured"


def t_critical(df: int) -> float:
    """``t_{0.975, df}``: exact to the table's 3 decimals up to 30, then interpolated in 1/df."""
    if df < 1:
        raise InvalidValue(f"df={df} must be >= 1 (an interval needs at least 2 paired seeds)")
    if df in _T95:
        return _T95[df]
    known = sorted(_T95)
    below = max(d for d in known if d < df)
    above = min((d for d in known if d > df), default=math.inf)
    upper = _Z95 if above == math.inf else _T95[above]
    # t is close to linear in 1/df over these gaps (the error is below 0.001)
    share = (1 / below - 1 / df) / (1 / below - (0 if above == math.inf else 1 / above))
    return _T95[below] + (upper - _T95[below]) * share


@dataclass(frozen=True)
class Interval:
    """A mean paired difference (``a - b``) over ``n`` seeds with its 95% interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"+0.12 [-0.30, +0.54]"``, values times ``scale`` (100 for points of accuracy)."""
        mean, low, high = (scale * v for v in (self.mean, self.low, self.high))
        if self.n < 2:
            return f"{mean:+.{digits}f} (1 seed)"
        return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def mean_interval(values: Iterable[float]) -> Interval:
    """The mean of ``values`` with its t-based 95% interval (infinite with one value)."""
    values = [float(v) for v in values]
    if not values:
        raise InvalidValue("an interval needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, -math.inf, math.inf, 1)
    half = t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """``a - b`` paired by seed (the keys), over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise InvalidValue(
            f"no seed in common to pair: {sorted(a)} against {sorted(b)}; run both with the "
            "same --seeds"
        )
    return mean_interval(a[s] - b[s] for s in seeds)


def verdict(difference: Interval, claim: str = "higher") -> str:
    """Whether ``a`` is ``claim`` ("higher" or "lower") than ``b``: ``"holds"`` or
    ``"fails"`` only where the interval excludes zero, else ``"no difference measured"``."""
    if claim not in ("higher", "lower"):
        raise InvalidValue(f"claim={claim!r} is not known; choose one of: higher, lower")
    if not difference.excludes_zero:
        return NO_DIFFERENCE
    return HOLDS if (difference.low > 0) == (claim == "higher") else FAILS


def overall(verdicts: Iterable[str]) -> str:
    """One word for several comparisons: the verdict they all share, else ``"mixed"``."""
    words = set(verdicts)
    if not words:
        return NO_DIFFERENCE
    return words.pop() if len(words) == 1 else "mixed"


def tally(verdicts: Iterable[str]) -> str:
    """``"holds in 2, fails in 0, no difference measured in 1 of 3"``."""
    verdicts = list(verdicts)
    counts = ", ".join(
        f"{word} in {verdicts.count(word)}" for word in (HOLDS, FAILS, NO_DIFFERENCE)
    )
    return f"{counts} of {len(verdicts)}"
