"""Run one configuration, or a grid of them, with finished runs skipped on a rerun."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from .datasets import ImageData
from .files import write_json
from .trainer import (
    CHECKPOINT,
    SCORER_METHODS,
    RunConfig,
    RunResult,
    is_main_process,
    setup_device,
    train,
)

RESULT = "result.json"


def run(config: RunConfig, data: ImageData | None = None) -> RunResult:
    """Train one configuration: static scorers score first (and are charged), others train."""
    config.validate()
    if data is None:
        data = config.load_data()
    if config.method in SCORER_METHODS:
        from .scorers import run_static

        result, _ = run_static(config, data)
    else:
        result, _ = train(config, data)
    finished = len(result.epochs) == config.train_epochs  # not stopped by --stop-after
    if config.out and finished and is_main_process():
        write_json(Path(config.out) / RESULT, result.to_dict())
    return result


def run_name(config: RunConfig) -> str:
    """Directory name of a run inside a grid: method, prune rate and seed."""
    name = f"{config.method}-p{config.prune:g}-s{config.seed}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def grid(base: RunConfig, methods: Sequence[str], prunes: Sequence[float], seeds: Sequence[int]):
    """The configurations of a comparison; ``full`` runs once per seed (prune does not apply)."""
    configs = []
    for method in methods:
        for prune in [0.0] if method == "full" else prunes:
            for seed in seeds:
                configs.append(dataclasses.replace(base, method=method, prune=prune, seed=seed))
    return configs


def run_grid(configs: Sequence[RunConfig], out: Path | None, progress: bool = True):
    """Run every configuration (each in ``out/<run_name>``); reuse finished runs' results.

    A finished run is one whose ``result.json`` holds the same configuration; a run with a
    checkpoint of the same configuration resumes from it. So an interrupted comparison
    continues where it stopped.
    """
    data_cache: dict[tuple, ImageData] = {}
    results: list[RunResult] = []
    iterator = configs
    if progress and is_main_process():
        from tqdm.auto import tqdm

        iterator = tqdm(configs, desc="runs")
    warmed = False
    for config in iterator:
        if out is not None:
            config = dataclasses.replace(config, out=str(out / run_name(config)))
        if config.out:
            done = _finished(config)
            if done is not None:
                results.append(done)
                continue
            config = dataclasses.replace(config, resume=_resumable(config))
        key = (config.dataset, config.data_dir, config.train_limit, config.test_limit)
        if key not in data_cache:
            data_cache[key] = config.load_data().to(setup_device(config.device))
        if not warmed:
            warm_up(config, data_cache[key])
            warmed = True
        results.append(run(config, data_cache[key]))
    return results


def _finished(config: RunConfig) -> RunResult | None:
    path = Path(config.out) / RESULT
    if not path.is_file():
        return None
    try:
        result = RunResult.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    return result if result.config.identity() == config.identity() else None


def _resumable(config: RunConfig) -> bool:
    path = Path(config.out) / CHECKPOINT
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)["identity"]
    except Exception:  # a truncated or foreign file: start the run afresh
        return False
    return saved == config.identity()


def warm_up(config: RunConfig, data: ImageData) -> None:
    """A full-data epoch of two batches, untimed, before the timed runs of a process.

    It pays the one-time costs that only the first run would otherwise carry: CUDA context and
    kernel loading, cuDNN autotuning and, with ``compile``, compiling the model and the
    statistics update (later runs reuse the compiled code).
    """
    n = min(data.num_train, 5 * config.batch_size // 2)  # two full batches and a short one
    small = dataclasses.replace(
        data,
        train_x=data.train_x[:n],
        train_y=data.train_y[:n],
        test_x=data.test_x[:1024],
        test_y=data.test_y[:1024],
    )
    short = dataclasses.replace(
        config,
        method="full",
        prune=0.0,
        epochs=1,
        warmup_epochs=0,
        anneal_epochs=None,
        out=None,
        resume=False,
        progress=False,
        stop_after=None,
        scores_file=None,
    )
    train(short, small)
