"""Behaviour digests: what a method does, hashed, so that results outlive refactoring.

A result stays valid while the code that produced it behaves the same, whatever its text. Two
small deterministic runs per method stand for that behaviour:

- ``core``: the Pruner's loop (:meth:`~dataprune.Pruner.set_epoch`, ``loss``, ``end_epoch``,
  the sampler's order) over 600 samples for 4 epochs, with losses that are an exact function of
  each sample and how often it trained. Only element-wise arithmetic touches the statistics, so
  the digest is the same on every machine; a test holds it to the committed one.
- ``harness``: the harness's training of the small CNN on the embedded digits for 3 epochs
  (what each epoch selected, how many steps it took, the accuracy), which also sees the
  harness's own steps (augmentation, evaluation, scoring). Floating-point training differs
  between CPUs, so it is compared on the machine that runs the evidence.

``benchmarks/behaviour.json`` holds both for every method; every result records its method's
(:func:`dataprune.harness.provenance.provenance`), and ``benchmarks/reproduce.py`` reruns the
results whose digests differ from the code's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from ..pruner import Pruner
from .methods import get_method, run_methods

CORE_SAMPLES, CORE_EPOCHS, CORE_BATCH = 600, 4, 32
GOLDEN_PRUNE = 0.5


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the same reductions in the same order, run after run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def core_digest(method: str) -> str:
    """The digest of ``method``'s core run (``method``: a core method, or a harness one that
    runs through it)."""
    method = get_method(method).policy
    n = CORE_SAMPLES
    options: dict[str, Any] = {}
    if method == "static-score":
        options["scores"] = ((torch.arange(n) * 7919) % 1013).float()
    pruner = Pruner(n, method, prune=GOLDEN_PRUNE, epochs=CORE_EPOCHS, seed=3, **options)
    trained = torch.zeros(n, dtype=torch.int64)
    base = ((torch.arange(n) * 7919 + 13) % 1009).double() / 64 + 0.25

    def sample_losses(rows: torch.Tensor) -> torch.Tensor:
        losses = (base[rows] / (1 + trained[rows])).float()  # lower each time it trains
        if torch.is_grad_enabled():
            trained[rows] += 1
        return losses

    digest = hashlib.sha256()
    sampler = pruner.sampler()
    pruner.attach(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    with _one_thread():
        for epoch in range(CORE_EPOCHS):
            pruner.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.int64)
            digest.update(order.numpy().tobytes())
            digest.update(f"{pruner.lr_scale():.6e}".encode())
            for rows in order.split(CORE_BATCH):
                loss = pruner.loss(rows, rows, sample_losses)
                digest.update(f"{float(loss):.6e}".encode())
            pruner.end_epoch(torch.nn.Identity(), lambda rows: rows, sample_losses, CORE_BATCH)
    digest.update(pruner.stats.table.numpy().tobytes())
    return digest.hexdigest()[:16]


def harness_digest(method: str) -> str:
    """The digest of ``method``'s harness run on the embedded digits (any harness method)."""
    from .config import RunConfig
    from .scoring.run import run_static
    from .trainer import train

    base = RunConfig(
        dataset="digits",
        model="cnn",
        epochs=3,
        batch_size=64,
        score_epochs=1,
        score_runs=1,
        progress=False,
        device="cpu",
    )
    spec = base.for_method(method, GOLDEN_PRUNE, seed=0).resolve()
    with _one_thread():
        result, _ = (run_static if spec.method.scorer else train)(spec)
    digest = hashlib.sha256()
    for e in result.epochs:
        digest.update(f"{e.samples},{e.steps},{e.train_loss:.5g},{e.test_accuracy:.4f};".encode())
    return digest.hexdigest()[:16]


@functools.cache
def digests(method: str) -> dict[str, str]:
    """Both digests of ``method`` for this code (computed once a process)."""
    return {"core": core_digest(method), "harness": harness_digest(method)}


def all_digests() -> dict[str, dict[str, str]]:
    """Both digests of every harness method, in the order tables list them."""
    return {method: digests(method) for method in run_methods()}
