"""Run checkpoints: written atomically each epoch, read back with one-line errors.

A checkpoint holds the run's identity (the configuration it belongs to), the model, optimiser,
LR schedule and pruner states, the CPU RNG state and the result so far. ``train --resume``,
``analyze`` and ``export-coreset`` all read it through :func:`read_checkpoint`, so a missing,
empty, truncated or foreign file gives the same clear message everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .files import save_torch

CHECKPOINT = "checkpoint.pt"
_KEYS = ("identity", "model", "optimizer", "schedule", "pruner", "cpu_rng", "result")
_PRUNER_KEYS = ("method", "prune", "selected_count", "pruned_epochs", "stats", "churn")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why, in one line."""


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (the keys :func:`read_checkpoint` checks) atomically to ``path``."""
    save_torch(state, path)


def read_checkpoint(path: Path, keys: tuple[str, ...] = _KEYS) -> dict[str, Any]:
    """The checkpoint at ``path``, holding at least ``keys`` (a pruner state if "pruner")."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (an interrupted write?); delete it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or not a torch file: many error types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {first_line}); it is "
            "truncated or not a dataprune checkpoint"
        ) from exc
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if not missing and "pruner" in keys:
        pruner = state["pruner"]
        missing = [
            f"pruner.{k}" for k in _PRUNER_KEYS if not isinstance(pruner, dict) or k not in pruner
        ]
    if missing:
        raise CheckpointError(
            f"{path} is not a dataprune training checkpoint (it lacks {', '.join(missing)})"
        )
    return state


def identity_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """The fields two run identities differ in, as ``field=saved (now current)``."""
    return ", ".join(
        f"{k}={saved.get(k)!r} (now {current.get(k)!r})"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    )
