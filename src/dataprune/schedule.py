"""Prune-rate schedules: the fraction left out of each pruned epoch, from which its budget comes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ._validation import check_choice, check_float
from .errors import InvalidValue

#: The named schedules; a callable ``epoch -> prune`` is the other kind.
PRUNE_SCHEDULES = ("constant", "linear", "cosine")

PruneSchedule = str | Callable[[int], float]


def budget(num_samples: int, prune: float) -> int:
    """Samples kept in a pruned epoch: ``k = max(1, round((1 - prune) * N))``."""
    return max(1, round((1 - prune) * num_samples))


def check_schedule(schedule: PruneSchedule, prune: float, prune_end: float | None) -> None:
    """Refuse a schedule and end rate that do not go together."""
    if callable(schedule):
        if prune_end is not None:
            raise InvalidValue(
                f"prune_end={prune_end!r} does not apply to a callable prune_schedule, which "
                "gives every epoch's rate itself; leave prune_end out"
            )
        return
    check_choice("prune_schedule", schedule, PRUNE_SCHEDULES)
    if schedule == "constant" and prune_end is not None and prune_end != prune:
        raise InvalidValue(
            f"prune_end={prune_end!r} does not apply to prune_schedule='constant' (every pruned "
            f"epoch leaves out prune={prune!r}); use 'linear' or 'cosine' to go from prune to "
            "prune_end"
        )
    if schedule != "constant" and prune_end is None:
        raise InvalidValue(
            f"prune_schedule={schedule!r} needs prune_end, the rate of the last pruned epoch "
            "(prune is the first's), in [0, 1)"
        )
    if prune_end is not None:
        check_float("prune_end", prune_end, low=0.0, high=1.0, high_open=True)


def epoch_budgets(
    num_samples: int,
    epochs: int,
    pruned: Sequence[int],
    schedule: PruneSchedule,
    prune: float,
    prune_end: float | None,
    rate_epoch: Callable[[int], int],
) -> list[int]:
    """Every epoch's budget: ``num_samples`` outside ``pruned``, else ``budget`` of its rate.

    The rate of epoch ``e`` is the schedule's at ``rate_epoch(e)`` (the first epoch of its
    selection round, so a subset reused for ``every`` epochs keeps one size). ``linear`` and
    ``cosine`` go from ``prune`` at the first pruned epoch to ``prune_end`` at the last; a
    callable gets the epoch index and returns the rate.
    """
    budgets = [num_samples] * epochs
    if not pruned:
        return budgets
    first, last = pruned[0], pruned[-1]
    for epoch in pruned:
        at = rate_epoch(epoch)
        if callable(schedule):
            value = schedule(at)
            rate = check_float(f"prune_schedule({at})", value, low=0.0, high=1.0, high_open=True)
        elif schedule == "constant":
            rate = prune
        else:
            t = (at - first) / (last - first) if last > first else 0.0
            if schedule == "cosine":
                t = (1 - math.cos(math.pi * t)) / 2
            end = prune if prune_end is None else prune_end  # check_schedule required it
            rate = prune + (end - prune) * t
        budgets[epoch] = budget(num_samples, rate)
    return budgets
