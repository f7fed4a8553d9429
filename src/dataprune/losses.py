"""Per-sample losses from token-level outputs, so that language-model training prunes sequences.

A causal or masked LM computes one loss per token. ``pruner.record`` needs one per sample::

    losses, valid = dataprune.sequence_losses(logits, labels, causal=True)
    loss = pruner.record(batch["index"], losses, valid)

A sequence whose tokens are all ignored (padding, or labels of ``-100``) has no loss: it gets
0 and ``valid=False``, so it updates no statistics and adds nothing to the mean, and no NaN
appears anywhere.

"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InvalidValue

REDUCTIONS = ("mean", "sum")


def counted_tokens(
    labels: Tensor, ignore_index: int = -100, attention_mask: Tensor | None = None, causal=False
) -> Tensor:
    """The bool mask of tokens that have a loss (see :func:`token_losses` for the arguments)."""
    if causal:
        labels = labels[:, 1:]
        if attention_mask is not None:
            attention_mask = attention_mask[:, 1:]
    counts = labels != ignore_index
    if attention_mask is not None:
        counts = counts & attention_mask.bool()
    return counts


def token_losses(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    attention_mask: Tensor | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-token cross-entropy and the mask of tokens that count, both ``(batch, length)``.

    Args:
        logits: ``(batch, length, vocab)``, any float dtype (computed in float32).
        labels: ``(batch, length)`` token ids; ``ignore_index`` marks tokens without a target.
        ignore_index: the label that marks ignored tokens (Hugging Face and PyTorch use -100).
        attention_mask: optional ``(batch, length)``, nonzero where a token is real; padding
            is ignored even where its label is not ``ignore_index``.
        causal: position t predicts label t + 1, as in a causal LM whose labels are its
            inputs (Hugging Face's convention); the outputs then have length ``length - 1``.

    Ignored tokens get loss 0.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise InvalidValue(
            f"logits must be (batch, length, vocab) and labels (batch, length); got logits "
            f"{tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    if attention_mask is not None and attention_mask.shape != labels.shape:
        raise InvalidValue(
            f"attention_mask must have the shape of labels, {tuple(labels.shape)}; got "
            f"{tuple(attention_mask.shape)}"
        )
    counts = counted_tokens(labels, ignore_index, attention_mask, causal)
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    targets = torch.where(counts, labels, 0)  # any in-range id; its loss is zeroed below
    losses = F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), reduction="none"
    ).view_as(targets)
    return torch.where(counts, losses, 0.0), counts


def sequence_losses(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    attention_mask: Tensor | None = None,
    causal: bool = False,
    reduction: str = "mean",
) -> tuple[Tensor, Tensor]:
    """One loss per sequence and whether it has one: ``(losses, valid)``, both ``(batch,)``.

    ``reduction="mean"`` averages over a sequence's counted tokens (as Hugging Face models do
    over a batch); ``"sum"`` adds them up. The other arguments are :func:`token_losses`'s. A
    sequence with no counted token gets loss 0 and ``valid=False``: pass ``valid`` on to
    ``pruner.record(indices, losses, valid)``.
    """
    if reduction not in REDUCTIONS:
        raise InvalidValue(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    losses, counts = token_losses(
        logits, labels, ignore_index=ignore_index, attention_mask=attention_mask, causal=causal
    )
    total = losses.sum(dim=1)
    tokens = counts.sum(dim=1)
    if reduction == "mean":
        total = total / tokens.clamp_min(1)
    return total, tokens > 0
