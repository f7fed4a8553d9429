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


def error_message(error: BaseException) -> str:
    """The message of ``error``, also where torch re-raised it from a DataLoader worker.

    torch re-raises a worker's exception as a new one of the same type whose message is
    ``Caught <type> in DataLoader worker process <n>.`` followed by the worker's traceback, which
    ends with ``<module>.<type>: <the original message>``: that original message is returned.
    """
    text = str(error)
    kind = type(error)
    if not text.startswith(f"Caught {kind.__name__} in DataLoader worker process"):
        return text
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    # the last line that starts like the original exception: no later line (a note) hides it
    for line in reversed(text.splitlines()):
        if line.startswith(f"{name}: "):
            return line[len(name) + 2 :]
    return text.splitlines()[0]
