"""The static scorers' math: one score per training sample, higher = more important.

- ``el2n`` (Paul et al. 2021): ``||softmax(f(x)) - onehot(y)||_2`` of a briefly trained model.
- ``grand`` (Paul et al. 2021): ``||grad_theta CE(f(x), y)||_2`` over all parameters, exact
  per-sample gradients (``torch.func``).
- ``forgetting`` (Toneva et al. 2019): correct -> incorrect transitions of each sample over a
  training run, read from the ordinary training forward passes.

Plus class balancing, which keeps each class's share of a top-k subset.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._validation import check_int
from ...distributed import gather_batch, world
from ...errors import InvalidValue
from ..data import ImageData

#: GraNd materialises ``chunk x num_params`` per-sample gradients at once; cap that at 2**28
#: floats (1 GiB in float32) on the CPU and 2**30 (4 GiB) on CUDA by shrinking the chunk.
_GRAND_MAX_ELEMENTS = {"cpu": 2**28, "cuda": 2**30}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------- EL2N
def el2n_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """EL2N score per sample: ``||softmax(logits_i) - onehot(y_i)||_2`` (float32, length B).

    Computed as ``sqrt(sum_c p_c**2 - 2 p_y + 1)`` would lose precision near 0, so the
    difference vector is formed explicitly. Values lie in ``[0, sqrt(2)]``.
    """
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(labels.long(), num_classes=probs.shape[1]).to(probs.dtype)
    return torch.linalg.vector_norm(probs - onehot, dim=1)


@torch.no_grad()
def el2n_of_model(
    model: nn.Module, data: ImageData, batch_size: int, start: int, end: int
) -> Tensor:
    """EL2N of training samples ``[start, end)``: no augmentation, eval mode (BatchNorm running
    stats), float32 (no autocast: one cheap pass, and bf16 logits would blur the small scores)."""
    device = model_device(model)
    data = data.to(device)
    was_training = model.training
    model.eval()
    out = []
    for batch in torch.arange(start, end, device=device).split(batch_size):
        x = data.train_x[batch]
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(el2n_from_logits(model(x), data.train_y[batch]))
    model.train(was_training)
    return torch.cat(out).cpu()


# --------------------------------------------------------------------------------------- GraNd
def grand_scores(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 128) -> Tensor:
    """GraNd score per sample: ``||grad_theta CE(f_theta(x_i), y_i)||_2`` over ALL parameters.

    Exact per-sample gradients with ``torch.func`` (``vmap(grad(functional_call(...)))``),
    ``batch_size`` samples at a time (fewer for big models, so that ``chunk x num_params``
    gradients stay under 2**28 floats on the CPU, 2**30 on CUDA). The model is evaluated in
    **eval mode**: BatchNorm uses its running statistics, so each sample's gradient depends on
    that sample alone (in train mode a sample's loss would depend on the rest of its batch, and
    "the gradient of sample i" would not be defined). Plain cross-entropy (no label
    smoothing), float32, no autocast. Returns cpu float32 of length ``len(x)``; the model's
    mode is restored afterwards.
    """
    from torch.func import functional_call, grad, vmap

    check_int("batch_size", batch_size, low=1)
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    num_params = sum(p.numel() for p in params.values())
    budget = _GRAND_MAX_ELEMENTS["cuda" if x.is_cuda else "cpu"]
    chunk = max(1, min(batch_size, budget // max(1, num_params)))

    def loss_fn(p: dict[str, Tensor], b: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = functional_call(model, (p, b), (xi.unsqueeze(0),))
        return F.cross_entropy(logits.float(), yi.unsqueeze(0))

    def squared_norm(p: dict[str, Tensor], b: dict[str, Tensor], xi: Tensor, yi: Tensor):
        grads = grad(loss_fn)(p, b, xi, yi)
        return sum(g.float().square().sum() for g in grads.values())

    per_sample = vmap(squared_norm, in_dims=(None, None, 0, 0))
    if len(x) == 0:  # e.g. a rank's share when there are more ranks than samples
        return torch.zeros(0)
    was_training = model.training
    model.eval()
    try:
        out = [
            per_sample(params, buffers, xb, yb).sqrt().cpu()
            for xb, yb in zip(x.split(chunk), y.split(chunk), strict=True)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out).float()


# ---------------------------------------------------------------------------------- forgetting
class ForgettingTracker:
    """Forgetting events per sample, read from the training forward passes (Toneva et al. 2019).

    Each time sample i is presented its prediction is correct (``argmax logits == y``) or not.
    A *forgetting event* is a transition correct -> incorrect between two consecutive
    presentations of the same sample; the first presentation never counts (the state before it
    is "incorrect"). Samples never classified correctly are "unforgettable-hard" in the paper's
    convention (infinitely many forgetting events): :meth:`scores` gives them
    ``max(count over learned samples) + 1``, so they rank above every learned sample and every
    score stays finite.

    Updates are vectorised and sync-free. A sample repeated within one batch is processed as if
    its copies came one after another in batch order (a stable sort by index), so the result is
    deterministic. Under torch.distributed every rank gathers all ranks' batches first, so the
    counts are identical on every rank. The state moves to the device of the first batch.
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        check_int("num_samples", num_samples, low=1)
        self.num_samples = num_samples
        self.forgotten = torch.zeros(num_samples, dtype=torch.int32, device=device)
        self.correct = torch.zeros(num_samples, dtype=torch.int32, device=device)  # times right
        self.presented = torch.zeros(num_samples, dtype=torch.int32, device=device)
        self.last = torch.zeros(num_samples, dtype=torch.bool, device=device)  # last state

    @property
    def device(self) -> torch.device:
        return self.last.device

    def _to(self, device: torch.device) -> None:
        self.forgotten = self.forgotten.to(device)
        self.correct = self.correct.to(device)
        self.presented = self.presented.to(device)
        self.last = self.last.to(device)

    def update(self, indices: Tensor, logits: Tensor, labels: Tensor) -> None:
        """Record one training batch: correct = ``logits.argmax(1) == labels`` (no extra pass).

        Has the signature of the trainer's ``on_batch`` hook.
        """
        correct = logits.detach().argmax(1) == labels
        if world()[1] == 1:
            self.update_flags(indices, correct)
            return
        # gather_batch pads shorter ranks with NaN: drop the padding (one sync per batch).
        indices, flags = gather_batch(indices.long(), correct.float())
        real = ~torch.isnan(flags)
        self.update_flags(indices[real], flags[real] > 0.5)

    def update_flags(self, indices: Tensor, correct: Tensor) -> None:
        """Record presentations of samples ``indices`` with correctness ``correct`` (bool)."""
        if indices.device != self.device and indices.device.type != "cpu":
            self._to(indices.device)
        idx = indices.to(self.device).long().flatten()
        cur = correct.to(self.device).bool().flatten()
        if idx.shape != cur.shape:
            raise InvalidValue(
                f"indices and correct must have the same shape; got {tuple(indices.shape)} "
                f"and {tuple(correct.shape)}"
            )
        if idx.numel() == 0:
            return
        if idx.device.type == "cpu" and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise IndexError(
                f"indices must lie in [0, num_samples={self.num_samples}); got values in "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        idx, order = torch.sort(idx, stable=True)  # copies of a sample stay in batch order
        cur = cur[order]
        same_as_before = torch.zeros_like(cur)
        same_as_before[1:] = idx[1:] == idx[:-1]
        before_in_batch = torch.zeros_like(cur)
        before_in_batch[1:] = cur[:-1]
        prev = torch.where(same_as_before, before_in_batch, self.last[idx])
        ones = torch.ones_like(idx, dtype=torch.int32)
        self.forgotten.index_add_(0, idx, (prev & ~cur).to(torch.int32))
        self.correct.index_add_(0, idx, cur.to(torch.int32))
        self.presented.index_add_(0, idx, ones)
        # Every copy writes the state of the sample's last copy: identical values, no race.
        last_copy = torch.searchsorted(idx, idx, right=True) - 1
        self.last.index_put_((idx,), cur[last_copy])

    def scores(self) -> Tensor:
        """Forgetting counts (cpu float32); never-learned samples get ``max learned + 1``."""
        counts = self.forgotten.float()
        learned = self.correct > 0
        top = float(counts[learned].max()) if bool(learned.any()) else 0.0
        return torch.where(learned, counts, top + 1.0).cpu()

    def summary(self) -> dict[str, Any]:
        """Plain numbers: never learned, learned and never forgotten, largest count."""
        learned = self.correct > 0
        return {
            "never_learned": int((~learned).sum()),
            "unforgettable": int((learned & (self.forgotten == 0)).sum()),
            "max_forgetting_events": int(self.forgotten.max()),
            "min_presentations": int(self.presented.min()),
        }


# --------------------------------------------------------------------------- class balancing
def class_balanced_topk(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """Indices (sorted ascending) of the top-scoring ``k`` samples, class proportions kept.

    Class c with ``n_c`` of the ``N`` samples gets quota ``q_c = floor(k n_c / N)`` plus one
    for the ``k - sum_c floor(k n_c / N)`` classes with the largest remainders
    ``k n_c / N - floor(k n_c / N)`` (ties: the lower class id), so ``sum_c q_c = k`` exactly
    and ``q_c <= n_c``. Within a class the ``q_c`` highest scores are kept (ties: lower index).
    """
    scores = torch.as_tensor(scores).detach().flatten().float().cpu()
    labels = torch.as_tensor(labels).detach().flatten().long().cpu()
    n = scores.numel()
    if labels.numel() != n:
        raise InvalidValue(f"scores has {n} entries but labels has {labels.numel()}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise InvalidValue(f"k={k!r} must be an integer in [0, {n}]")
    if n == 0 or k == 0:
        return torch.zeros(0, dtype=torch.int64)
    if int(labels.min()) < 0:
        raise InvalidValue("labels must be non-negative class ids")
    counts = torch.bincount(labels)
    exact = counts.double() * k / n
    quota = exact.floor().long()
    short = k - int(quota.sum())
    if short > 0:
        remainder = exact - quota.double()
        # stable sort on the negated remainder: the lower class id wins a tie
        order = torch.sort(-remainder, stable=True).indices
        quota[order[:short]] += 1
    # Rank inside each class: sort by score descending, then (stable) by class.
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_class = by_score[torch.sort(labels[by_score], stable=True).indices]
    class_of = labels[by_class]
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - starts[class_of]
    keep = by_class[rank_in_class < quota[class_of]]
    return torch.sort(keep).values


def class_balanced_scores(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """A score vector whose top ``k`` are exactly :func:`class_balanced_topk`'s indices.

    ``s'_i = 1[i kept] + rank_i / N`` with ``rank_i`` the position of ``s_i`` in the ascending
    (stable) order of all scores: kept samples lie in ``[1, 2)``, the others in ``[0, 1)``, and
    the order of the original scores is preserved inside each group. Feed it to
    ``static-score`` with the same ``k`` (``round((1 - prune) N)``).
    """
    scores = torch.as_tensor(scores).detach().flatten().float().cpu()
    n = scores.numel()
    keep = class_balanced_topk(scores, labels, k)
    rank = torch.empty(n, dtype=torch.float64)
    rank[torch.sort(scores, stable=True).indices] = torch.arange(n, dtype=torch.float64)
    out = rank / max(n, 1)
    out[keep] += 1.0
    return out.float()
