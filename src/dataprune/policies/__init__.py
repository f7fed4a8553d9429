"""Selection policies, one file per method, and the registry every list of methods comes from.

``register`` a :class:`Policy` subclass to add a method (see its docstring for a whole example).
"""

# Importing a method's file registers it; this order is the order methods are listed in.
from . import full, random, rs2, epsilon_greedy, ucb, infobatch, seta, orderdp, repb  # noqa: F401, I001
from . import kakurenbo, peek, selective_backprop, static  # noqa: F401, I001
from .base import Option, Policy, Selection, SelectionContext, unseen_first
from .registry import DEFAULT_METHOD, DEFAULT_PRUNE, POLICIES, get_policy, methods, register

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_PRUNE",
    "POLICIES",
    "Option",
    "Policy",
    "Selection",
    "SelectionContext",
    "get_policy",
    "methods",
    "register",
    "unseen_first",
]
