"""Runs and grids (dataprune.harness.runner): a run on real data, an interrupted grid resumed,
a result reused only from the same code and data, and an --out never overwritten unasked."""

from __future__ import annotations

import dataclasses
import json

import pytest
import test_trainer
import torch
from test_cli import FASHION, QUICK, SHARED, error_of, train_ok
from test_trainer import quick

from dataprune.errors import RunError
from dataprune.harness.config import RunConfig
from dataprune.harness.runner import run
from dataprune.harness.trainer import train

digits = test_trainer.digits  # the fixture, shared with test_trainer.py


@pytest.mark.skipif(not FASHION.is_file(), reason="Fashion-MNIST not found in ../shared/data")
def test_fashion_mnist_run_on_real_data(tmp_path):
    config = RunConfig(
        dataset="fashion-mnist",
        data_dir=str(SHARED),
        model="cnn",
        method="random",
        prune=0.5,
        epochs=3,
        batch_size=64,
        train_limit=4000,
        test_limit=1000,
        progress=False,
    )
    result = run(config.resolve())
    assert result.final_accuracy > 0.6  # chance is 0.10


def test_interrupted_grid_resumes_unfinished_runs(digits, tmp_path):
    from dataprune.harness.runner import run_grid

    config = quick(method="ucb", prune=0.5, out=str(tmp_path / "run"))
    (stopped,) = run_grid(
        [dataclasses.replace(config, stop_after=2).resolve()], out=None, progress=False
    )
    assert len(stopped.epochs) == 2 and not (tmp_path / "run" / "result.json").exists()
    (resumed,) = run_grid([config.resolve()], out=None, progress=False)
    straight, _ = train(dataclasses.replace(config, out=None).resolve(), digits)
    assert [e.epoch for e in resumed.epochs] == [0, 1, 2, 3]
    assert [e.test_accuracy for e in resumed.epochs] == [e.test_accuracy for e in straight.epochs]


def test_grid_reuses_a_result_only_of_the_same_behaviour_and_data(tmp_path):
    from dataprune.harness.behaviour import digests
    from dataprune.harness.provenance import git_commit, source_tree
    from dataprune.harness.runner import run_grid

    config = quick(method="random", prune=0.5, epochs=1, train_limit=500, out=str(tmp_path))
    (first,) = run_grid([config.resolve()], out=None, progress=False)
    saved = json.loads((tmp_path / "result.json").read_text())["provenance"]
    assert saved == {
        "commit": git_commit(),
        "source": source_tree(),
        "behaviour": digests("random"),
        "torch": torch.__version__,
        "train_samples": 500,
        "test_samples": 360,
    }  # digits is embedded: no files to checksum
    result = json.loads((tmp_path / "result.json").read_text())
    result["provenance"]["commit"] = "0" * 40  # a commit or a refactor changes only these
    result["provenance"]["source"] = "1" * 64
    (tmp_path / "result.json").write_text(json.dumps(result))
    (again,) = run_grid([config.resolve()], out=None, progress=False)
    assert again.epochs == first.epochs  # reused, not rerun
    for field, value, shown in (("torch", "1.0", "torch='1.0'"), ("behaviour", {}, "behaviour={}")):
        changed = {**result, "provenance": {**result["provenance"], field: value}}
        (tmp_path / "result.json").write_text(json.dumps(changed))
        with pytest.raises(RunError, match=rf"^\S+ was produced from other code or data \({shown}"):
            run_grid([config.resolve()], out=None, progress=False)


# ---------------------------------------------------------------------- the --out folder


def test_training_never_overwrites_a_checkpoint_without_being_asked(capsys, tmp_path):
    out = str(tmp_path / "run")
    train_ok(capsys, "--epochs", "2", "--out", out, "--stop-after", "1")
    err = error_of(capsys, "train", *QUICK, "--epochs", "3", "--out", out)
    assert "another configuration" in err and "epochs=2 (now 3)" in err and "--overwrite" in err
    err = error_of(capsys, "train", *QUICK, "--epochs", "2", "--out", out)
    assert "already holds this run's checkpoint (1 epoch done)" in err and "--resume" in err
    train_ok(capsys, "--epochs", "2", "--out", out, "--resume")
    assert "over 3 epochs" in train_ok(capsys, "--epochs", "3", "--out", out, "--overwrite")


def test_resume_before_any_checkpoint_starts_from_the_first_epoch(capsys, tmp_path):
    """SIGINT before the first checkpoint advised --resume, which then failed."""
    out = train_ok(capsys, "--epochs", "1", "--out", str(tmp_path / "new"), "--resume")
    assert "over 1 epochs" in out
