"""What a result was produced from beyond its configuration: the code, torch and the data.

A finished run's ``result.json`` records it, and a rerun reuses the result only while it is
the same, so that results of other code or other data never mix in one report.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import torch

from .data import ImageData

UNKNOWN = "unknown"


@functools.cache
def git_commit() -> str:
    """The commit of the checkout the package runs from, or ``"unknown"`` outside one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return done.stdout.strip() or UNKNOWN


def provenance(data: ImageData) -> dict[str, Any]:
    """The run's provenance: git commit, torch version, the dataset's size and the sha256 of
    each of its files (one flat field per file, so that a difference names the file)."""
    fields: dict[str, Any] = {
        "commit": git_commit(),
        "torch": torch.__version__,
        "train_samples": data.num_train,
        "test_samples": data.num_test,
    }
    fields |= {f"sha256:{file}": digest for file, digest in data.checksums().items()}
    return fields
