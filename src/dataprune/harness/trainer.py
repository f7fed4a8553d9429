"""The training harness: one run of one method, read top to bottom.

Data lives on the training device as tensors; batches are index slices of it, augmented on the
device. Every cost is timed per epoch (selection, training, evaluation, and the static scoring
charged up front), and host syncs happen once an epoch, not once a step.
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .. import Pruner, classification_predictions
from .._validation import check_choice, check_float, check_int
from ..distributed import all_reduce_sum, world
from ..errors import DataPruneError, InvalidValue
from ..policies import get_policy
from ..pruner import MAX_EPOCHS
from ..sampler import shard
from ..schedule import PRUNE_SCHEDULES, check_schedule
from .checkpoint import (
    CHECKPOINT,
    CheckpointError,
    identity_difference,
    read_checkpoint,
    write_checkpoint,
)
from .data import DATASETS, ImageData, load_dataset
from .data.disk import load_disk_data
from .methods import FULL_MATCHED, SCORERS, core_method, method_options, run_methods
from .models import MODELS, build_model

logger = logging.getLogger("dataprune")

SCHEDULES = ("onecycle", "cosine", "step")
#: The most DataLoader workers a run may ask for.
MAX_WORKERS = 256
#: Seeds are bounded so that the seeds derived from them (per epoch, per scoring run) fit int64.
MAX_SEED = 2**31 - 1
#: A harness run stops after an epoch in which more than this share of the losses was NaN/inf.
DIVERGED_SHARE = 0.5
#: The harness warns once when an epoch's mean training loss exceeds this many times the first's.
LOSS_GROWTH = 1000
# Fields that may differ between a run and its resumption (shard_stats only changes where the
# statistics live: the checkpoint holds them whole and the selections are the same).
_RESUME_FREE = (
    "resume",
    "overwrite",
    "out",
    "progress",
    "data_dir",
    "device",
    "scores_file",
    "shard_stats",
    "stop_after",
    "verify",
)


class RunError(DataPruneError):
    """A problem the user can fix (bad flag, unusable checkpoint); shown as one line by the CLI."""


def flag(default: Any, help: str, group: str, type: type | None = None, **cli: Any) -> Any:
    """A :class:`RunConfig` field with its command-line flag (``--name-with-dashes``).

    ``type`` is the value's type where the default (None) does not tell it. ``cli`` may hold
    ``choices`` (a callable, read when the parser is built), ``flag`` (another flag name) or
    ``command`` (the one subcommand that has the flag).
    """
    factory = {"default_factory": dict} if default == {} else {"default": default}
    kind = type if type is not None else builtins.type(default)
    return field(**factory, metadata={"help": help, "group": group, "type": kind, **cli})


@dataclass
class RunConfig:
    """Everything that defines one training run. Each field is one command-line flag."""

    dataset: str = flag("digits", "the dataset", "data and model", choices=lambda: DATASETS)
    data_dir: str | None = flag(
        None,
        "where datasets live (default: $DATAPRUNE_DATA_DIR, then ../shared/data, then "
        "~/.cache/dataprune, where missing files are downloaded)",
        "data and model",
        type=str,
    )
    verify: bool = flag(False, "recheck the dataset's files against their sha256", "data and model")
    data_path: str | None = flag(
        None,
        "train from data on disk instead of --dataset: a folder with train/ and test/, each an "
        "image folder (one sub-folder per class) or shards written by dataprune prepare; "
        "training images are read by DataLoader workers, and pruned ones never",
        "data and model",
        type=str,
    )
    num_workers: int = flag(
        2, "DataLoader workers that read and decode --data-path's images", "data and model"
    )
    model: str = flag("cnn", "the model", "data and model", choices=lambda: MODELS)
    train_limit: int | None = flag(
        None, "use the first N train samples", "data and model", type=int
    )
    test_limit: int | None = flag(None, "use the first N test samples", "data and model", type=int)
    method: str = flag("full", "the method", "pruning", choices=run_methods, command="train")
    prune: float = flag(
        0.0,
        "fraction left out, in [0, 1) (the first pruned epoch's with --prune-schedule)",
        "pruning",
        command="train",
    )
    prune_schedule: str = flag(
        "constant",
        "how the prune rate moves over the pruned epochs: from --prune to --prune-end",
        "pruning",
        choices=lambda: PRUNE_SCHEDULES,
    )
    prune_end: float | None = flag(
        None, "the prune rate of the last pruned epoch (linear, cosine)", "pruning", type=float
    )
    every: int = flag(1, "re-select every N epochs", "pruning")
    warmup_epochs: int = flag(0, "full-data epochs first", "pruning")
    anneal_epochs: int | None = flag(
        None, "full-data epochs at the end (default: the method's)", "pruning", type=int
    )
    rescale: bool | None = flag(
        None, "weight losses by 1/P(kept) (default: the method's)", "pruning", type=bool
    )
    alpha: float | None = flag(
        None, "EMA step size of loss statistics (default: the method's)", "pruning", type=float
    )
    options: dict[str, Any] = flag({}, "the method's own options (flags of their own)", "pruning")
    shard_stats: bool = flag(
        False,
        "under torchrun: each rank keeps only its 1/W shard of the per-sample statistics "
        "(same selections, less memory per rank)",
        "pruning",
    )
    score_epochs: int | None = flag(
        None, "E_s: epochs the scorers train (default: min(5, epochs))", "static scorers", type=int
    )
    score_runs: int = flag(2, "K: scoring runs averaged", "static scorers")
    class_balanced: bool = flag(False, "keep per-class proportions", "static scorers")
    scores_file: str | None = flag(
        None,
        "score file: loaded if it exists (its cost still charged), else written",
        "static scorers",
        type=str,
        flag="scores",
    )
    epochs: int = flag(10, "epochs of the run", "optimisation")
    batch_size: int = flag(128, "batch size (per rank)", "optimisation")
    lr: float = flag(0.05, "peak learning rate", "optimisation")
    momentum: float = flag(0.9, "SGD momentum (Nesterov)", "optimisation")
    weight_decay: float = flag(5e-4, "weight decay", "optimisation")
    label_smoothing: float = flag(0.0, "label smoothing", "optimisation")
    schedule: str = flag("onecycle", "LR schedule", "optimisation", choices=lambda: SCHEDULES)
    seed: int = flag(0, f"random seed, in [0, {MAX_SEED}]", "optimisation", command="train")
    device: str = flag("auto", "auto (cuda when available), cpu, cuda or cuda:N", "optimisation")
    compile: bool = flag(False, "torch.compile the model and the statistics update", "optimisation")
    out: str | None = flag(None, "output directory", "output", type=str)
    resume: bool = flag(
        False,
        "continue from --out's checkpoint (start afresh if there is none)",
        "output",
        command="train",
    )
    overwrite: bool = flag(False, "start afresh even if --out holds a run's checkpoint", "output")
    stop_after: int | None = flag(
        None,
        "stop after epoch N of the schedule (checkpointed; continue with --resume)",
        "output",
        type=int,
        command="train",
    )
    progress: bool = flag(
        True,
        "hide progress (bars on a terminal; a line per run of compare otherwise)",
        "output",
        flag="no-progress",
    )

    def validate(self) -> RunConfig:
        """Check every field; errors name the field, the value and what is allowed.

        A field the method does not use (see :func:`unused_fields`) must keep its default,
        so that no flag is ignored without a word.
        """
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        check_choice("method", self.method, run_methods())
        for name, reason in unused_fields(self.method).items():
            value, default = getattr(self, name), FIELD_DEFAULTS[name]
            if value != default:
                raise InvalidValue(
                    f"{name}={value!r} does not apply to method={self.method!r}: {reason}"
                )
        check_float("prune", self.prune, low=0.0, high=1.0, high_open=True)
        check_schedule(self.prune_schedule, self.prune, self.prune_end)
        check_int("epochs", self.epochs, low=1, high=MAX_EPOCHS)
        check_int("batch_size", self.batch_size, low=1, high=2**31 - 1)
        check_int("every", self.every, low=1, high=MAX_EPOCHS)
        check_int("warmup_epochs", self.warmup_epochs, low=0, high=self.epochs)
        check_int("score_runs", self.score_runs, low=1)
        check_int("seed", self.seed, low=0, high=MAX_SEED)
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        self._check_data_source()
        if self.score_epochs is not None:
            check_int("score_epochs", self.score_epochs, low=1, high=self.epochs)
        if self.stop_after is not None:
            check_int("stop_after", self.stop_after, low=1, high=self.epochs)
        if self.resume and self.overwrite:
            raise InvalidValue(
                "resume and overwrite cannot both be set: resume continues the checkpoint in "
                "the output folder, overwrite starts afresh over it"
            )
        for name in ("out", "scores_file", "data_dir", "data_path"):
            if getattr(self, name) == "":
                raise InvalidValue(f"{name}='' is empty: give a path, or leave it out")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_float("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        accepted = method_options(self.method)
        for name, value in self.options.items():
            if name not in accepted:
                takes = ", ".join(sorted(accepted)) or "none"
                raise InvalidValue(
                    f"option {name}={value!r} does not apply to method={self.method!r} "
                    f"(its options: {takes})"
                )
            accepted[name].check(name, value)
        # The core checks the rest (alpha, anneal_epochs against epochs) when the run starts.
        return self

    def _check_data_source(self) -> None:
        """``data_path`` replaces the in-memory dataset and its fields; ``num_workers`` reads it."""
        if self.data_path is None:
            if self.num_workers != FIELD_DEFAULTS["num_workers"]:
                raise InvalidValue(
                    f"num_workers={self.num_workers!r} applies only with data_path (data on "
                    "disk): the in-memory datasets need no DataLoader workers"
                )
            return
        check_int("num_workers", self.num_workers, low=0, high=MAX_WORKERS)
        for name in ("dataset", "data_dir", "verify", "train_limit", "test_limit"):
            if getattr(self, name) != FIELD_DEFAULTS[name]:
                raise InvalidValue(
                    f"{name}={getattr(self, name)!r} does not apply with data_path="
                    f"{self.data_path!r}, which is the whole dataset: leave {name} out"
                )
        if self.method in SCORERS:
            raise InvalidValue(
                f"method={self.method!r} does not apply with data_path: the static scorers "
                "score the training set in memory; use a dynamic method, or a --dataset"
            )
        if get_policy(core_method(self.method)).uses_predictions:
            raise InvalidValue(
                f"method={self.method!r} does not apply with data_path: it forwards the "
                "samples it hid after each epoch, which the harness reads from the training "
                "set in memory; use another method, or a --dataset"
            )

    def for_method(self, method: str, prune: float, seed: int) -> RunConfig:
        """This configuration for one run of a comparison: ``method`` at ``prune`` and ``seed``,
        with the fields and options the method does not use left at their defaults."""
        accepted = method_options(method)
        unused = unused_fields(method)
        return dataclasses.replace(
            self,
            method=method,
            prune=0.0 if "prune" in unused else prune,
            seed=seed,
            options={k: v for k, v in self.options.items() if k in accepted},
            **{name: FIELD_DEFAULTS[name] for name in unused if name != "prune"},
        )

    def step_budget(self, num_train: int) -> int | None:
        """``full-matched``'s optimizer steps (None for every other method): exactly those of a
        pruned run at its prune rate and schedule, warm-up, anneal and ``every`` on
        ``num_train`` samples (the budgets every exact method shares), so that full data gets
        the pruned run's sample budget and an LR schedule sized to it."""
        if self.method != FULL_MATCHED:
            return None
        pruned = Pruner(
            num_train,
            method="random",
            prune=self.prune,
            prune_schedule=self.prune_schedule,
            prune_end=self.prune_end,
            epochs=self.epochs,
            seed=self.seed,
            every=self.every,
            warmup_epochs=self.warmup_epochs,
            anneal_epochs=self.anneal_epochs or 0,
        )
        return pruned.total_steps(self.batch_size)

    def train_epochs(self, num_train: int) -> int:
        """Epochs actually trained: ``full-matched`` stops within the epoch that spends its
        :meth:`step_budget`."""
        steps = self.step_budget(num_train)
        if steps is None:
            return self.epochs
        per_epoch = Pruner(num_train, method="full", epochs=1).total_steps(self.batch_size)
        return math.ceil(steps / per_epoch)

    @property
    def scoring_epochs(self) -> int:
        """E_s, the epochs each scoring run trains."""
        return min(5, self.epochs) if self.score_epochs is None else self.score_epochs

    def pruner_kwargs(self, num_train: int) -> dict[str, Any]:
        """Arguments for :class:`dataprune.Pruner` over ``num_train`` samples (the core method
        and its options)."""
        method = core_method(self.method)
        policy = get_policy(method)
        full_data = not policy.prunes
        return dict(
            method=method,
            prune=0.0 if full_data and not policy.selects_in_batch else self.prune,
            # full data in every epoch anyway (full-matched's pruning fields size its budget)
            prune_schedule="constant" if full_data else self.prune_schedule,
            prune_end=None if full_data else self.prune_end,
            epochs=self.train_epochs(num_train),
            seed=self.seed,
            every=1 if full_data else self.every,
            warmup_epochs=0 if full_data else self.warmup_epochs,
            anneal_epochs=0 if full_data else self.anneal_epochs,
            rescale=self.rescale,
            alpha=self.alpha,
            shard_stats=self.shard_stats,
            compile=self.compile,
            **self.options,
        )

    def load_data(self) -> ImageData:
        """The run's dataset, on the CPU (its files rechecked first with ``verify``); with
        ``data_path``, its training images stay on disk."""
        if self.data_path is not None:
            return load_disk_data(self.data_path, self.num_workers)
        return load_dataset(
            self.dataset,
            self.data_dir,
            train_limit=self.train_limit,
            test_limit=self.test_limit,
            verify=self.verify,
        )

    def identity(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed (``data_path`` as an absolute
        path: the folder, however it was named)."""
        identity = {k: v for k, v in dataclasses.asdict(self).items() if k not in _RESUME_FREE}
        if identity.get("data_path"):
            identity["data_path"] = str(Path(identity["data_path"]).expanduser().resolve())
        return identity


#: Every RunConfig field's default.
FIELD_DEFAULTS = {
    f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
    for f in dataclasses.fields(RunConfig)
}
_PRUNING = ("prune_schedule", "prune_end", "warmup_epochs", "anneal_epochs", "rescale", "alpha")
#: The pruning fields that size full-matched's step budget (with prune, every and epochs).
_BUDGET = ("prune_schedule", "prune_end", "warmup_epochs", "anneal_epochs")
_SCORING = ("score_epochs", "score_runs", "class_balanced", "scores_file")


def unused_fields(method: str) -> dict[str, str]:
    """The :class:`RunConfig` fields ``method`` does not use, each with the reason."""
    unused: dict[str, str] = {}
    policy = get_policy(core_method(method))
    if not policy.prunes:
        full = "it trains on every sample"
        if policy.selects_in_batch:
            full = "it forwards every sample and thins each batch by --prune"
        # full-matched's prune rate and schedule set its step budget, an in-batch method's
        # prune rate its batches
        budget = _BUDGET if method == FULL_MATCHED else ()
        unused |= {name: full for name in _PRUNING if name not in budget}
        if method != FULL_MATCHED and not policy.selects_in_batch:
            unused["prune"] = full
    if not (policy.prunes and policy.reselects) and method != FULL_MATCHED:
        unused["every"] = "it never selects again"
    if method not in SCORERS:
        unused |= {name: "it is not a static scorer" for name in _SCORING}
    elif method == "forgetting":
        unused["score_runs"] = "forgetting counts one scoring run's events"
    return unused


@dataclass
class EpochRecord:
    epoch: int
    samples: int
    train_loss: float
    test_accuracy: float
    train_seconds: float
    selection_seconds: float
    eval_seconds: float
    wall_seconds: float  # cumulative: scoring, selection, training, evaluation, checkpoints
    checkpoint_seconds: float = 0.0  # writing the previous epoch's checkpoint
    nonfinite_losses: int = 0  # NaN or inf training losses, left out of statistics and loss
    steps: int = 0  # optimizer steps on one rank (0 in results written before it was kept)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    config: RunConfig
    epochs: list[EpochRecord] = field(default_factory=list)
    scoring_seconds: float = 0.0
    scores_source: str = ""  # "computed", or the file the scores were loaded from
    pruner_summary: dict[str, Any] = field(default_factory=dict)
    device_name: str = ""
    #: the code, torch and data it came from (:func:`dataprune.harness.provenance.provenance`)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return self.epochs[-1].test_accuracy if self.epochs else float("nan")

    @property
    def best_accuracy(self) -> float:
        return max((e.test_accuracy for e in self.epochs), default=float("nan"))

    @property
    def wall_seconds(self) -> float:
        return self.epochs[-1].wall_seconds if self.epochs else self.scoring_seconds

    @property
    def samples_used(self) -> int:
        return sum(e.samples for e in self.epochs)

    @property
    def steps(self) -> int:
        """Optimizer steps of the run on one rank."""
        return sum(e.steps for e in self.epochs)

    def time_to_accuracy(self, target: float) -> float | None:
        """Wall-clock seconds (every cost counted) at which test accuracy first reached target."""
        for e in self.epochs:
            if e.test_accuracy >= target:
                return e.wall_seconds
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "final_accuracy": self.final_accuracy,
            "best_accuracy": self.best_accuracy,
            "wall_seconds": self.wall_seconds,
            "scoring_seconds": self.scoring_seconds,
            "scores_source": self.scores_source,
            "samples_used": self.samples_used,
            "device_name": self.device_name,
            "pruner_summary": self.pruner_summary,
            "provenance": self.provenance,
            "epochs": [e.to_dict() for e in self.epochs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(
            config=RunConfig(**data["config"]),
            epochs=[EpochRecord(**e) for e in data["epochs"]],
            scoring_seconds=data["scoring_seconds"],
            scores_source=data.get("scores_source", ""),
            pruner_summary=data.get("pruner_summary", {}),
            device_name=data.get("device_name", ""),
            provenance=data.get("provenance", {}),
        )


# --------------------------------------------------------------------------- environment
_started_process_group = False  # whether setup_device started torch.distributed


def setup_device(requested: str) -> torch.device:
    """The run's device; under torchrun, start the process group (nccl on CUDA, else gloo)."""
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise RunError(f"device={requested!r} is not known; choose one of: auto, cpu, cuda, cuda:N")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device={requested!r} was asked for, but CUDA is not available here")
    global _started_process_group
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if requested.startswith("cuda") else "gloo")
        _started_process_group = True
    if requested.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if world_size > 1 else torch.device(requested)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def shutdown_distributed(barrier: bool = True) -> None:
    """End the process group :func:`setup_device` started, if any (at the end of a command).

    With ``barrier`` every rank first waits for the others (a barrier), so that none tears
    down its connections while another still uses them: a rank that leaves early can otherwise
    abort at exit ("terminate called without an active exception") after a finished run. Pass
    False on an error that other ranks may not share (the barrier could wait forever).
    """
    global _started_process_group
    if _started_process_group and dist.is_initialized():
        gc.collect()  # free DDP wrappers (reference cycles) while the interpreter is alive
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
    _started_process_group = False


