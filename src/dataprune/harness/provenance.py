"""What a result was produced from beyond its configuration: the code, torch and the data.

A finished run's ``result.json`` records it, and a rerun reuses the result only while it is
the same (:data:`INFORMATIVE` fields apart), so that results of other code or other data never
mix in one report.

The code is identified by what it does, not by its text: the behaviour digests of the run's
method (:mod:`dataprune.harness.behaviour`). A refactor that keeps them keeps every result
valid; a change to one method makes only that method's results stale. The commit and a hash of
the package's committed source (:func:`source_tree`) are kept for information.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import torch

from .behaviour import digests
from .data import ImageData

UNKNOWN = "unknown"
#: recorded but not compared: behaviour identifies the code, not its commit or its text
INFORMATIVE = ("commit", "source")
PACKAGE = Path(__file__).resolve().parents[1]
EXCLUDED = "frameworks/"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@functools.cache
def git_commit() -> str:
    """The commit of the checkout the package runs from, or ``"unknown"`` outside one."""
    return _git("rev-parse", "HEAD") or UNKNOWN


@functools.cache
def source_tree() -> str:
    """A sha256 of the package's committed source files (``src/dataprune``, less the framework
    integrations, which no harness run imports), with ``+dirty`` when the working tree differs
    from them; ``"unknown"`` outside a checkout."""
    listing = _git("ls-tree", "-r", "HEAD", "--", ".")
    if not listing:
        return UNKNOWN
    files = [line for line in listing.splitlines() if not _outside(line.split("\t", 1)[1])]
    digest = hashlib.sha256("\n".join(files).encode()).hexdigest()
    changed = (_git("diff", "HEAD", "--name-only", "--relative", "--", ".") or "").split()
    changed += (_git("ls-files", "--others", "--exclude-standard", "--", ".") or "").split()
    return digest + ("+dirty" if any(not _outside(path) for path in changed) else "")


def _outside(path: str) -> bool:
    """Whether a source path (relative to the package) is outside what harness runs use."""
    return path.startswith(EXCLUDED)


def identifying(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a provenance that identify a result: two results of the same
    configuration are interchangeable when these agree."""
    return {k: v for k, v in fields.items() if k not in INFORMATIVE}


def code_identity(method: str) -> dict[str, Any]:
    """The provenance fields that identify the code of a run of ``method``: its behaviour
    digests and torch's version."""
    return {"behaviour": digests(method), "torch": torch.__version__}


def provenance(data: ImageData) -> dict[str, Any]:
    """The data's part of a run's provenance, with the commit and source tree: the dataset's
    size and the sha256 of each of its files (one flat field per file, so that a difference
    names the file). A run adds its method's :func:`code_identity`."""
    fields: dict[str, Any] = {
        "commit": git_commit(),
        "source": source_tree(),
        "train_samples": data.num_train,
        "test_samples": data.num_test,
    }
    fields |= {f"sha256:{file}": digest for file, digest in data.checksums().items()}
    return fields
