"""The Hugging Face Trainer integration on real text (the stdlib's source): 1 and 2 processes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the [hf] extra is not installed")
pytest.importorskip("accelerate", reason="the [hf] extra is not installed")

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
import hf_job  # noqa: E402
import records  # noqa: E402

import dataprune  # noqa: E402
from dataprune.frameworks.hf import DataPruningTrainer, TrainingDiverged  # noqa: E402


def run(tmp_path: Path, *flags: str, processes: int = 1) -> list[dict]:
    return records.run_job(hf_job, tmp_path, flags, processes)


def test_one_process_trains_the_budget_with_exact_steps_and_logs(tmp_path):
    # 8 batches an epoch in windows of 3: 3 + 3 + 2, so 3 steps an epoch
    (record,) = run(tmp_path, "--accumulate", "3")
    records.check_budget([record], 64)
    assert record["steps"] == 9
    logged = record["metrics"]
    assert [m["dataprune/samples_used"] for m in logged] == [64.0] * 3
    assert all(m["dataprune/fraction_pruned"] == 0.5 for m in logged)
    assert "dataprune/kept_mean_loss" in logged[-1]


@pytest.mark.parametrize("accumulate", ["1", "3"])
def test_full_method_equals_the_trainer_without_dataprune(tmp_path, accumulate):
    flags = ["--no-shuffle", "--fixed-length", "--accumulate", accumulate]
    (ours,) = run(tmp_path / "a", "--method", "full", *flags)
    (plain,) = run(tmp_path / "b", "--plain", *flags)
    assert len(ours["losses"]) == len(plain["losses"]) > 0
    assert ours["losses"] == pytest.approx(plain["losses"], rel=1e-4)
    for a, b in zip(ours["params"], plain["params"], strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_resume_from_a_trainer_checkpoint_selects_as_an_uninterrupted_run(tmp_path):
    (whole,) = run(tmp_path / "whole")
    run(tmp_path / "split", "--stop-after", "0")
    (resumed,) = run(tmp_path / "split", "--resume")
    records.check_resumed([whole], [resumed])
    # the resumed state's log history starts with the checkpoint's (epoch 0)
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-4)


def test_two_processes_under_torchrun_share_subsets_budget_steps_and_resume(tmp_path):
    whole = run(tmp_path / "whole", processes=2)
    records.check_budget(whole, 64)
    run(tmp_path / "split", "--stop-after", "0", processes=2)
    resumed = run(tmp_path / "split", "--resume", processes=2)
    records.check_resumed(whole, resumed)


def test_peek_keeping_steps_takes_full_trainings_steps_on_two_processes_and_resumes(tmp_path):
    records.check_keeping_steps(run, tmp_path, 64, 128, 8, processes=2)


def make(tmp_path, pruning=None, **options):
    example = hf_job.load_example()
    items = example.byte_sequences(16, 40)
    return DataPruningTrainer(
        model=example.tiny_gpt2(16),
        args=example.training_args(str(tmp_path), 2, **options),
        train_dataset=items,
        data_collator=example.pad_collate,
        pruning=pruning or {"method": "ucb", "prune": 0.5},
    )


def test_settings_the_trainer_cannot_honour_are_refused_with_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        make(tmp_path, remove_unused_columns=True)
    with pytest.raises(ValueError, match="leave max_steps unset"):
        make(tmp_path, max_steps=5)
    with pytest.raises(ValueError, match="takes epochs from num_train_epochs"):
        make(tmp_path, pruning={"method": "ucb", "epochs": 9})


@pytest.mark.parametrize("method", dataprune.methods())
def test_every_method_trains_its_exact_steps_in_one_process(tmp_path, method):
    options = {"scores": torch.arange(40.0)} if method == "static-score" else {}
    trainer = make(tmp_path, pruning={"method": method, "prune": 0.5, **options})
    trainer.train()
    pruner = trainer.pruner
    summary = pruner.summary()
    batch = trainer.args.per_device_train_batch_size
    assert trainer.state.global_step == trainer.state.max_steps == pruner.total_steps(batch)
    assert summary["epochs_started"] == 2 and summary["samples_backpropagated"] > 0
    if method == "kakurenbo":  # the samples it hid were measured at each epoch's end
        assert summary["samples_forwarded"] == sum(pruner.budgets) + (80 - sum(pruner.budgets))
    speed = [e for e in trainer.state.log_history if "train_samples_per_second" in e]
    runtime = speed[0]["train_runtime"]
    assert speed[0]["train_samples_per_second"] == pytest.approx(
        sum(pruner.budgets) / runtime, rel=0.05
    )  # the samples trained, not the dataset's length


def test_uneven_epochs_train_each_epochs_own_size_and_resume(tmp_path):
    # infobatch at its defaults trains its last epoch on all the data: 64, 64, 128 samples
    (whole,) = run(tmp_path / "whole", "--method", "infobatch")
    sizes = [len(whole["subsets"][str(e)]) for e in range(3)]
    assert sizes == [64, 64, 128]
    for epoch, subset in whole["subsets"].items():
        assert sorted(whole["trained"][epoch]) == subset
    assert whole["steps"] == whole["total_steps"] == whole["planned_steps"] == 8 + 8 + 16
    run(tmp_path / "split", "--method", "infobatch", "--stop-after", "1")
    (resumed,) = run(tmp_path / "split", "--method", "infobatch", "--resume")
    records.check_resumed([whole], [resumed], epochs=("2",))


class NaNTrainer(DataPruningTrainer):
    def sample_losses(self, outputs, labels, inputs):
        losses, valid = super().sample_losses(outputs, labels, inputs)
        return losses * math.nan, valid


def test_an_epoch_of_nan_losses_stops_the_run_and_says_why(tmp_path):
    example = hf_job.load_example()
    trainer = NaNTrainer(
        model=example.tiny_gpt2(16),
        args=example.training_args(str(tmp_path), 2),
        train_dataset=example.byte_sequences(16, 40),
        data_collator=example.pad_collate,
        pruning={"method": "ucb", "prune": 0.5},
    )
    with pytest.raises(TrainingDiverged, match="epoch 0: 20 of 20 training losses were NaN"):
        trainer.train()


def test_a_resume_from_a_checkpoint_without_the_pruner_says_so(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(FileNotFoundError, match="not saved by a DataPruningTrainer"):
        make(tmp_path).train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
