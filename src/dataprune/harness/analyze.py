"""``dataprune analyze RUN_DIR``: show what a finished run kept and what it left out.

Three pictures from the run's checkpoint: how many epochs each sample was selected in (a sample
that is neither always nor never kept is a "sometimes" sample), how many samples entered and
left the kept set at each re-selection, and, per class, the training images kept most and least
often: what pruning leaves out (easy near-duplicates, mislabeled or broken images) can be seen.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import RunError
from .checkpoint import CHECKPOINT, note_unfinished, read_checkpoint
from .config import RunConfig
from .data import ImageData
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
    """Write ``selection_frequency.png``, ``selection_churn.png`` and ``kept_examples.png``;
    return their paths."""
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
    config = RunConfig(
        **read_checkpoint(run_dir / CHECKPOINT, keys=("result",))["result"]["config"]
    )
    examples = out / "kept_examples.png"
    draw_kept_examples(
        counts, config.load_data(), epochs, examples, f"{config.method} p={config.prune:g}"
    )
    return [frequency, moves, examples]


def draw_kept_examples(
    counts: torch.Tensor,
    data: ImageData,
    epochs: int,
    path: Path,
    title: str,
    per_class: int = 6,
) -> None:
    """Per class (a row each), the ``per_class`` training images selected in the most pruned
    epochs (left) and in the fewest (right), each captioned with its count of ``epochs``."""
    plt = pyplot()
    labels = data.train_y.cpu()
    classes = range(data.num_classes)
    fig, axes = plt.subplots(
        len(classes), 2 * per_class, figsize=(1.1 * 2 * per_class, 1.25 * len(classes)),
        squeeze=False,
    )  # fmt: skip
    for row, label in enumerate(classes):
        members = (labels == label).nonzero().squeeze(1)
        order = members[torch.argsort(counts[members], descending=True, stable=True)]
        chosen = torch.cat([order[:per_class], order[-per_class:]])
        images = _displayable(data.read(chosen)[1].cpu())
        for column, (index, image) in enumerate(zip(chosen.tolist(), images, strict=True)):
            ax = axes[row][column]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_title(f"{int(counts[index])}/{epochs}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(str(label), rotation=0, labelpad=10)
    fig.suptitle(f"{title}: kept most often (left) and least often (right), by class", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _displayable(images: torch.Tensor) -> list:
    """N x C x H x W images (normalised or not) as H x W (x C) arrays in [0, 1], each
    stretched to its own range: the normalisation cancels out whatever it was."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    pixels = (images - low) / (high - low).clamp_min(1e-12)
    if images.shape[1] == 1:
        return [image[0].numpy() for image in pixels]
    return [image.permute(1, 2, 0).numpy() for image in pixels]
