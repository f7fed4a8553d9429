"""``static-score``: keep the top k of a score vector fixed before training."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidType, InvalidValue
from .base import Option, Policy, Selection, SelectionContext
from .registry import register


@register
class StaticScore(Policy):
    """Keep the top k of a fixed score vector ``scores`` (length N, finite; higher = keep)."""

    name = "static-score"
    options = {"scores": Option(None, "one finite score per sample; higher = keep", cli=False)}
    reselects = False

    def __init__(self, **params: Any):
        super().__init__(**params)
        scores = self.params["scores"]
        if scores is None:
            raise InvalidType("method='static-score' needs scores=<tensor of one score per sample>")
        try:
            scores = torch.as_tensor(scores).detach()
        except (TypeError, ValueError, RuntimeError):
            raise InvalidType(
                f"scores must be a 1-D tensor (or list) of numbers, got {type(scores).__name__}"
            ) from None
        if scores.dim() != 1 or scores.is_complex() or scores.dtype == torch.bool:
            raise InvalidType(
                f"scores must be a 1-D tensor of real numbers, one per sample; got a "
                f"{scores.dtype} tensor of shape {tuple(scores.shape)}"
            )
        scores = scores.float()
        if not bool(torch.isfinite(scores).all()):
            bad = int((~torch.isfinite(scores)).sum())
            raise InvalidValue(f"scores holds {bad} NaN or inf values; every score must be finite")
        self.params["scores"] = scores

    def check_num_samples(self, num_samples: int) -> None:
        length = self.params["scores"].numel()
        if length != num_samples:
            raise InvalidValue(
                f"scores has {length} entries but num_samples={num_samples}; "
                "pass one score per training sample"
            )

    def select(self, ctx: SelectionContext) -> Selection:
        scores = self.params["scores"][ctx.offset : ctx.offset + ctx.num_local].to(ctx.device)
        return ctx.selection(ctx.top_k(scores, ctx.k))
