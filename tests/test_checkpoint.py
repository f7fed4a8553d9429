"""Checkpoints (dataprune.harness.checkpoint): a foreign, damaged or unusable one is one line
naming it, in every command that reads one."""

from __future__ import annotations

import pytest
import torch
from test_cli import QUICK, error_of, train_ok

from dataprune.harness.checkpoint import CHECKPOINT
from dataprune.harness.files import save_torch


def test_resume_with_a_foreign_or_damaged_checkpoint_is_one_line(capsys, tmp_path):
    out = tmp_path / "run"
    train_ok(capsys, "--epochs", "1", "--out", str(out))
    good = torch.load(out / CHECKPOINT, weights_only=True)
    cases = {
        "lacks identity": {k: v for k, v in good.items() if k != "identity"},
        "wrong model keys": {**good, "model": {"nope": torch.zeros(1)}},
    }
    for problem, state in cases.items():
        save_torch(state, out / CHECKPOINT)
        err = error_of(capsys, "train", *QUICK, "--epochs", "2", "--out", str(out), "--resume")
        assert str(out / CHECKPOINT) in err, problem


@pytest.mark.parametrize("command", ["analyze", "export-coreset", "train"])
def test_unusable_checkpoints_give_one_line_everywhere(capsys, tmp_path, command):
    good = tmp_path / "good"
    train_ok(capsys, "--method", "random", "--prune", "0.5", "--epochs", "1", "--out", str(good))
    state = torch.load(good / CHECKPOINT, weights_only=True)
    raw = (good / CHECKPOINT).read_bytes()
    cases = {
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "not torch": b"hello",
        "no pruner": {k: v for k, v in state.items() if k != "pruner"},
        "pruner without counts": {**state, "pruner": {"method": "random"}},
        "a list": [1, 2, 3],
    }
    for problem, content in cases.items():
        folder = tmp_path / problem.replace(" ", "-")
        folder.mkdir()
        if isinstance(content, bytes):
            (folder / CHECKPOINT).write_bytes(content)
        else:
            save_torch(content, folder / CHECKPOINT)
        argv = {
            "analyze": ["analyze", str(folder)],
            "export-coreset": [
                "export-coreset",
                str(folder),
                "--prune",
                "0.5",
                "--out",
                str(folder / "c"),
            ],
            "train": ["train", *QUICK, "--epochs", "1", "--out", str(folder), "--resume"],
        }[command]
        error_of(capsys, *argv)
