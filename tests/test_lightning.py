"""The Lightning Callback on real Fashion-MNIST: in one process and under DDP on 2 CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dataprune

pytest.importorskip("lightning", reason="the [lightning] extra is not installed")

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
import lightning_job  # noqa: E402
import records  # noqa: E402

if not (lightning_job.DATA / "fashion-mnist").is_dir():
    pytest.skip("Fashion-MNIST not found in ../shared/data", allow_module_level=True)


def run(tmp_path: Path, *flags: str, devices: int = 1) -> list[dict]:
    """Runs the job (in-process for one device; else Lightning launches the processes)."""
    argv = ["--out", str(tmp_path), "--devices", str(devices), *flags]
    if devices == 1:
        lightning_job.run(lightning_job.parse(argv))
    else:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        subprocess.run(
            [sys.executable, lightning_job.__file__, *argv], check=True, env=env, timeout=300
        )
    return records.read(tmp_path, devices, "--resume" in flags)


@pytest.mark.parametrize("method, accumulate", [("ucb", 1), ("infobatch", 3)])
def test_one_process_trains_the_exact_budget_and_logs_metrics(tmp_path, method, accumulate):
    (record,) = run(tmp_path, "--method", method, "--accumulate", str(accumulate))
    last = record["trained"].pop("2")  # infobatch anneals its last epoch on full data
    assert sorted(last) == record["subsets"].pop("2")
    assert len(last) == (512 if method == "infobatch" else 256)
    records.check_budget([record], 256)
    metrics = record["metrics"]
    assert metrics["dataprune/fraction_pruned"] == (0.0 if method == "infobatch" else 0.5)
    assert metrics["dataprune/samples_used"] == len(last)
    assert "dataprune/selection_seconds" in metrics


def test_full_method_equals_lightning_without_dataprune(tmp_path):
    (ours,) = run(tmp_path / "a", "--method", "full", "--no-shuffle")
    (plain,) = run(tmp_path / "b", "--plain", "--no-shuffle")
    assert len(ours["losses"]) == len(plain["losses"]) == 3 * 16
    assert ours["losses"] == pytest.approx(plain["losses"], rel=1e-5)


def test_resume_from_a_lightning_checkpoint_selects_as_an_uninterrupted_run(tmp_path):
    (whole,) = run(tmp_path / "whole")
    run(tmp_path / "split", "--stop-after", "0")
    (resumed,) = run(tmp_path / "split", "--resume")
    records.check_resumed([whole], [resumed])
    assert resumed["losses"] == pytest.approx(whole["losses"][8:], rel=1e-4)


def test_two_ddp_processes_share_subsets_budget_steps_and_resume(tmp_path):
    whole = run(tmp_path / "whole", devices=2)
    records.check_budget(whole, 256)
    run(tmp_path / "split", "--stop-after", "0", devices=2)
    resumed = run(tmp_path / "split", "--resume", devices=2)
    records.check_resumed(whole, resumed)


def test_peek_keeping_steps_takes_full_trainings_steps_on_two_processes_and_resumes(tmp_path):
    records.check_keeping_steps(run, tmp_path, 256, 512, 32, devices=2)


def test_lightning_sharding_the_subset_again_is_refused(tmp_path):
    example = lightning_job.load_example()
    data = lightning_job.load_dataset("fashion-mnist", lightning_job.DATA, train_limit=64)
    pruning = example.DataPruning(method="ucb", prune=0.5)
    model = example.FashionModel(data, pruning)
    trainer = example.pl.Trainer(
        max_epochs=1, accelerator="cpu", callbacks=[pruning], logger=False, barebones=True
    )
    dataset = example.TensorDataset(data.train_x, data.train_y)

    def resharded_loader():
        # the pruner's loader is built, but the Trainer gets another sampler, as Lightning's
        # own DistributedSampler would replace it under DDP
        pruning.dataloader(dataset, batch_size=16)
        return example.DataLoader(dataset)

    model.train_dataloader = resharded_loader
    with pytest.raises(RuntimeError, match="use_distributed_sampler=False"):
        trainer.fit(model)


@pytest.mark.parametrize("method", dataprune.methods())
def test_every_method_trains_its_exact_budget_in_one_process(tmp_path, method):
    import torch

    example = lightning_job.load_example()
    data = lightning_job.load_dataset("fashion-mnist", lightning_job.DATA, train_limit=96)
    options = {"scores": torch.arange(96.0)} if method == "static-score" else {}
    pruning = example.DataPruning(method=method, prune=0.5, anneal_epochs=0, **options)
    model = example.FashionModel(data, pruning, batch_size=32)
    args = lightning_job.parse(["--out", str(tmp_path), "--epochs", "2"])
    trainer = example.make_trainer(args, [pruning], enable_progress_bar=False)
    trainer.fit(model)
    pruner = pruning.pruner
    summary = pruner.summary()
    assert trainer.global_step == pruner.total_steps(32) == len(model.losses)
    assert summary["samples_backpropagated"] > 0 and summary["record_calls"] > 0
    if method == "kakurenbo":  # the samples it hid were measured at each epoch's end
        assert summary["samples_forwarded"] == 2 * 96
    if method == "selective-backprop":  # every sample forwarded, half of each batch trained
        assert summary["samples_forwarded"] == 2 * (96 + 48)


def test_misuse_is_said_in_one_line_with_what_to_do(tmp_path, caplog):
    import torch
    import torch.nn.functional as F

    example = lightning_job.load_example()
    data = lightning_job.load_dataset("fashion-mnist", lightning_job.DATA, train_limit=64)
    with pytest.raises(ValueError, match="takes epochs from the Trainer's max_epochs"):
        example.DataPruning(method="ucb", epochs=5)

    class Forgetful(example.FashionModel):  # returns a loss without recording it
        def training_step(self, batch, batch_idx):
            index, (x, y) = batch
            return F.cross_entropy(self.net(x), y)

    pruning = example.DataPruning(method="ucb", prune=0.5)
    args = lightning_job.parse(["--out", str(tmp_path), "--epochs", "2"])
    trainer = example.make_trainer(args, [pruning], enable_progress_bar=False)
    with caplog.at_level("WARNING", logger="dataprune"):
        trainer.fit(Forgetful(data, pruning, batch_size=32))
    said = [r.message for r in caplog.records if "no loss recorded" in r.message]
    assert len(said) == 2 and "pruner.loss(" in said[0]  # once an epoch
    again = example.make_trainer(args, [pruning], enable_progress_bar=False)
    with pytest.raises(ValueError, match="build a new DataPruning"):
        again.fit(example.FashionModel(data, pruning, batch_size=32))
    assert torch.is_tensor(pruning.pruner.stats.table)
