"""The methods the harness runs, all derived from the core's one registry.

Every registered policy runs under its own name, except ``static-score``, which the harness
feeds from its static scorers: ``el2n``, ``grand`` and ``forgetting`` each score the samples
once (their cost charged to the run), then ``static-score`` keeps the top k. ``full-matched`` is
full data for exactly the optimizer steps of the pruned run at its prune rate and schedule.
"""

from __future__ import annotations

from ..policies import POLICIES, get_policy
from ..policies.full import Full
from ..policies.static import StaticScore

SCORERS = ("el2n", "grand", "forgetting")
FULL_MATCHED = "full-matched"


def run_methods() -> tuple[str, ...]:
    """Every method the harness runs, in the order tables list them."""
    policies = [name for name in POLICIES if name not in (Full.name, StaticScore.name)]
    return (Full.name, FULL_MATCHED, *SCORERS, *policies)


def core_method(method: str) -> str:
    """The core policy that runs ``method`` (one of :func:`run_methods`)."""
    if method == FULL_MATCHED:
        return Full.name
    if method in SCORERS:
        return StaticScore.name
    return get_policy(method).name


def method_options(method: str) -> dict:
    """The options ``method`` takes on the command line (name -> ``Option``)."""
    if method in SCORERS or method == FULL_MATCHED:
        return {}
    return {name: o for name, o in get_policy(method).options.items() if o.cli}
