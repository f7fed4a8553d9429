"""Run one configuration, or a grid of them, with finished runs skipped on a rerun."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidValue, RunError
from .checkpoint import CHECKPOINT, CheckpointError, identity_difference, read_checkpoint
from .config import FIELD_DEFAULTS, RunConfig, RunSpec
from .data import ImageData
from .data.disk import DiskData
from .device import is_main_process, setup_device
from .files import locked_folder, write_json
from .methods import get_method
from .provenance import code_identity, identifying, provenance
from .results import RunResult
from .trainer import train

RESULT = "result.json"
logger = logging.getLogger("dataprune")


def run(
    spec: RunSpec, data: ImageData | None = None, origin: dict[str, Any] | None = None
) -> RunResult:
    """Train one run: static scorers score first (and are charged), others train.

    The result records ``origin``, the data's :func:`provenance` (computed when not given).

    With ``config.out`` the folder is locked for the run (a second run into it is refused), and
    a checkpoint already there is never overwritten unless ``config.overwrite``: ``resume``
    continues it, and without ``resume`` the run refuses to start. ``resume`` with no
    checkpoint yet starts from the first epoch, so a preempted job can rerun one command.
    """
    config = spec.config
    if config.stop_after is not None and config.out is None:
        raise InvalidValue(
            f"stop_after={config.stop_after} needs out: without an output folder nothing is "
            "saved to resume from"
        )
    setup_device(config.device)  # starts torch.distributed under torchrun: ranks are known
    out = Path(config.out) if config.out else None
    lock = locked_folder(out) if out is not None and is_main_process() else None
    with lock or contextlib.nullcontext():
        if out is not None:
            spec = dataclasses.replace(spec, config=_guard_out(config, out))
        if data is None:
            data = config.load_data()
        if spec.method.scorer:
            from .scoring.run import run_static

            result, _ = run_static(spec, data)
        else:
            result, _ = train(spec, data)
        origin = provenance(data) if origin is None else origin
        result.provenance = {**origin, **code_identity(spec.method.name)}
        # not stopped by --stop-after
        finished = len(result.epochs) == spec.train_epochs(data.num_train)
        if out is not None and finished and is_main_process():
            write_json(out / RESULT, result.to_dict())
    return result


def _guard_out(config: RunConfig, out: Path) -> RunConfig:
    """``config`` with ``resume`` settled by what ``out`` holds; refuse to overwrite a run."""
    path = out / CHECKPOINT
    if config.overwrite or not path.exists():
        if config.resume and not config.overwrite:
            logger.info("no checkpoint in %s yet: starting from the first epoch", out)
        return dataclasses.replace(config, resume=False)
    if config.resume:
        return config
    try:
        state = read_checkpoint(path, keys=("identity", "result"))
    except CheckpointError as exc:
        raise RunError(
            f"--out {out} holds an unusable checkpoint ({exc}); pass --overwrite to start afresh"
        ) from exc
    saved, current = state["identity"], config.identity()
    if saved == current:
        done = len(state["result"]["epochs"])
        raise RunError(
            f"--out {out} already holds this run's checkpoint ({done} "
            f"epoch{'' if done == 1 else 's'} done): pass --resume to continue it, or "
            "--overwrite to start afresh"
        )
    raise RunError(
        f"--out {out} holds a checkpoint of another configuration "
        f"({identity_difference(saved, current)}): choose another --out, or pass --overwrite"
    )


def run_name(config: RunConfig) -> str:
    """Directory name of a run inside a grid: method, prune rate and seed."""
    name = f"{config.method}-p{config.prune:g}-s{config.seed}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def grid(
    base: RunConfig,
    methods: Sequence[str],
    prunes: Sequence[float],
    seeds: Sequence[int],
) -> list[RunConfig]:
    """The configurations of a comparison: each method at each prune rate and seed, with the
    fields and options it does not use at their defaults (``RunConfig.for_method``); a method
    without a prune rate (``full``) runs once per seed."""
    configs = []
    for method in methods:
        for prune in [0.0] if "prune" in get_method(method).unused_fields() else prunes:
            for seed in seeds:
                configs.append(base.for_method(method, prune, seed))
    return configs


def run_grid(specs: Sequence[RunSpec], out: Path | None, progress: bool = True):
    """Run every configuration (each in ``out/<run_name>``); reuse finished runs' results.

    A finished run is one whose ``result.json`` holds the same configuration; a run with a
    checkpoint of the same configuration resumes from it. So an interrupted comparison
    continues where it stopped.
    """
    data_cache: dict[tuple, tuple[ImageData, dict[str, Any]]] = {}
    results: list[RunResult] = []
    iterator = specs
    bars = progress and is_main_process() and sys.stderr.isatty()
    if bars:
        from tqdm.auto import tqdm

        iterator = tqdm(specs, desc="runs")
    warmed = False
    for number, spec in enumerate(iterator, 1):
        config = spec.config
        if progress and is_main_process() and not bars:  # a log: plain lines, no escape codes
            logger.info(
                "run %d of %d: %s p=%g seed %d",
                number,
                len(specs),
                config.method,
                config.prune,
                config.seed,
            )
        if out is not None:
            config = dataclasses.replace(config, out=str(out / run_name(config)))
        key = (config.dataset, config.data_dir, config.train_limit, config.test_limit)
        key += (config.data_path, config.num_workers)
        if key not in data_cache:
            data = config.load_data().to(setup_device(config.device))
            data_cache[key] = data, provenance(data)  # checksummed once per dataset
        data, origin = data_cache[key]
        if config.out:
            done = None if config.overwrite else _finished(config, origin)
            if done is not None:
                results.append(done)
                continue
            # run() resumes a checkpoint of this configuration and refuses any other.
            has_checkpoint = (Path(config.out) / CHECKPOINT).exists()
            config = dataclasses.replace(config, resume=has_checkpoint and not config.overwrite)
        if not warmed:
            warm_up(config, data)
            warmed = True
        results.append(run(dataclasses.replace(spec, config=config), data, origin))
    return results


def _finished(config: RunConfig, origin: dict[str, Any]) -> RunResult | None:
    """The finished result of ``config`` in its folder, if any; refuses one of the same
    configuration but another provenance (``origin``), naming the field that differs."""
    path = Path(config.out) / RESULT
    if not path.is_file():
        return None
    try:
        result = RunResult.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    if result.config.identity() != config.identity():
        return None
    current = identifying({**origin, **code_identity(config.method)})
    saved = identifying(result.provenance)
    if saved != current:
        raise RunError(
            f"{path} was produced from other code or data "
            f"({identity_difference(saved, current)}): pass --overwrite to rerun it"
        )
    return result


def warm_up(config: RunConfig, data: ImageData) -> None:
    """A full-data epoch of two batches, untimed, before the timed runs of a process.

    It pays the one-time costs that only the first run would otherwise carry: CUDA context and
    kernel loading, cuDNN autotuning and, with ``compile``, compiling the model and the
    statistics update (later runs reuse the compiled code).
    """
    n = min(data.num_train, 5 * config.batch_size // 2)  # two full batches and a short one
    if isinstance(data, DiskData):  # warm-up pays compute costs, not reads: zeros will do
        train_x = data.train_x.new_zeros((n, *data.train_x.shape[1:]))
        train_y = data.test_y.new_zeros(n)
    else:
        train_x, train_y = data.train_x[:n], data.train_y[:n]
    small = ImageData(
        data.name,
        train_x,
        train_y,
        data.test_x[:1024],
        data.test_y[:1024],
        data.num_classes,
        data.augment,
        data.mean,
        data.std,
    )
    short = dataclasses.replace(
        config,
        method="full",
        epochs=1,
        out=None,
        resume=False,
        progress=False,
        stop_after=None,
        options={},
        # what full data does not use (pruning and scoring fields) back at the defaults
        **{name: FIELD_DEFAULTS[name] for name in get_method("full").unused_fields()},
    )
    train(short.resolve(), small)
