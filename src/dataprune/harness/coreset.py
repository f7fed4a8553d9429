"""``dataprune export-coreset``: a static subset, from a score file or a finished run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidValue
from ..schedule import budget
from .checkpoint import CHECKPOINT, note_unfinished, read_checkpoint
from .files import save_torch, write_text
from .scoring.run import load_scores


def _coreset_paths(out_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``<out>.pt`` and ``<out>.csv``; inside ``out_path`` if it is a folder (or ends in /)."""
    base = Path(out_path)
    if base.is_dir() or str(out_path).endswith(os.sep):
        base = base / "coreset"
    elif base.suffix in (".pt", ".csv"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".pt"), base.with_name(base.name + ".csv")


def _ranking(primary: Tensor, secondary: Tensor | None = None) -> Tensor:
    """All indices, best first: ``primary`` descending, then ``secondary`` descending, then
    the lower index."""
    order = torch.arange(primary.numel())
    if secondary is not None:
        order = torch.sort(secondary.double(), descending=True, stable=True).indices
    return order[torch.sort(primary.double()[order], descending=True, stable=True).indices]


def export_coreset(source: str, prune: float, out_path: str) -> dict[str, Any]:
    """Write the ``k = max(1, round((1 - prune) N))`` most important samples as a coreset.

    ``source`` is either a score file (:func:`save_scores`): the top k by score (ties: lower
    index), or a finished run's folder holding ``checkpoint.pt``: score = selection frequency
    ``selected_count_i / pruned_epochs`` of the run's pruner, ties broken by the EMA mean loss
    (higher first), then the lower index. Writes ``<out>.pt`` (``indices`` int64, ``scores``
    float32, both best first, plus ``source``, ``kind``, ``prune``, ``num_samples``) and
    ``<out>.csv`` (header ``index,score``, best first); ``out_path`` may end in .pt or .csv,
    or be a folder to write ``coreset.pt`` and ``coreset.csv`` into.
    Returns a summary dict (kind, source, num_samples, k, prune, paths, score range).
    """
    if isinstance(prune, bool) or not isinstance(prune, (int, float)) or not 0.0 <= prune < 1.0:
        raise InvalidValue(f"prune={prune!r} must be a number in [0, 1)")
    src = Path(source)
    tiebreak: Tensor | None = None
    if src.is_dir():
        checkpoint = src / CHECKPOINT
        if not checkpoint.exists():
            raise FileNotFoundError(
                f"{src} is a folder without {CHECKPOINT}: pass a finished run's --out folder "
                "or a score file"
            )
        pruner = read_checkpoint(checkpoint, keys=("pruner",))["pruner"]
        note_unfinished(pruner)
        epochs = pruner["counters"]["pruned_epochs"]
        if epochs < 1:
            raise InvalidValue(f"{checkpoint} has no pruned epoch yet; nothing to export")
        scores = (pruner["selected_count"].double() / epochs).float()
        tiebreak = pruner["stats"].double()[:, 0]
        kind, name = "run", str(pruner["settings"]["method"])
    elif src.is_file():
        loaded = load_scores(src, None)
        scores, kind, name = loaded.scores, "scores", loaded.name
    else:
        raise FileNotFoundError(f"{src} is neither a score file nor a run folder")

    n = scores.numel()
    if n == 0:
        raise InvalidValue(f"{src} holds no samples")
    k = budget(n, prune)
    chosen = _ranking(scores, tiebreak)[:k]
    chosen_scores = scores[chosen].float()
    pt_path, csv_path = _coreset_paths(out_path)
    for target in (pt_path, csv_path):
        if target.name == CHECKPOINT or target.resolve() == src.resolve():
            raise InvalidValue(f"--out {out_path} would overwrite {target}, the export's own input")
    try:
        pt_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidValue(f"--out {out_path}: cannot write there ({exc.strerror or exc})") from exc
    save_torch(
        {
            "indices": chosen.clone(),
            "scores": chosen_scores.clone(),
            "source": str(src),
            "kind": kind,
            "method": name,
            "prune": float(prune),
            "num_samples": n,
        },
        pt_path,
    )
    lines = ["index,score"] + [
        f"{i},{s!r}" for i, s in zip(chosen.tolist(), chosen_scores.tolist(), strict=True)
    ]
    write_text("\n".join(lines) + "\n", csv_path)
    return {
        "kind": kind,
        "method": name,
        "source": str(src),
        "num_samples": n,
        "k": k,
        "prune": float(prune),
        "pt": str(pt_path),
        "csv": str(csv_path),
        "min_score": float(chosen_scores.min()),
        "max_score": float(chosen_scores.max()),
    }
