"""The Pruner's saved state: one schema that owns its keys, their checks and their conversion.

A state is a plain dict that ``torch.load(weights_only=True)`` reads: ``format``, the
:class:`Settings` a loading pruner must share, the method's ``options``, the :class:`Counters`,
and the progress of selection (epoch, round, subset, weights, churn, statistics). Every key is
declared once, below; :meth:`dataprune.Pruner.state_dict` and ``load_state_dict`` go through
:func:`save` and :func:`check`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._validation import check_int
from .errors import InvalidType, InvalidValue

FORMAT = 3


@dataclass(frozen=True)
class Settings:
    """What a state must agree with to load: the pruner's attributes of these names."""

    num_samples: int
    method: str
    prune: float
    prune_schedule: str
    prune_end: float | None
    epochs: int
    seed: int
    every: int
    warmup_epochs: int
    anneal_epochs: int
    rescale: bool
    alpha: float
    budgets: list[int]

    @classmethod
    def of(cls, pruner: Any) -> Settings:
        return cls(**{f.name: getattr(pruner, f.name) for f in dataclasses.fields(cls)})


@dataclass
class Counters:
    """What the pruner has done so far (``summary()`` reports them)."""

    epochs_started: int = 0
    samples_used: int = 0  # planned: the epoch size of every epoch started
    pruned_epochs: int = 0  # epochs started on a subset; selected_count counts within them
    record_calls: int = 0
    samples_forwarded: int = 0  # this process's samples through a forward pass, any kind
    samples_backpropagated: int = 0  # this process's samples whose loss was returned to train
    selection_seconds: float = 0.0
    record_seconds: float = 0.0


@dataclass
class Progress:
    """Where selection stands: the current epoch and round, their subset and its weights."""

    epoch: int | None = None
    round: int | None = None
    subset: Tensor | None = None  # sorted indices of the current pruned epoch (None: all)
    weights: Tensor | None = None  # per-sample loss weights while rescaling
    churn: list[dict[str, int]] = field(default_factory=list)


#: The keys of a state, in order; each section's own keys come from its dataclass.
KEYS: tuple[str, ...] = ("format", "settings", "options", "counters", "progress", "shard")
KEYS += ("stats", "selected_count", "nonfinite", "buffers")


def save(
    pruner: Any, stats: Tensor, selected_count: Tensor, buffers: Mapping[str, Tensor]
) -> dict[str, Any]:
    """The state of ``pruner`` with these rows of statistics, counts and the method's buffers
    (as CPU tensors)."""
    progress = dataclasses.asdict(pruner.progress)
    for name in ("subset", "weights"):
        progress[name] = None if progress[name] is None else progress[name].cpu()
    return {
        "format": FORMAT,
        "settings": dataclasses.asdict(Settings.of(pruner)),
        "options": pruner.policy.state(),
        "counters": dataclasses.asdict(pruner.counters),
        "progress": progress,
        "shard": None if pruner.shard is None else list(pruner.shard),
        "stats": stats.cpu(),
        "selected_count": selected_count.cpu(),
        "nonfinite": int(pruner.nonfinite),
        "buffers": {name: value.cpu() for name, value in buffers.items()},
    }


