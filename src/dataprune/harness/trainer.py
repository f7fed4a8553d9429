"""The training harness: one run of one method, read top to bottom.

Data lives on the training device as tensors; batches are index slices of it, augmented on the
device. Every cost is timed per epoch (selection, training, evaluation, and the static scoring
charged up front), and host syncs happen once an epoch, not once a step.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import Pruner
from ..distributed import all_reduce_sum, world
from ..errors import RunError
from .checkpoint import (
    CHECKPOINT,
    CheckpointError,
    identity_difference,
    read_checkpoint,
    write_checkpoint,
)
from .config import RunConfig, RunSpec
from .data import ImageData
from .device import autocast, device_name, is_main_process, layout, setup_device, synchronize
from .models import build_model
from .results import EpochRecord, RunResult

logger = logging.getLogger("dataprune")

#: A harness run stops after an epoch in which more than this share of the losses was NaN/inf.
DIVERGED_SHARE = 0.5
#: The harness warns once when an epoch's mean training loss exceeds this many times the first's.
LOSS_GROWTH = 1000


def _make_schedule(
    optimizer: torch.optim.Optimizer, config: RunConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        # OneCycleLR divides by pct_start * total_steps - 1, which is 0 at 4 steps.
        pct_start = 0.3 if total_steps == 4 else 0.25
        # cycle_momentum=False: --momentum holds (OneCycleLR would otherwise overwrite it).
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=max(total_steps, 1),
            pct_start=pct_start,
            cycle_momentum=False,
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    milestones = [int(total_steps * 0.5), int(total_steps * 0.75)]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, batch_size: int = 1024) -> float:
    """Test accuracy in [0, 1]; sharded over ranks and summed under torch.distributed."""
    rank, world_size = world()
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    indices = torch.arange(rank, data.num_test, world_size, device=data.device)
    for batch in indices.split(batch_size):
        x = data.test_x[batch]
        with autocast(data.device):
            logits = model(layout(x))
        correct += (logits.argmax(1) == data.test_y[batch]).sum()
    model.train()
    return int(all_reduce_sum(correct)) / data.num_test


# ------------------------------------------------------------------------------ training
BatchHook = Callable[[Tensor, Tensor, Tensor], None]  # (indices, logits, labels)


def train(
    spec: RunSpec,
    data: ImageData | None = None,
    *,
    scores: Tensor | None = None,
    scoring_seconds: float = 0.0,
    scores_source: str = "",
    on_batch: BatchHook | None = None,
    evaluate_each_epoch: bool = True,
) -> tuple[RunResult, nn.Module]:
    """Train one run; returns its result and the trained model.

    ``scores`` feeds the core's ``static-score`` method (the static scorers); their cost
    ``scoring_seconds`` is charged to the run's wall clock from the start. ``on_batch`` sees
    every training batch's indices, logits and labels (the forgetting scorer uses it).
    Writes a checkpoint each epoch to ``config.out`` and resumes from it if ``config.resume``
    (:func:`dataprune.harness.runner.run` also locks the folder and guards what it holds).
    Stops with :class:`RunError` after an epoch in which most losses were NaN or inf.
    """
    config = spec.config
    device = setup_device(config.device)
    if data is None:
        data = config.load_data()
    data = data.to(device)

    torch.manual_seed(config.seed)
    model = build_model(config.model, data.in_channels, data.num_classes, data.image_size)
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else None)
    _, world_size = world()
    net: nn.Module = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)

    options: dict[str, Any] = {"scores": scores} if scores is not None else {}
    pruner = Pruner(data.num_train, device=device, **spec.pruner_kwargs(data.num_train), **options)
    batch_sampler = pruner.batch_sampler(config.batch_size, shuffle=True)
    batches = data.batches(batch_sampler)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,  # Nesterov needs a momentum
    )
    pruner.attach(optimizer)  # a method's learning-rate scale, if it has one
    step_budget = spec.step_budget(data.num_train)
    total_steps = pruner.total_steps(config.batch_size) if step_budget is None else step_budget
    schedule = _make_schedule(optimizer, config, total_steps)
    train_epochs = spec.train_epochs(data.num_train)
    result = RunResult(
        config=config,
        scoring_seconds=scoring_seconds,
        scores_source=scores_source,
        device_name=device_name(device),
    )

    out = Path(config.out) if config.out else None
    start_epoch = 0
    if config.resume:
        start_epoch = _load_checkpoint(out, config, model, optimizer, schedule, pruner, result)

    stop_after = config.stop_after
    epochs = range(start_epoch, train_epochs)
    if config.progress and is_main_process() and sys.stderr.isatty():  # else escape codes
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"{config.method} p={config.prune:g}", leave=False)
    last_logits: list[Tensor] = []  # the latest forward's logits, for on_batch

    def sample_losses(rows: tuple[Tensor, Tensor]) -> Tensor:
        x, y = rows
        with autocast(device):
            logits = net(layout(x))
        if on_batch is not None:
            last_logits[:] = [logits.detach()]
        return _losses(logits, y, config)

    def measured_losses(rows: tuple[Tensor, Tensor]) -> Tensor:
        """A method's own measurement: the unwrapped model, so no DDP collective runs."""
        x, y = rows
        with autocast(device):
            return _losses(model(layout(x)), y, config)

    accuracy = result.final_accuracy if result.epochs else float("nan")
    checkpoint_seconds = 0.0  # writing the previous epoch's checkpoint
    nonfinite_before = pruner.summary()["nonfinite_losses_skipped"]
    for epoch in epochs:
        synchronize(device)
        t_select = time.perf_counter()
        batch_sampler.set_epoch(epoch)
        t_train = time.perf_counter()

        # On the data's device: drawing on the host and copying would sync every step.
        augment_gen = torch.Generator(device=device).manual_seed(config.seed * 100_003 + epoch)
        loss_sum = torch.zeros((), device=device)
        samples = steps = 0
        for batch, x, y in batches:
            if step_budget is not None and schedule.last_epoch >= step_budget:
                break  # full-matched's budget ends within its last epoch
            x = data.augment_batch(x, augment_gen)
            samples, steps = samples + batch.numel(), steps + 1
            loss = pruner.loss(batch, (x, y), sample_losses)
            if on_batch is not None:
                on_batch(batch, last_logits[0], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        pruner.end_epoch(
            model,
            functools.partial(_read_rows, data, augment_gen) if data.indexable else None,
            measured_losses,
            batch_size=config.batch_size,
        )
        synchronize(device)
        t_eval = time.perf_counter()
        if evaluate_each_epoch or epoch + 1 in (train_epochs, stop_after):
            accuracy = evaluate(model, data)  # unwrapped: no DDP collectives in evaluation
        t_end = time.perf_counter()

        result.pruner_summary = pruner.summary()
        nonfinite_now = result.pruner_summary["nonfinite_losses_skipped"]
        # Over all ranks (each counts its own losses), so every rank stops together.
        counts = all_reduce_sum(
            torch.tensor([nonfinite_now - nonfinite_before, samples], device=device)
        ).tolist()
        nonfinite_before = nonfinite_now
        previous = result.epochs[-1].wall_seconds if result.epochs else scoring_seconds
        result.epochs.append(
            EpochRecord(
                epoch=epoch,
                # all ranks' samples, short of the budget in full-matched's last epoch (and
                # not counting the copies a rank's shard is padded with)
                samples=min(pruner.epoch_size(epoch), counts[1]),
                train_loss=float(loss_sum) / max(1, steps) if counts[0] < counts[1] else math.nan,
                test_accuracy=accuracy,
                train_seconds=t_eval - t_train,
                selection_seconds=t_train - t_select,
                eval_seconds=t_end - t_eval,
                checkpoint_seconds=checkpoint_seconds,
                wall_seconds=previous + checkpoint_seconds + (t_end - t_select),
                nonfinite_losses=counts[0],
                steps=steps,
            )
        )
        _stop_if_diverged(epoch, *counts)  # before the checkpoint, which keeps the last good epoch
        _warn_if_loss_explodes(result.epochs)
        if out is not None:
            _save_checkpoint(out, config, model, optimizer, schedule, pruner, result)
            # Charged to the next epoch: it comes after this epoch's accuracy was known.
            checkpoint_seconds = time.perf_counter() - t_end
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    return result, model


def _read_rows(data: ImageData, generator: torch.Generator, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The training samples ``rows`` as ``(x, y)``, augmented from ``generator``."""
    return data.read(rows, generator)[1:]


def _losses(logits: Tensor, y: Tensor, config: RunConfig) -> Tensor:
    """Per-sample training losses (in float32, whatever autocast computed the logits in)."""
    return F.cross_entropy(
        logits.float(), y, reduction="none", label_smoothing=config.label_smoothing
    )


def _warn_if_loss_explodes(epochs: list[EpochRecord]) -> None:
    """Warn, once, when the training loss grows past LOSS_GROWTH times the first epoch's."""
    first, last = epochs[0].train_loss, epochs[-1].train_loss
    crossed = last > LOSS_GROWTH * first and not any(
        e.train_loss > LOSS_GROWTH * first for e in epochs[:-1]
    )
    if first > 0 and math.isfinite(first) and crossed:
        logger.warning(
            "epoch %d: the mean training loss is %.3g, over %d times epoch %d's %.3g: the run "
            "may be diverging (a lower --lr?)",
            epochs[-1].epoch,
            last,
            LOSS_GROWTH,
            epochs[0].epoch,
            first,
        )


def _stop_if_diverged(epoch: int, nonfinite: int, total: int) -> None:
    """Stop after an epoch whose losses were mostly NaN or inf (the pruner logs fewer)."""
    if nonfinite > DIVERGED_SHARE * total:
        raise RunError(
            f"epoch {epoch}: {nonfinite:,} of {total:,} training losses were NaN or inf: "
            "training diverged, so the run stops (its checkpoint holds the epoch before). "
            "Lower --lr (or raise --label-smoothing) and start again with --overwrite"
        )


# ---------------------------------------------------------------------------- checkpoints
def _save_checkpoint(out, config, model, optimizer, schedule, pruner, result) -> None:
    """Atomic: write a temporary file, then rename it over the old checkpoint (rank 0 only).

    With sharded statistics every rank takes part: the shards are gathered into one whole
    pruner state (``Pruner.gathered_state_dict``), so the checkpoint has the same format as an
    unsharded run's, and on ``--resume`` each rank keeps its own rows of it.
    """
    pruner_state = pruner.gathered_state_dict() if pruner.shard is not None else None
    if not is_main_process():
        return
    if pruner_state is None:
        pruner_state = pruner.state_dict()
    state = {
        "identity": config.identity(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "pruner": pruner_state,
        "cpu_rng": torch.get_rng_state(),
        "result": result.to_dict(),
    }
    write_checkpoint(out / CHECKPOINT, state)


def _load_checkpoint(out, config, model, optimizer, schedule, pruner, result) -> int:
    path = (out / CHECKPOINT) if out is not None else None
    if path is None:
        raise RunError("--resume needs --out, the folder of the run to continue")
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        raise RunError(f"cannot resume: {exc}") from exc
    saved, current = state["identity"], config.identity()
    if saved != current:
        raise RunError(
            f"{path} is a checkpoint of another configuration: "
            f"{identity_difference(saved, current)}; choose another --out, or pass "
            "--overwrite to start afresh"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        pruner.load_state_dict(state["pruner"])
        torch.set_rng_state(state["cpu_rng"])
        saved_result = RunResult.from_dict(state["result"])
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        first_line = (str(exc).strip().splitlines() or ["no details"])[0]
        raise RunError(
            f"cannot resume: {path} does not fit this run ({type(exc).__name__}: {first_line})"
        ) from exc
    result.epochs = saved_result.epochs
    result.scoring_seconds = saved_result.scoring_seconds
    result.pruner_summary = saved_result.pruner_summary
    return result.epochs[-1].epoch + 1 if result.epochs else 0