def is_main_process() -> bool:
    return world()[0] == 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (before reading a clock); no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        with _autocast(data.device):
            logits = model(_layout(x))
        correct += (logits.argmax(1) == data.test_y[batch]).sum()
    model.train()
    return int(all_reduce_sum(correct)) / data.num_test


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _layout(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


# ------------------------------------------------------------------------------ training
BatchHook = Callable[[Tensor, Tensor, Tensor], None]  # (indices, logits, labels)


def train(
    config: RunConfig,
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
    config.validate()
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
    pruner = Pruner(
        data.num_train, device=device, **config.pruner_kwargs(data.num_train), **options
    )
    sampler = pruner.sampler(shuffle=True)
    batches = data.batches(pruner, sampler, config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,  # Nesterov needs a momentum
    )
    step_budget = config.step_budget(data.num_train)
    total_steps = pruner.total_steps(config.batch_size) if step_budget is None else step_budget
    schedule = _make_schedule(optimizer, config, total_steps)
    train_epochs = config.train_epochs(data.num_train)
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
    accuracy = result.final_accuracy if result.epochs else float("nan")
    checkpoint_seconds = 0.0  # writing the previous epoch's checkpoint
    nonfinite_before = pruner.summary()["nonfinite_losses_skipped"]
    for epoch in epochs:
        synchronize(device)
        t_select = time.perf_counter()
        sampler.set_epoch(epoch)
        lr_scale = pruner.lr_scale()
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
            thinned = pruner.policy.selects_in_batch
            if thinned:
                # The whole batch's forward pass (its known cost, and timed as such), then
                # the forward and backward passes of the highest losses only.
                with torch.no_grad(), _autocast(device):
                    all_losses = _losses(net(_layout(x)), y, config)
                pruner.record(batch, all_losses)
                keep = pruner.select_batch(all_losses)
                batch, x, y = batch[keep], x[keep], y[keep]
            with _autocast(device):
                logits = net(_layout(x))
            losses = _losses(logits, y, config)
            if thinned:
                loss = losses.mean()
            else:
                loss = pruner.record(batch, losses, **_predictions(pruner, logits, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _scaled_step(optimizer, lr_scale)
            schedule.step()
            loss_sum += loss.detach()
            if on_batch is not None:
                on_batch(batch, logits.detach(), y)
        if pruner.policy.uses_predictions and pruner.is_pruned_epoch(epoch):
            _refresh_hidden(net, data, pruner, config, augment_gen)
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


def _predictions(pruner: Pruner, logits: Tensor, y: Tensor) -> dict[str, Tensor]:
    """``record``'s ``correct=`` and ``confidence=``, for a method that reads them."""
    if not pruner.policy.uses_predictions:
        return {}
    correct, confidence = classification_predictions(logits, y)
    return {"correct": correct, "confidence": confidence}


def _scaled_step(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """``optimizer.step()`` at ``scale`` times the schedule's learning rates (kakurenbo's
    ``1 / (1 - F_e)``), restored afterwards so that the schedule is untouched."""
    if scale == 1.0:
        optimizer.step()
        return
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] *= scale
    optimizer.step()
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate


@torch.no_grad()
def _refresh_hidden(
    net: nn.Module, data: ImageData, pruner: Pruner, config: RunConfig, generator: torch.Generator
) -> None:
    """Forward the samples hidden this epoch and record their losses and predictions, as
    KAKURENBO does after each epoch, so that a hidden sample whose loss grew trains again.

    In training mode, augmented, as the training losses they are ranked against, but a
    measurement only: no gradients, and the model's buffers are restored afterwards. A
    training-mode pass over the hidden samples alone would otherwise leave BatchNorm's running
    statistics set by the easiest samples, just before evaluation. Each rank takes an equal
    share (``record`` is a collective). Its cost is part of the epoch's time.
    """
    rank, world_size = world()
    hidden = shard(pruner.hidden_indices(), rank, world_size, drop_last=False)
    saved = [(buffer, buffer.clone()) for buffer in net.buffers()]
    with torch.no_grad():
        for batch in hidden.split(config.batch_size):
            x = data.augment_batch(data.train_x[batch], generator)
            y = data.train_y[batch]
            with _autocast(x.device):
                logits = net(_layout(x))
            pruner.record(batch, _losses(logits, y, config), **_predictions(pruner, logits, y))
        for buffer, value in saved:
            buffer.copy_(value)


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
