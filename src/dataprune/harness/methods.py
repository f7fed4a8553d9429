"""The methods the harness runs: one registry, built on the core's.

Every registered policy runs under its own name, except ``static-score``, which the harness
feeds from its static scorers. The harness adds its own entries: ``full-matched`` (full data for
exactly the optimizer steps of a pruned run) and the static scorers ``el2n``, ``grand`` and
``forgetting``, which score the samples once (their cost charged to the run) and then keep the
top k through ``static-score``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validation import check_choice
from ..policies import POLICIES, Option, get_policy, methods

#: The fields of a run that only the static scorers use.
SCORING_FIELDS = ("score_epochs", "score_runs", "class_balanced", "scores_file")


@dataclass(frozen=True)
class HarnessMethod:
    """A method of the harness: the core policy that trains, and what the harness adds.

    ``scorer``: the training set is scored first by this static scorer, and the run keeps the
    top k of its scores. ``matches_steps``: the run trains full data for the optimizer steps of
    a pruned run at its prune rate and schedule (the pruning fields size that budget).
    """

    name: str
    policy: str
    scorer: bool = False
    matches_steps: bool = False
    about: str = ""

    def options(self) -> dict[str, Option]:
        """The options this method takes on the command line (name -> ``Option``)."""
        if self.scorer or self.matches_steps:
            return {}
        return {name: o for name, o in get_policy(self.policy).options.items() if o.cli}

    def unused_fields(self) -> dict[str, str]:
        """The run's fields this method does not use, each with the reason."""
        if self.matches_steps:  # its pruning fields size its step budget
            unused = dict.fromkeys(("rescale", "alpha"), "it trains on every sample")
        else:
            unused = get_policy(self.policy).unused_parameters()
        if not self.scorer:
            unused |= dict.fromkeys(SCORING_FIELDS, "it is not a static scorer")
        elif self.name == "forgetting":
            unused["score_runs"] = "forgetting counts one scoring run's events"
        return unused


#: The harness's own entries, in the order tables list them (after ``full``).
_OWN = (
    HarnessMethod(
        "full-matched", "full", matches_steps=True, about="full data, a pruned run's steps"
    ),
    HarnessMethod("el2n", "static-score", scorer=True, about="EL2N scores, top k kept"),
    HarnessMethod("grand", "static-score", scorer=True, about="GraNd scores, top k kept"),
    HarnessMethod("forgetting", "static-score", scorer=True, about="forgetting counts, top k"),
)


def harness_methods() -> dict[str, HarnessMethod]:
    """Every method the harness runs, by name, in the order tables list them."""
    policies = [name for name in methods() if name not in ("full", "static-score")]
    entries = [HarnessMethod("full", "full"), *_OWN]
    entries += [HarnessMethod(name, name, about=POLICIES[name].__doc__ or "") for name in policies]
    return {entry.name: entry for entry in entries}


def run_methods() -> tuple[str, ...]:
    """The names of :func:`harness_methods`."""
    return tuple(harness_methods())


def get_method(name: str) -> HarnessMethod:
    """The harness method ``name``; a clear error lists the known ones."""
    known = harness_methods()
    return known[check_choice("method", name, known)]


def scorers() -> tuple[str, ...]:
    """The static scorers' names."""
    return tuple(name for name, entry in harness_methods().items() if entry.scorer)
