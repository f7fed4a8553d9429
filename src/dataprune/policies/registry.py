"""The one registry of methods: every list of methods, anywhere, is read from it."""

from __future__ import annotations

import re

from .._validation import check_choice
from ..errors import InvalidType, InvalidValue
from .base import Policy

POLICIES: dict[str, type[Policy]] = {}


#: The Pruner's own parameters: a method option may not take one of these names.
RESERVED_OPTIONS = frozenset(
    {
        "num_samples", "method", "prune", "epochs", "seed", "every", "warmup_epochs",
        "anneal_epochs", "rescale", "alpha", "device", "shard_stats", "compile",
    }
)  # fmt: skip
_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` available as ``method=cls.name`` everywhere.

    The name is lower-case words joined by hyphens (it appears in comma-separated lists), and
    no option may take the name of one of the Pruner's own parameters.
    """
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise InvalidType(f"register() takes a subclass of dataprune.Policy, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidType(
            f"{cls.__name__} needs its own class attribute name = '<method name>' of lower-case "
            f"words joined by hyphens, e.g. 'lowest-loss'; got {name!r}"
        )
    clashing = sorted(set(cls.options) & RESERVED_OPTIONS)
    if clashing:
        raise InvalidValue(
            f"{cls.__name__} has an option named {clashing[0]!r}, a parameter of the Pruner "
            "itself; rename the option"
        )
    known = POLICIES.get(name)
    if known is not None and known is not cls:
        raise InvalidValue(
            f"method name {name!r} is taken by {known.__module__}.{known.__qualname__}; "
            "choose another name"
        )
    POLICIES[name] = cls
    return cls


def methods() -> tuple[str, ...]:
    """The names of every registered method, in registration order."""
    return tuple(POLICIES)


def get_policy(method: str) -> type[Policy]:
    """The policy class of ``method``; a clear error lists the known methods."""
    return POLICIES[check_choice("method", method, POLICIES)]
