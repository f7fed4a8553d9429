"""Run checkpoints: written atomically each epoch, read back with one-line errors.

A checkpoint holds the run's identity (the configuration it belongs to), the model, optimiser,
LR schedule and pruner states, the CPU RNG state and the result so far. ``train --resume``,
``analyze`` and ``export-coreset`` all read it through :func:`read_checkpoint`, so a missing,
empty, truncated or foreign file gives the same clear message everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..state import check_fields
from .files import UnreadableFile, read_torch, save_torch

CHECKPOINT = "checkpoint.pt"
logger = logging.getLogger("dataprune")
_KEYS = ("identity", "model", "optimizer", "schedule", "pruner", "cpu_rng", "result")


class CheckpointError(UnreadableFile):
    """A checkpoint that cannot be used; the message says why, in one line."""


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (the keys :func:`read_checkpoint` checks) atomically to ``path``."""
    save_torch(state, path)


def read_checkpoint(path: Path, keys: tuple[str, ...] = _KEYS) -> dict[str, Any]:
    """The checkpoint at ``path``, holding at least ``keys``, each of the right kind (a whole
    pruner state under "pruner", dicts under "identity" and "result")."""
    try:
        state = read_torch(path, "checkpoint")
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from exc
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a dataprune training checkpoint (it lacks {', '.join(missing)})"
        )
    for key in ("identity", "result"):
        if key in keys and not isinstance(state[key], dict):
            raise CheckpointError(f"{path} is damaged: its {key!r} is not a dict")
    if "pruner" in keys:
        try:
            check_fields(state["pruner"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} holds a damaged pruner state: {exc}") from exc
    return state


def note_unfinished(pruner: dict[str, Any]) -> None:
    """Log that a run's pruner state is from a run stopped early (what it shows is partial)."""
    epoch, epochs = pruner["progress"]["epoch"], pruner["settings"]["epochs"]
    if epoch is None or epoch + 1 < epochs:
        done = 0 if epoch is None else epoch + 1
        logger.info(
            "the run stopped after %d of its %d epochs: this covers those only", done, epochs
        )


def identity_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """The fields two run identities differ in, as ``field=saved (now current)``."""
    return ", ".join(
        f"{k}={saved.get(k)!r} (now {current.get(k)!r})"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    )
