"""Static pruning baselines: score every training sample once, keep the top k for the whole run.

Each scorer gives one score per training sample, higher = more important (the hardest samples
are kept), and the wall-clock seconds it took, its own training included. That cost is charged
to the pruned run's wall clock from the start (see :func:`run_static`), so a static baseline is
never compared for free against a dynamic method.

- ``el2n`` (Paul et al. 2021): ``||softmax(f(x)) - onehot(y)||_2`` after ``E_s`` epochs of
  full-data training, averaged over ``K`` independent runs.
- ``grand`` (Paul et al. 2021): ``||grad_theta CE(f(x), y)||_2`` over all parameters, exact
  per-sample gradients (``torch.func``), after ``E_s`` epochs, averaged over ``K`` runs.
- ``forgetting`` (Toneva et al. 2019): the number of correct -> incorrect transitions of each
  sample over one ``E_s``-epoch full-data run, read from the ordinary training forward passes;
  samples never learned count as the most forgettable.

Where each score goes: :func:`compute_scores` (or :func:`load_scores` of a file written by
:func:`save_scores`) -> optionally :func:`class_balanced_scores` -> the core's ``static-score``
method inside :func:`~dataprune.harness.trainer.train`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ..distributed import all_gather_varlen, gather_batch, world
from ..pruner import budget
from .datasets import ImageData
from .files import save_torch, write_text
from .trainer import (
    CHECKPOINT,
    SCORER_METHODS,
    RunConfig,
    RunResult,
    is_main_process,
    setup_device,
    synchronize,
    train,
)

__all__ = [
    "RUN_SCORES",
    "SCORERS",
    "ForgettingTracker",
    "ScoreResult",
    "class_balanced_scores",
    "class_balanced_topk",
    "compute_scores",
    "el2n_from_logits",
    "export_coreset",
    "grand_scores",
    "load_scores",
    "run_static",
    "save_scores",
]

SCORERS = SCORER_METHODS
#: file in a run's ``--out`` folder where :func:`run_static` keeps the scores it computed, so a
#: resumed run reuses them instead of paying for them again.
RUN_SCORES = "scores.pt"
_FORMAT = 1
#: GraNd materialises ``chunk x num_params`` per-sample gradients at once; cap that at 2**28
#: floats (1 GiB in float32) on the CPU and 2**30 (4 GiB) on CUDA by shrinking the chunk.
_GRAND_MAX_ELEMENTS = {"cpu": 2**28, "cuda": 2**30}


@dataclass
class ScoreResult:
    """One score per training sample (cpu float32; higher = keep) and what they cost.

    ``seconds`` is the wall clock of the whole scoring, its training runs included; ``details``
    holds plain values only (numbers, strings, lists), so a saved file loads with
    ``weights_only=True``.
    """

    scores: Tensor
    seconds: float
    name: str
    details: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- helpers
def _model_device(model: nn.Module) -> torch.device:
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
def _el2n_of_model(
    model: nn.Module, data: ImageData, batch_size: int, start: int, end: int
) -> Tensor:
    """EL2N of training samples ``[start, end)``: no augmentation, eval mode (BatchNorm running
    stats), float32 (no autocast: one cheap pass, and bf16 logits would blur the small scores)."""
    device = _model_device(model)
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
            raise ValueError(
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


# ------------------------------------------------------------------------------- computation
def _scorer(
    name: str, model: nn.Module, data: ImageData, config: RunConfig
) -> Callable[[int, int], Tensor]:
    """Scores of samples ``[start, end)`` under a trained model (``el2n`` or ``grand``).

    Under torch.distributed the model's buffers (BatchNorm running statistics) are first taken
    from rank 0: after DDP training each rank's last local batches moved its own copy, and
    every rank's share must be scored by the same model.
    """
    if world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    if name == "el2n":
        return lambda start, end: _el2n_of_model(
            model, data, max(config.batch_size, 512), start, end
        )
    on_device = data.to(_model_device(model))
    return lambda start, end: grand_scores(
        model, on_device.train_x[start:end], on_device.train_y[start:end], config.batch_size
    )


def scored_in_shards(num_samples: int, score_range: Callable[[int, int], Tensor]) -> Tensor:
    """All ``num_samples`` scores (CPU), each rank scoring only its contiguous share.

    Under torch.distributed with W ranks, rank r calls ``score_range(r N // W, (r + 1) N // W)``
    and the shares are all-gathered in rank order, so scoring takes 1/W of the time on each rank
    and every rank gets the same vector. In one process: ``score_range(0, N)``.
    """
    rank, world_size = world()
    start, end = rank * num_samples // world_size, (rank + 1) * num_samples // world_size
    return all_gather_varlen(score_range(start, end)).cpu()


def _scoring_config(config: RunConfig, seed: int) -> RunConfig:
    """The full-data run a scorer trains: the run's model, optimiser and schedule, stopped
    after its first ``E_s`` epochs (scores come from early training, as in Paul et al.)."""
    return dataclasses.replace(
        config,
        method="full",
        prune=0.0,
        stop_after=config.score_epochs,
        seed=seed,
        out=None,
        resume=False,
        progress=False,
        scores_file=None,
        class_balanced=False,
    )


def compute_scores(name: str, config: RunConfig, data: ImageData) -> ScoreResult:
    """Score every training sample with scorer ``name`` (one of :data:`SCORERS`), timed.

    With ``E_s = config.score_epochs`` and ``K = config.score_runs``:

    - ``el2n``: for ``r < K`` train the run's model on all data for ``E_s`` epochs (seed
      ``config.seed * 1000 + r``), then score every sample, un-augmented and in eval mode:
      ``s_i = mean_r ||softmax(f_r(x_i)) - onehot(y_i)||_2``.
    - ``grand``: the same K runs; ``s_i = mean_r ||grad_theta CE(f_r(x_i), y_i)||_2`` (exact
      per-sample gradients, eval mode: see :func:`grand_scores`). Paul et al. also score at
      initialisation; here ``E_s >= 1``, i.e. early in training.
    - ``forgetting``: one run of ``E_s`` epochs (seed ``config.seed * 1000``) whose training
      batches feed a :class:`ForgettingTracker`; ``K`` is not used (the counts come from the
      trajectory of one run, as in Toneva et al.).

    Each scoring run trains with the run's own LR schedule squeezed into ``E_s`` epochs and
    ends with one test evaluation (the trainer always evaluates the last epoch); both are in
    ``seconds``, measured with ``time.perf_counter`` around everything (CUDA synchronised).
    """
    if name not in SCORERS:
        raise ValueError(f"scorer={name!r} is not known; choose one of: {', '.join(SCORERS)}")
    check_int("score_epochs", config.score_epochs, low=1)
    check_int("score_runs", config.score_runs, low=1)
    device = setup_device(config.device)
    synchronize(device)
    start = time.perf_counter()
    details: dict[str, Any] = {
        "dataset": data.name,
        "num_samples": data.num_train,
        "model": config.model,
        "score_epochs": config.score_epochs,
        "seed": config.seed,
    }
    if name == "forgetting":
        tracker = ForgettingTracker(data.num_train, device)
        result, _ = train(
            _scoring_config(config, config.seed * 1000),
            data,
            on_batch=tracker.update,
            evaluate_each_epoch=False,
        )
        scores = tracker.scores()
        details.update(tracker.summary(), score_runs=1, accuracy=[result.final_accuracy])
    else:
        total = torch.zeros(data.num_train, dtype=torch.float64)
        accuracies = []
        for r in range(config.score_runs):
            result, model = train(
                _scoring_config(config, config.seed * 1000 + r), data, evaluate_each_epoch=False
            )
            accuracies.append(result.final_accuracy)
            total += scored_in_shards(data.num_train, _scorer(name, model, data, config)).double()
        scores = (total / config.score_runs).float()
        details.update(score_runs=config.score_runs, accuracy=accuracies)
    synchronize(device)
    seconds = time.perf_counter() - start
    return ScoreResult(scores=scores.cpu().float(), seconds=seconds, name=name, details=details)


# ------------------------------------------------------------------------------------- files
def _check_scores(scores: Tensor, where: str, num_samples: int | None) -> Tensor:
    if not isinstance(scores, Tensor) or scores.dim() != 1:
        raise ValueError(f"{where} must hold a 1-D tensor of scores")
    if num_samples is not None and scores.numel() != num_samples:
        raise ValueError(
            f"{where} has {scores.numel()} scores but the dataset has {num_samples} samples"
        )
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ValueError(f"{where} holds {bad} NaN or inf scores; every score must be finite")
    return scores


def save_scores(path: str | os.PathLike[str], result: ScoreResult) -> None:
    """Write ``result`` to ``path`` (.pt: a dict of scores, seconds, name, details); atomic:
    a temporary file in the same folder is renamed over ``path``."""
    scores = _check_scores(result.scores.detach().cpu().float(), "scores", None)
    state = {
        "format": _FORMAT,
        "scores": scores.clone(),
        "seconds": float(result.seconds),
        "name": str(result.name),
        "details": dict(result.details),
    }
    save_torch(state, Path(path))


def load_scores(path: str | os.PathLike[str], num_samples: int | None) -> ScoreResult:
    """Read a file written by :func:`save_scores` (``weights_only=True``).

    Raises ``ValueError`` when the file is unreadable, holds NaN/inf scores, or (unless
    ``num_samples`` is None) does not hold exactly ``num_samples`` scores.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise ValueError(f"cannot read score file {path}: {exc}") from exc
    if not isinstance(state, dict) or not {"scores", "seconds", "name"} <= set(state):
        raise ValueError(f"score file {path} is not a dataprune score file (save_scores)")
    scores = _check_scores(state["scores"], f"score file {path}", num_samples).float()
    return ScoreResult(
        scores=scores,
        seconds=float(state["seconds"]),
        name=str(state["name"]),
        details=dict(state.get("details") or {}),
    )


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
        raise ValueError(f"scores has {n} entries but labels has {labels.numel()}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"k={k!r} must be an integer in [0, {n}]")
    if n == 0 or k == 0:
        return torch.zeros(0, dtype=torch.int64)
    if int(labels.min()) < 0:
        raise ValueError("labels must be non-negative class ids")
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


# ---------------------------------------------------------------------------------- the run
def run_static(config: RunConfig, data: ImageData | None = None) -> tuple[RunResult, nn.Module]:
    """Train one static-baseline run (``config.method`` in :data:`SCORERS`).

    Scores come from ``config.scores_file`` when that file exists (``scores_source`` = the
    file; the cost charged is the one recorded in it, so the table still shows what the scores
    cost to make), else they are computed (``scores_source="computed"``) and saved to
    ``config.scores_file`` if one is set. With ``config.out`` the computed scores are also
    kept in ``out/scores.pt``, which a ``--resume`` of the same run reloads (still reported as
    computed) instead of paying for them again. ``config.class_balanced`` keeps the class
    proportions (:func:`class_balanced_scores`). Then the core's ``static-score`` keeps the top
    ``k = round((1 - prune) N)`` for the whole run, with the scoring seconds charged up front.
    """
    config.validate()
    if config.method not in SCORERS:
        raise ValueError(
            f"method={config.method!r} is not a static scorer; choose one of: {', '.join(SCORERS)}"
        )
    if data is None:
        data = config.load_data()
    n = data.num_train
    run_copy = Path(config.out) / RUN_SCORES if config.out else None
    if config.scores_file and Path(config.scores_file).is_file():
        scored = load_scores(config.scores_file, n)
        source = str(config.scores_file)
        if scored.name != config.method:
            raise ValueError(
                f"score file {config.scores_file} holds {scored.name!r} scores, but "
                f"method={config.method!r}"
            )
    elif config.resume and run_copy is not None and run_copy.is_file():
        scored, source = load_scores(run_copy, n), "computed"
    else:
        scored, source = compute_scores(config.method, config, data), "computed"
        if is_main_process():
            for target in (config.scores_file, run_copy):
                if target:
                    save_scores(target, scored)
    scores = scored.scores
    if config.class_balanced:
        scores = class_balanced_scores(scores, data.train_y, budget(n, config.prune))
    return train(config, data, scores=scores, scoring_seconds=scored.seconds, scores_source=source)


# ----------------------------------------------------------------------------------- export
def _coreset_paths(out_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    base = Path(out_path)
    if base.suffix in (".pt", ".csv"):
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
    ``<out>.csv`` (header ``index,score``, best first); ``out_path`` may end in .pt or .csv.
    Returns a summary dict (kind, source, num_samples, k, prune, paths, score range).
    """
    if isinstance(prune, bool) or not isinstance(prune, (int, float)) or not 0.0 <= prune < 1.0:
        raise ValueError(f"prune={prune!r} must be a number in [0, 1)")
    src = Path(source)
    tiebreak: Tensor | None = None
    if src.is_dir():
        checkpoint = src / CHECKPOINT
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"{src} is a folder without {CHECKPOINT}: pass a finished run's --out folder "
                "or a score file"
            )
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            pruner = state["pruner"]
            selected = pruner["selected_count"].double()
            stats = pruner["stats"].double()
        except Exception as exc:
            raise ValueError(f"cannot read the pruner state of {checkpoint}: {exc}") from exc
        epochs = pruner["pruned_epochs"]
        if epochs < 1:
            raise ValueError(f"{checkpoint} has no pruned epoch yet; nothing to export")
        scores = (selected / epochs).float()
        tiebreak = stats[:, 0]
        kind, name = "run", str(pruner.get("method", ""))
    elif src.is_file():
        loaded = load_scores(src, None)
        scores, kind, name = loaded.scores, "scores", loaded.name
    else:
        raise FileNotFoundError(f"{src} is neither a score file nor a run folder")

    n = scores.numel()
    if n == 0:
        raise ValueError(f"{src} holds no samples")
    k = budget(n, prune)
    chosen = _ranking(scores, tiebreak)[:k]
    chosen_scores = scores[chosen].float()
    pt_path, csv_path = _coreset_paths(out_path)
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
