"""The CUDA paths: same random numbers and subsets as the CPU, no host sync in record(), and a
training run on the device. Skipped without a GPU (run them with benchmarks/gpu_session.sh)."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch
from test_distributed_sharded import KTH_SIZES, METHODS, PRUNE, N, kth_vector

from dataprune import Pruner
from dataprune.harness import cli
from dataprune.harness.config import RunConfig
from dataprune.harness.data import load_dataset
from dataprune.harness.trainer import train
from dataprune.selection import RandomStream, top_k_mask
from dataprune.stats import SampleStats

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_random_numbers_and_selections_are_the_same_on_cuda():
    stream = RandomStream.of(4, 2, 1)
    idx = torch.arange(0, 3_000_000, 7)
    assert torch.equal(stream.bits(idx), stream.bits(idx.cuda()).cpu())
    assert torch.equal(stream.uniform(idx), stream.uniform(idx.cuda()).cpu())
    x = kth_vector(1)
    for k in KTH_SIZES:
        assert torch.equal(top_k_mask(x, k, stream), top_k_mask(x.cuda(), k, stream).cpu())
    stats = torch.rand(N, 3, generator=torch.Generator().manual_seed(0))
    stats[:, 2] = (stats[:, 2] > 0.3).float()  # some samples unseen
    for method, options in METHODS.items():
        subsets = []
        for device in ("cpu", "cuda"):
            pruner = Pruner(N, method, PRUNE, 3, seed=2, device=device, **options)
            pruner.stats.table = stats.to(device)
            pruner.set_epoch(1)
            subsets.append(pruner.indices().cpu())
        assert torch.equal(*subsets), method


def _batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches with repeated indices and some NaN and inf losses."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for size in (256, 256, 100):
        indices = torch.randint(0, 500, (size,), generator=gen)
        losses = torch.rand(size, generator=gen) * 4
        losses[::17] = math.nan
        losses[5::23] = math.inf
        out.append((indices, losses))
    return out


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cuda_record_is_deterministic_matches_cpu_and_never_syncs(compile):
    batches = _batches(0)
    if compile:  # compile for these batch sizes first: compiling (autotuning) may sync
        warm = SampleStats(500, 1.0, "cuda", compile=True)
        for indices, losses in batches:
            warm.update(indices.cuda(), losses.cuda())
    tables = []
    for device, order_seed in (("cpu", 0), ("cuda", 0), ("cuda", 1)):
        pruner = Pruner(500, "infobatch", 0.5, 4, device=device, compile=compile)
        pruner.set_epoch(0)
        # The first record of an epoch checks the index range once (a sync); then none.
        pruner.record(torch.arange(3, device=device), torch.ones(3, device=device))
        for step, (indices, losses) in enumerate(batches):
            perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(order_seed))
            losses = losses[perm].to(device).requires_grad_()
            # Indices from the host (as a DataLoader gives them) and from the device.
            indices = indices[perm] if step % 2 else indices[perm].to(device)
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("error")
            try:
                pruner.record(indices, losses).backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        tables.append(pruner.stats.table.cpu())
    cpu, cuda, cuda_reordered = tables
    assert torch.equal(cuda, cuda_reordered)  # batch order never changes a bit
    torch.testing.assert_close(cuda, cpu, rtol=1e-6, atol=1e-6)


def test_cli_trains_on_cuda(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--device", "cuda", "--method", "random", "--prune", "0.5"]
    assert cli.main([*argv, "--epochs", "3", "--no-progress", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["final_accuracy"] > 0.7
    assert not result["device_name"].startswith("cpu")


def _syncs_of_a_run(batch_size: int) -> tuple[int, float]:
    """Host syncs that set_sync_debug_mode reports during a 2-epoch run, and its accuracy
    (digits with crop-flip augmentation, so the augmentation is checked too)."""
    config = RunConfig(
        dataset="digits",
        model="cnn",
        method="ucb",
        prune=0.5,
        epochs=2,
        batch_size=batch_size,
        device="cuda",
        progress=False,
    )
    data = dataclasses.replace(load_dataset("digits"), augment="crop-flip")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result, _ = train(config.resolve(), data)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught), result.final_accuracy


def test_training_steps_never_sync_with_the_host():
    # 90 steps against 24: selection, the epoch's loss and evaluation may sync a few times an
    # epoch, the same in both; a sync in the step would add one per step.
    many_steps, accuracy = _syncs_of_a_run(batch_size=16)
    few_steps, _ = _syncs_of_a_run(batch_size=64)
    assert accuracy > 0.2  # chance is 0.1; 4-pixel crops of 8x8 digits are a hard task
    assert many_steps - few_steps <= 2, (many_steps, few_steps)


def test_indices_are_range_checked_before_the_first_set_epoch_too():
    """The once-an-epoch check on CUDA was skipped before any set_epoch(), so a bad index
    became a device-side assert instead of an IndexError."""
    pruner = Pruner(10, "random", 0.5, 2, device="cuda")
    with pytest.raises(IndexError, match="num_samples=10"):
        pruner.record(torch.tensor([3, 12], device="cuda"), torch.ones(2, device="cuda"))
    pruner.record(torch.tensor([3, 4], device="cuda"), torch.ones(2, device="cuda"))
    torch.cuda.synchronize()
