"""A run's configuration: every field is one command-line flag, checked once, and resolved
into the :class:`RunSpec` the trainer executes."""

from __future__ import annotations

import builtins
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import Pruner
from .._validation import check_choice, check_float, check_int
from ..errors import InvalidValue
from ..policies import get_policy
from ..pruner import MAX_EPOCHS
from ..schedule import PRUNE_SCHEDULES, check_schedule
from .data import DATASETS, ImageData, load_dataset
from .data.disk import load_disk_data
from .methods import HarnessMethod, get_method, run_methods
from .models import MODELS

SCHEDULES = ("onecycle", "cosine", "step")
#: The most DataLoader workers a run may ask for.
MAX_WORKERS = 256
#: Seeds are bounded so that the seeds derived from them (per epoch, per scoring run) fit int64.
MAX_SEED = 2**31 - 1
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

    def resolve(self) -> RunSpec:
        """Check every field once and resolve the method: the :class:`RunSpec` to run.

        Errors name the field, the value and what is allowed. A field the method does not use
        (:meth:`HarnessMethod.unused_fields`) must keep its default, so that no flag is ignored
        without a word.
        """
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        method = get_method(self.method)
        for name, reason in method.unused_fields().items():
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
        self._check_data_source(method)
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
        accepted = method.options()
        for name, value in self.options.items():
            if name not in accepted:
                takes = ", ".join(sorted(accepted)) or "none"
                raise InvalidValue(
                    f"option {name}={value!r} does not apply to method={self.method!r} "
                    f"(its options: {takes})"
                )
            accepted[name].check(name, value)
        # The core checks the rest (alpha, anneal_epochs against epochs) when the run starts.
        return RunSpec(dataclasses.replace(self), method)

    def _check_data_source(self, method: HarnessMethod) -> None:
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
        if method.scorer:
            raise InvalidValue(
                f"method={self.method!r} does not apply with data_path: the static scorers "
                "score the training set in memory; use a dynamic method, or a --dataset"
            )

    def for_method(self, method: str, prune: float, seed: int) -> RunConfig:
        """This configuration for one run of a comparison: ``method`` at ``prune`` and ``seed``,
        with the fields and options the method does not use left at their defaults."""
        entry = get_method(method)
        accepted, unused = entry.options(), entry.unused_fields()
        return dataclasses.replace(
            self,
            method=method,
            prune=0.0 if "prune" in unused else prune,
            seed=seed,
            options={k: v for k, v in self.options.items() if k in accepted},
            **{name: FIELD_DEFAULTS[name] for name in unused if name != "prune"},
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
#: The pruning fields, each with its value where a method does not use it (no pruning).
_NEUTRAL = {
    "prune": 0.0,
    "prune_schedule": "constant",
    "prune_end": None,
    "every": 1,
    "warmup_epochs": 0,
    "anneal_epochs": 0,
    "rescale": None,
    "alpha": None,
}


@dataclass(frozen=True)
class RunSpec:
    """One run, resolved once (:meth:`RunConfig.resolve`): its checked configuration and its
    method's entry in the harness's registry. The trainer executes it."""

    config: RunConfig
    method: HarnessMethod

    def step_budget(self, num_train: int) -> int | None:
        """``full-matched``'s optimizer steps (None for every other method): exactly those of a
        pruned run at its prune rate and schedule, warm-up, anneal and ``every`` on
        ``num_train`` samples (the budgets every exact method shares), so that full data gets
        the pruned run's sample budget and an LR schedule sized to it."""
        config = self.config
        if not self.method.matches_steps:
            return None
        pruned = Pruner(
            num_train,
            method="random",
            prune=config.prune,
            prune_schedule=config.prune_schedule,
            prune_end=config.prune_end,
            epochs=config.epochs,
            seed=config.seed,
            every=config.every,
            warmup_epochs=config.warmup_epochs,
            anneal_epochs=config.anneal_epochs or 0,
        )
        return pruned.total_steps(config.batch_size)

    def train_epochs(self, num_train: int) -> int:
        """Epochs actually trained: ``full-matched`` stops within the epoch that spends its
        :meth:`step_budget`."""
        steps = self.step_budget(num_train)
        if steps is None:
            return self.config.epochs
        per_epoch = Pruner(num_train, method="full", epochs=1).total_steps(self.config.batch_size)
        return math.ceil(steps / per_epoch)

    @property
    def scoring_epochs(self) -> int:
        """E_s, the epochs each scoring run trains."""
        config = self.config
        return min(5, config.epochs) if config.score_epochs is None else config.score_epochs

    def pruner_kwargs(self, num_train: int) -> dict[str, Any]:
        """Arguments for :class:`dataprune.Pruner` over ``num_train`` samples (the core method
        and its options); a pruning field the method does not use gets its neutral value (full
        data in every epoch: full-matched's pruning fields size its budget, not its data)."""
        config, policy = self.config, self.method.policy
        unused = get_policy(policy).unused_parameters()
        pruning = {
            name: neutral if name in unused else getattr(config, name)
            for name, neutral in _NEUTRAL.items()
        }
        return dict(
            method=policy,
            epochs=self.train_epochs(num_train),
            seed=config.seed,
            shard_stats=config.shard_stats,
            compile=config.compile,
            **pruning,
            **config.options,
        )
