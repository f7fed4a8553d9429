"""The one registry of methods: every list of methods, anywhere, is read from it."""

from __future__ import annotations

from .._validation import check_choice
from .base import Policy

POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` available as ``method=cls.name`` everywhere."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute name = '<method name>'")
    known = POLICIES.get(name)
    if known is not None and known is not cls:
        raise ValueError(
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
