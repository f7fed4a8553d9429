"""The errors dataprune raises for problems its user can fix.

Every one is a :class:`DataPruneError`: a bad argument, file, state or folder, told in one line
that names the thing, what is wrong and what to do. The command line shows these as one line
and exit status 2; any other exception is a bug in dataprune and is reported as one. They also
subclass the built-in type a Python caller expects (``ValueError``, ``TypeError``), so code
that catches those keeps working.
"""

from __future__ import annotations


class DataPruneError(Exception):
    """A problem the user can fix, said in one line."""


class InvalidValue(DataPruneError, ValueError):
    """An argument, option, field or file holds a value that is not allowed."""


class InvalidType(DataPruneError, TypeError):
    """An argument is of a type that is not accepted."""


class InvalidIndex(DataPruneError, IndexError):
    """An index lies outside the dataset."""


class RunError(DataPruneError):
    """A run of the harness cannot go on: a bad flag, an unusable checkpoint, a diverged run."""
