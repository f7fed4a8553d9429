"""The one registry of methods: every list of methods, anywhere, is read from it."""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
import re

from .._validation import check_choice
from ..errors import InvalidType, InvalidValue
from .base import Policy

logger = logging.getLogger("dataprune")

POLICIES: dict[str, type[Policy]] = {}

#: The method and prune rate of ``Pruner(n, epochs=E)`` and of every integration's default.
DEFAULT_METHOD = "peek"
DEFAULT_PRUNE = 0.3
#: The entry-point group through which other packages register methods.
ENTRY_POINT_GROUP = "dataprune.methods"

_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` available as ``method=cls.name`` everywhere.

    The name is lower-case words joined by hyphens (it appears in comma-separated lists), and
    no option may take the name of one of the Pruner's own parameters (checked when the method
    is first used, since the Pruner is defined after the built-in methods).
    """
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise InvalidType(f"register() takes a subclass of dataprune.Policy, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidType(
            f"{cls.__name__} needs its own class attribute name = '<method name>' of lower-case "
            f"words joined by hyphens, e.g. 'lowest-loss'; got {name!r}"
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
    load_entry_points()
    return tuple(POLICIES)


def get_policy(method: str) -> type[Policy]:
    """The policy class of ``method``; a clear error lists the known methods."""
    if method not in POLICIES:
        load_entry_points()
    policy = POLICIES[check_choice("method", method, POLICIES)]
    clashing = sorted(set(policy.options) & _pruner_parameters())
    if clashing:
        raise InvalidValue(
            f"method {method!r} ({policy.__module__}.{policy.__qualname__}) has an option named "
            f"{clashing[0]!r}, a parameter of the Pruner itself; rename the option"
        )
    return policy


@functools.cache
def load_entry_points() -> None:
    """Import the methods other packages declare in the ``dataprune.methods`` entry-point group.

    A package lists ``name = "module:Class"`` (or a module whose import registers its methods)
    under ``[project.entry-points."dataprune.methods"]``; the class is registered if the import
    did not do it. Read once, the first time methods are listed or an unknown one is asked for.
    """
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as error:  # a broken plug-in must not break the built-in methods
            logger.warning("could not load dataprune method %r: %s", entry.value, error)
            continue
        if (
            isinstance(loaded, type)
            and issubclass(loaded, Policy)
            and loaded not in POLICIES.values()
        ):
            register(loaded)


@functools.cache
def _pruner_parameters() -> frozenset[str]:
    from ..pruner import Pruner  # the Pruner imports this module: read it once both exist

    parameters = inspect.signature(Pruner).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is not p.VAR_KEYWORD)
