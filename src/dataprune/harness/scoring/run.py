"""The static baselines' runs: score every sample once (timed), keep the top k for the run.

Each scorer gives one score per training sample and the wall-clock seconds it took, its own
training included. That cost is charged to the pruned run's wall clock from the start (see
:func:`run_static`), so a static baseline is never compared for free against a dynamic method.

Where each score goes: :func:`compute_scores` (or :func:`load_scores` of a file written by
:func:`save_scores`) -> optionally :func:`class_balanced_scores` -> the core's ``static-score``
method inside :func:`~dataprune.harness.trainer.train`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...distributed import all_gather_varlen, world
from ...errors import InvalidValue
from ...schedule import budget
from ..config import RunConfig, RunSpec
from ..data import ImageData
from ..device import is_main_process, setup_device, synchronize
from ..files import check_writable, read_torch, save_torch
from ..methods import scorers
from ..results import RunResult
from ..trainer import train
from .scorers import (
    ForgettingTracker,
    class_balanced_scores,
    el2n_of_model,
    grand_scores,
    model_device,
)

#: file in a run's ``--out`` folder where :func:`run_static` keeps the scores it computed, so a
#: resumed run reuses them instead of paying for them again.
RUN_SCORES = "scores.pt"
_FORMAT = 1


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
        return lambda start, end: el2n_of_model(
            model, data, max(config.batch_size, 512), start, end
        )
    on_device = data.to(model_device(model))
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


def _scoring_run(spec: RunSpec, seed: int) -> RunSpec:
    """The full-data run a scorer trains: the run's model, optimiser and schedule, stopped
    after its first ``E_s`` epochs (scores come from early training, as in Paul et al.)."""
    return dataclasses.replace(
        spec.config.for_method("full", 0.0, seed),
        stop_after=spec.scoring_epochs,
        out=None,
        resume=False,
        progress=False,
    ).resolve()


def compute_scores(name: str, spec: RunSpec, data: ImageData) -> ScoreResult:
    """Score every training sample with scorer ``name`` (one of :func:`scorers`), timed.

    With ``E_s = spec.scoring_epochs`` and ``K = spec.config.score_runs``:

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
    if name not in scorers():
        raise InvalidValue(f"scorer={name!r} is not known; choose one of: {', '.join(scorers())}")
    config = spec.config
    device = setup_device(config.device)
    synchronize(device)
    start = time.perf_counter()
    details: dict[str, Any] = {
        "dataset": data.name,
        "num_samples": data.num_train,
        "model": config.model,
        "score_epochs": spec.scoring_epochs,
        "seed": config.seed,
    }
    if name == "forgetting":
        tracker = ForgettingTracker(data.num_train, device)
        result, _ = train(
            _scoring_run(spec, config.seed * 1000),
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
                _scoring_run(spec, config.seed * 1000 + r), data, evaluate_each_epoch=False
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
        raise InvalidValue(f"{where} must hold a 1-D tensor of scores")
    if num_samples is not None and scores.numel() != num_samples:
        raise InvalidValue(
            f"{where} has {scores.numel()} scores but the dataset has {num_samples} samples"
        )
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise InvalidValue(f"{where} holds {bad} NaN or inf scores; every score must be finite")
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
    state = read_torch(path, "score file")
    if not isinstance(state, dict) or not {"scores", "seconds", "name"} <= set(state):
        raise InvalidValue(f"score file {path} is not a dataprune score file (save_scores)")
    seconds, name, details = state["seconds"], state["name"], state.get("details") or {}
    number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    for key, fits, kind in (
        ("seconds", number and math.isfinite(seconds) and seconds >= 0, "a number of seconds"),
        ("name", isinstance(name, str), "a method's name"),
        ("details", isinstance(details, dict), "a dict"),
    ):
        if not fits:
            raise InvalidValue(
                f"score file {path} is damaged: its {key}={state[key]!r} is not {kind}; "
                "compute the scores again"
            )
    scores = _check_scores(state["scores"], f"score file {path}", num_samples).float()
    return ScoreResult(scores=scores, seconds=float(seconds), name=name, details=dict(details))


# ---------------------------------------------------------------------------------- the run
def run_static(spec: RunSpec, data: ImageData | None = None) -> tuple[RunResult, nn.Module]:
    """Train one static-baseline run (its method a static scorer).

    Scores come from ``config.scores_file`` when that file exists (``scores_source`` = the
    file; the cost charged is the one recorded in it, so the table still shows what the scores
    cost to make), else they are computed (``scores_source="computed"``) and saved to
    ``config.scores_file`` if one is set. With ``config.out`` the computed scores are also
    kept in ``out/scores.pt``, which a ``--resume`` of the same run reloads (still reported as
    computed) instead of paying for them again. ``config.class_balanced`` keeps the class
    proportions (:func:`class_balanced_scores`). Then the core's ``static-score`` keeps the top
    ``k = round((1 - prune) N)`` for the whole run, with the scoring seconds charged up front.
    """
    config = spec.config
    if not spec.method.scorer:
        raise InvalidValue(
            f"method={config.method!r} is not a static scorer; choose one of: "
            f"{', '.join(scorers())}"
        )
    if data is None:
        data = config.load_data()
    n = data.num_train
    run_copy = Path(config.out) / RUN_SCORES if config.out else None
    target = Path(config.scores_file) if config.scores_file else None
    if target is not None and not target.is_file():  # to be written: check before scoring
        if target.exists():
            raise InvalidValue(f"--scores {target} is not a file: give a file name to write")
        check_writable(target.parent, "--scores")
    if config.scores_file and Path(config.scores_file).is_file():
        scored = load_scores(config.scores_file, n)
        source = str(config.scores_file)
        if scored.name != config.method:
            raise InvalidValue(
                f"score file {config.scores_file} holds {scored.name!r} scores, but "
                f"method={config.method!r}"
            )
    elif config.resume and run_copy is not None and run_copy.is_file():
        scored, source = load_scores(run_copy, n), "computed"
    else:
        scored, source = compute_scores(config.method, spec, data), "computed"
        if is_main_process():
            for target in (config.scores_file, run_copy):
                if target:
                    save_scores(target, scored)
    scores = scored.scores
    if config.class_balanced:
        scores = class_balanced_scores(scores, data.train_y, budget(n, config.prune))
    return train(spec, data, scores=scores, scoring_seconds=scored.seconds, scores_source=source)
