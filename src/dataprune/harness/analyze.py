"""``dataprune analyze RUN_DIR``: make "sometimes" samples visible in a finished run.

Two plots from the run's checkpoint: how many epochs each sample was selected in (a sample that
is neither always nor never kept is a "sometimes" sample), and how many samples entered and left
the kept set at each re-selection.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import RunError
from .checkpoint import CHECKPOINT, note_unfinished, read_checkpoint
from .report import pyplot


def load_pruner_state(run_dir: Path) -> dict:
    """The pruner state in a run folder's checkpoint (one-line errors if it is unusable)."""
    if not (run_dir / CHECKPOINT).exists():  # one that is there but unreadable: read says why
        raise RunError(f"{run_dir} holds no {CHECKPOINT}: pass the --out directory of a train run")
    pruner = read_checkpoint(run_dir / CHECKPOINT, keys=("pruner",))["pruner"]
    note_unfinished(pruner)
    return pruner


def selection_summary(state: dict) -> dict[str, float]:
    """Counts of always-, never- and sometimes-selected samples over the pruned epochs."""
    counts = state["selected_count"].to(torch.int64)
    epochs = state["counters"]["pruned_epochs"]
    if epochs < 1:
        raise RunError("the run has no pruned epoch yet (full data so far): nothing to analyze")
    return {
        "samples": counts.numel(),
        "epochs": epochs,
        "always": int((counts == epochs).sum()),
        "never": int((counts == 0).sum()),
        "sometimes": int(((counts > 0) & (counts < epochs)).sum()),
    }


def analyze_run(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Write ``selection_frequency.png`` and ``selection_churn.png``; return their paths."""
    state = load_pruner_state(run_dir)
    out = out or run_dir
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    summary = selection_summary(state)
    epochs = summary["epochs"]
    counts = state["selected_count"].to(torch.int64)

    fig, ax = plt.subplots(figsize=(7, 4))
    hist = torch.bincount(counts, minlength=epochs + 1)
    ax.bar(range(epochs + 1), hist.tolist(), color="tab:blue")
    ax.set_xlabel(f"pruned epochs in which a sample was selected (of {epochs})")
    ax.set_ylabel("samples")
    ax.set_title(
        f"{state['settings']['method']} prune={state['settings']['prune']:g}: "
        f"{summary['sometimes']:,} sometimes, "
        f"{summary['always']:,} always, {summary['never']:,} never",
        fontsize=9,
    )
    fig.tight_layout()
    frequency = out / "selection_frequency.png"
    fig.savefig(frequency, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    churn = state["progress"]["churn"]
    ax.plot([c["epoch"] for c in churn], [c["entered"] for c in churn], marker="o", label="entered")
    ax.plot([c["epoch"] for c in churn], [c["left"] for c in churn], marker="x", label="left")
    ax.set_xlabel("epoch of re-selection")
    ax.set_ylabel("samples")
    ax.set_title("samples moving in and out of the kept set", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    moves = out / "selection_churn.png"
    fig.savefig(moves, dpi=120)
    plt.close(fig)
    return [frequency, moves]
