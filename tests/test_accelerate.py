"""A plain Accelerate loop with dataprune on real Fashion-MNIST: 1 process and 2 under torchrun."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import dataprune

pytest.importorskip("accelerate", reason="the [hf] extra is not installed")

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
import accelerate_job  # noqa: E402
import records  # noqa: E402

if not (accelerate_job.DATA / "fashion-mnist").is_dir():
    pytest.skip("Fashion-MNIST not found in ../shared/data", allow_module_level=True)


def run(tmp_path: Path, *flags: str, processes: int = 1) -> list[dict]:
    return records.run_job(accelerate_job, tmp_path, flags, processes)


def test_one_process_trains_the_budget_and_full_equals_the_plain_loop(tmp_path):
    records.check_budget(run(tmp_path / "ucb"), 256)
    (ours,) = run(tmp_path / "full", "--method", "full", "--no-shuffle")
    (plain,) = run(tmp_path / "plain", "--plain")
    assert ours["losses"] == pytest.approx(plain["losses"], rel=1e-5)


@pytest.mark.parametrize("method", dataprune.methods())
def test_every_method_trains_its_exact_steps(tmp_path, method):
    flags = ("--method", method, "--limit", "128", "--epochs", "2")
    (record,) = run(tmp_path, *flags)
    assert record["steps"] == record["total_steps"]
    summary = record["summary"]
    assert summary["samples_backpropagated"] > 0
    if method == "kakurenbo":  # it measured what it hid at each epoch's end
        assert summary["samples_forwarded"] == 2 * 128


def test_two_processes_shard_by_batches_once_and_resume_through_save_state(tmp_path):
    whole = run(tmp_path / "whole", processes=2)
    records.check_budget(whole, 256)
    run(tmp_path / "split", "--stop-after", "0", processes=2)
    resumed = run(tmp_path / "split", "--resume", processes=2)
    records.check_resumed(whole, resumed)
    for a, b in zip(whole, resumed, strict=True):
        steps = a["losses"][4:]  # 256 samples / 2 ranks / 32 a batch = 4 an epoch
        assert b["losses"] == pytest.approx(steps, rel=1e-4)


def test_peek_keeping_steps_takes_full_trainings_steps_on_two_processes_and_resumes(tmp_path):
    records.check_keeping_steps(run, tmp_path, 256, 512, 32, processes=2)


def test_split_batches_is_refused_with_what_to_change():
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    import dataprune
    from dataprune.frameworks.accelerate import dataloader

    accelerator = Accelerator(
        cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True)
    )
    pruner = dataprune.Pruner(10, "ucb", 0.5, 2)
    with pytest.raises(ValueError, match="split_batches=False"):
        dataloader(accelerator, pruner, list(range(10)), batch_size=2)