def check_fields(state: Any, rows: int | None = None) -> None:
    """Refuse a state whose keys are missing or of the wrong kind (for any pruner; with
    ``rows``, for one whose statistics hold that many rows).

    Used by ``load_state_dict`` and by tools that read a saved state without a Pruner.
    """
    _check_keys(state)
    counters, progress, settings = state["counters"], state["progress"], state["settings"]
    for key, value in counters.items():
        kind = float if key.endswith("seconds") else int
        if isinstance(value, bool) or not isinstance(value, (int, kind)) or not value >= 0:
            raise InvalidValue(
                f"the pruner state's counters[{key!r}] must be a number >= 0, got {value!r}"
            )
    for key in ("epoch", "round"):
        value = progress[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise InvalidValue(
                f"the pruner state's progress[{key!r}] must be None or an int >= 0, got {value!r}"
            )
    churn = progress["churn"]
    if not isinstance(churn, list) or not all(
        isinstance(c, dict) and all(isinstance(c.get(k), int) for k in ("epoch", "entered", "left"))
        for c in churn
    ):
        raise InvalidValue("the pruner state's churn must be a list of {epoch, entered, left}")
    for key in ("num_samples", "epochs", "every", "warmup_epochs", "anneal_epochs"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidValue(
                f"the pruner state's settings[{key!r}] must be an int >= 0, got {value!r}"
            )
    budgets = settings["budgets"]
    if not isinstance(budgets, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in budgets
    ):
        raise InvalidValue("the pruner state's budgets must be a list of ints >= 1")
    stats, counts = state["stats"], state["selected_count"]
    if not isinstance(stats, Tensor) or stats.dim() != 2 or stats.shape[1] != 3:
        raise InvalidValue(
            f"the pruner state's 'stats' must be an (N, 3) tensor of (mean, var, seen) rows, got "
            f"{describe(stats)}"
        )
    if rows is not None:
        _check_tensor(stats, "stats", (rows, 3), floating=True)
    if (
        not isinstance(counts, Tensor)
        or counts.is_floating_point()
        or counts.dtype == torch.bool
        or counts.shape != stats.shape[:1]
    ):
        raise InvalidValue(
            f"the pruner state's 'selected_count' must be an integer tensor of one count per "
            f"row of its 'stats' ({stats.shape[0]}), got {describe(counts)}"
        )
    pruned = counters["pruned_epochs"]
    if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > pruned):
        raise InvalidValue(
            f"the pruner state's 'selected_count' must lie in [0, pruned_epochs={pruned}]"
        )
    nonfinite = state["nonfinite"]
    if isinstance(nonfinite, bool) or not isinstance(nonfinite, int) or nonfinite < 0:
        raise InvalidValue(f"the pruner state's 'nonfinite' must be an int >= 0, got {nonfinite!r}")
    buffers = state["buffers"]
    if not isinstance(buffers, Mapping) or not all(isinstance(v, Tensor) for v in buffers.values()):
        raise InvalidValue("the pruner state's 'buffers' must be a dict of tensors")


def _check_keys(state: Any) -> None:
    if not isinstance(state, Mapping):
        raise InvalidType(
            f"state must be the dict that Pruner.state_dict() returns, got {describe(state)}"
        )
    if state.get("format") != FORMAT:
        raise InvalidValue(
            f"unsupported pruner state format {state.get('format')!r}; this version of "
            f"dataprune reads format {FORMAT} (states saved by Pruner.state_dict() of the same "
            "version)"
        )
    _require(state, KEYS, "")
    for name, section in (("settings", Settings), ("counters", Counters), ("progress", Progress)):
        if not isinstance(state[name], Mapping):
            raise InvalidValue(f"the pruner state's {name!r} must be a dict")
        _require(state[name], [f.name for f in dataclasses.fields(section)], f"{name}.")


def check(pruner: Any, state: Any) -> slice:
    """Refuse a state ``pruner`` cannot load, saying why; return the rows of its statistics
    that ``pruner`` keeps (all, or its shard's)."""
    _check_keys(state)
    # an option added since the state was saved counts at its default
    defaults = {name: option.default for name, option in pruner.policy.options.items()}
    saved = dict(state["settings"]) | {"options": defaults | dict(state["options"])}
    current = dataclasses.asdict(Settings.of(pruner)) | {"options": pruner.policy.state()}
    for key, value in current.items():
        if saved.get(key) == value:
            continue
        if key == "budgets" and len(saved[key]) == len(value):  # the rest agrees: the rates
            epoch = next(
                e for e, (a, b) in enumerate(zip(saved[key], value, strict=True)) if a != b
            )
            raise InvalidValue(
                f"state dict was saved with a prune_schedule that gives epoch {epoch} a budget "
                f"of {saved[key][epoch]}, but this pruner's gives {value[epoch]}; build the "
                "Pruner with the same schedule"
            )
        raise InvalidValue(
            f"state dict was saved with {key}={saved.get(key)!r}, but this pruner has "
            f"{key}={value!r}; build the Pruner with the same settings"
        )
    n = pruner.num_samples
    saved_shard = state["shard"]
    if saved_shard is not None and list(saved_shard) == [0, n]:
        saved_shard = None  # one shard of one: the whole state
    rows = slice(None)
    if saved_shard is None and pruner.shard is not None:
        rows = slice(*pruner.shard)
    elif saved_shard is not None and tuple(saved_shard) != pruner.shard:
        raise InvalidValue(
            f"state dict holds the statistics of samples {list(saved_shard)} (one rank's "
            f"shard), but this pruner holds {list(pruner.shard or (0, n))}; load it on the "
            "same rank with the same world size, or save a gathered_state_dict()"
        )
    check_fields(state, n if saved_shard is None else saved_shard[1] - saved_shard[0])
    progress = state["progress"]
    weights, epoch, subset = progress["weights"], progress["epoch"], progress["subset"]
    if weights is not None:
        _check_tensor(weights, "weights", (n,), floating=True)
        if not bool((torch.isfinite(weights) & (weights > 0)).all()):
            raise InvalidValue("the pruner state's weights must be finite and positive")
    if epoch is not None:
        check_int("state's epoch", epoch, low=0, high=pruner.epochs - 1)
    pruned = epoch is not None and pruner.is_pruned_epoch(epoch)
    if (subset is not None) != pruned:
        raise InvalidValue(
            f"the pruner state's subset is {'missing' if pruned else 'present'} at epoch "
            f"{epoch}, which is {'a pruned' if pruned else 'not a pruned'} epoch"
        )
    if subset is not None:
        _check_tensor(subset, "subset", (pruner.epoch_size(epoch),), floating=False)
        if subset.numel() and (int(subset.min()) < 0 or int(subset.max()) >= n):
            raise InvalidValue(
                f"the pruner state's subset holds indices in [{int(subset.min())}, "
                f"{int(subset.max())}], outside [0, num_samples={n})"
            )
        if subset.numel() > 1 and not bool((subset[1:] > subset[:-1]).all()):
            raise InvalidValue("the pruner state's subset is not sorted without repeats")
    return rows


def load(pruner: Any, state: Mapping[str, Any], rows: slice) -> None:
    """Restore ``pruner`` from a state :func:`check` accepted, as copies on its device.

    Rows of statistics that are not valid (not finite, a negative variance or count: no version
    of dataprune writes them) load as unseen samples.
    """
    device = pruner.stats.device
    table = state["stats"][rows].to(device, torch.float32, copy=True)
    valid = torch.isfinite(table).all(1) & (table[:, 1] >= 0) & (table[:, 2] >= 0)
    table[~valid] = 0.0
    pruner.stats.table = table
    pruner.selected_count = state["selected_count"][rows].to(device, torch.int32, copy=True)
    progress = dict(state["progress"])
    for name, dtype in (("subset", torch.int64), ("weights", torch.float32)):
        if progress[name] is not None:
            progress[name] = progress[name].to(device, dtype, copy=True)
    progress["churn"] = [dict(c) for c in progress["churn"]]
    pruner.progress = Progress(**progress)
    pruner.counters = Counters(**state["counters"])
    pruner.nonfinite = torch.tensor(state["nonfinite"], device=device)
    whole = state["stats"].shape[0]  # a buffer of a row per statistics row (+ a spare) too
    pruner.policy.buffers = {
        name: (
            _rows_of(value, rows) if value.dim() == 1 and value.numel() == whole + 1 else value
        ).to(device, copy=True)
        for name, value in state["buffers"].items()
    }


def _rows_of(buffer: Tensor, rows: slice) -> Tensor:
    """A per-row buffer's ``rows``, with its spare entry (cleared) after them."""
    return torch.cat([buffer[:-1][rows], buffer.new_zeros(1)])


def describe(value: Any) -> str:
    """A value's kind, for messages: a tensor's dtype and shape, else its type."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _require(mapping: Mapping[str, Any], keys: Any, prefix: str) -> None:
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise InvalidValue(
            f"the pruner state lacks {', '.join(repr(prefix + k) for k in missing)}; pass a "
            "state saved by Pruner.state_dict()"
        )


def _check_tensor(value: Any, key: str, shape: tuple, floating: bool) -> None:
    kind = "floating-point" if floating else "integer"
    if (
        not isinstance(value, Tensor)
        or value.is_floating_point() != floating
        or value.dtype == torch.bool
        or tuple(value.shape) != shape
    ):
        raise InvalidValue(
            f"the pruner state's {key!r} must be a {kind} tensor of shape {shape} for this "
            f"pruner, got {describe(value)}"
        )
