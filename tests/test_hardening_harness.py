"""The harness and CLI under hostile input: diverging runs, foreign checkpoints, shared folders,
signals, misleading defaults. Each test pins one defect a review found."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dataprune.harness import cli
from dataprune.harness.checkpoint import CHECKPOINT
from dataprune.harness.config import RunConfig
from dataprune.harness.data import DatasetError, locate, verify_dataset
from dataprune.harness.files import LOCK, locked_folder, save_torch, write_text
from dataprune.harness.trainer import _make_schedule

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
FASHION = SHARED / "fashion-mnist"
QUICK = ["--dataset", "digits", "--train-limit", "300", "--test-limit", "100", "--no-progress"]


def error_of(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dataprune: error:") and "\n" not in err, err
    return err


def train_ok(capsys, *argv: str) -> str:
    assert cli.main(["train", *QUICK, *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


# ------------------------------------------------------------------------- divergence
def test_the_reviews_diverging_run_finishes_and_resumes(capsys, tmp_path):
    """``--alpha 1 --lr 300``: losses near 1e19 once overflowed the variance into NaN, and every
    --resume then died in selection ("kth out of bounds"). Now the statistics saturate."""
    out = str(tmp_path / "x")
    argv = ["--method", "ucb", "--prune", "0.5", "--alpha", "1", "--lr", "300", "--epochs", "4"]
    train_ok(capsys, *argv, "--out", out, "--stop-after", "2")
    stats = torch.load(Path(out) / CHECKPOINT, weights_only=True)["pruner"]["stats"]
    assert bool(torch.isfinite(stats).all())
    assert "over 4 epochs" in train_ok(capsys, *argv, "--out", out, "--resume")


def test_a_run_whose_losses_turn_nan_stops_in_one_line_and_so_does_its_resume(capsys, tmp_path):
    out = str(tmp_path / "x")
    argv = ["train", *QUICK, "--method", "ucb", "--prune", "0.5", "--lr", "1e6", "--epochs", "4"]
    assert cli.main([*argv, "--out", out]) == 2
    *warnings, err = capsys.readouterr().err.strip().splitlines()
    assert "the mean training loss is" in warnings[0]  # finite, but 1000x the first epoch's
    assert any("NaN or inf losses in epoch" in w for w in warnings)
    assert "Traceback" not in "".join(warnings)
    assert err.startswith("dataprune: error: epoch") and "training diverged" in err
    assert (tmp_path / "x" / CHECKPOINT).is_file()  # what was trained is kept
    assert cli.main([*argv, "--out", out, "--resume"]) == 2
    assert "training diverged" in capsys.readouterr().err.strip().splitlines()[-1]


# -------------------------------------------------------------------------- checkpoints
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


def test_a_second_run_into_a_locked_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "busy"
    with locked_folder(out):
        err = error_of(capsys, "train", *QUICK, "--epochs", "1", "--out", str(out))
    assert "in use by another dataprune run" in err and f"pid {os.getpid()}" in err
    train_ok(capsys, "--epochs", "1", "--out", str(out))  # free again once released


def test_the_lock_clears_temporary_files_of_a_killed_writer(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"")
    with locked_folder(out):
        assert not stale.exists()
    assert (out / LOCK).exists()


def test_atomic_writes_fsync_and_honour_the_umask(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    old = os.umask(0o027)
    try:
        write_text("x", tmp_path / "a.txt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert len(synced) == 2  # the file, then its folder (the rename)
    os.umask(0o022)
    try:
        save_torch({"a": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o644


def test_sigterm_checkpoints_says_so_and_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "dataprune", "train", "--dataset", "digits", "--epochs", "40"]
    argv += ["--method", "ucb", "--prune", "0.5", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "terminated; every finished epoch is checkpointed" in err and "--resume" in err
    assert "Traceback" not in err
    done = torch.load(out / CHECKPOINT, weights_only=True)["pruner"]["progress"]["epoch"]
    assert 0 <= done < 39


# ---------------------------------------------------------------------------- downloads
def test_every_download_is_sha256_checked_and_https_first():
    for name, items in locate.DOWNLOADS.items():
        for item in items:
            assert item.urls[0].startswith("https://"), (name, item.urls)
            assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0


@pytest.mark.skipif(
    not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file(), reason="no Fashion-MNIST"
)
def test_verify_rechecks_files_on_disk(tmp_path, capsys):
    assert "4 file(s)" in verify_dataset("fashion-mnist", FASHION.resolve())
    copy = tmp_path / "fashion-mnist"
    copy.mkdir()
    for f in FASHION.glob("*.gz"):
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(DatasetError, match="t10k-labels.*differs from the expected"):
        verify_dataset("fashion-mnist", copy)
    err = error_of(
        capsys, "train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--verify"
    )
    assert "differs from the expected" in err


def test_verify_uses_the_manifest_of_an_unpacked_archive(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    files = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    for name in [*files, "test_batch"]:
        (folder / name).write_bytes(name.encode())
    assert "6 not checked" in verify_dataset("cifar10", folder)
    locate._write_manifest(folder, sorted(folder.iterdir()))
    assert "6 file(s)" in verify_dataset("cifar10", folder)
    (folder / "test_batch").write_bytes(b"changed")
    with pytest.raises(DatasetError, match="test_batch"):
        verify_dataset("cifar10", folder)


# ---------------------------------------------------------------- defaults and options
def test_compare_with_the_static_scorers_and_few_epochs_runs(capsys, tmp_path):
    """score_epochs defaulted to 5, which made this ordinary command fail at --epochs 4."""
    argv = ["compare", *QUICK, "--methods", "full,el2n,forgetting,random", "--prune", "0.5"]
    assert cli.main([*argv, "--epochs", "2", "--out", str(tmp_path)]) == 0
    assert "el2n" in capsys.readouterr().out


def test_momentum_is_what_the_flag_says_under_every_schedule():
    model = torch.nn.Linear(2, 2)
    for schedule in ("onecycle", "cosine", "step"):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.6, nesterov=True)
        config = RunConfig(schedule=schedule, momentum=0.6)
        sched = _make_schedule(optimizer, config, 20)
        for _ in range(10):
            optimizer.step()
            sched.step()
        assert optimizer.param_groups[0]["momentum"] == 0.6, schedule


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--momentum", "nan"], "--momentum nan"),
        (["train", "--momentum", "1.5"], "--momentum 1.5"),
        (["compare", "--target", "5"], "--target 5"),
        (["compare", "--target", "nan"], "--target nan"),
        (["train", "--method", "ucb", "--scores", "s.pt"], "it is not a static scorer"),
        (["compare", "--methods", "full,ucb", "--scores", "s.pt"], "--scores applies to none"),
        (["train", "--stop-after", "5", "--epochs", "2"], "--stop-after 5 must be <= 2"),
        (["train", "--seed", "9" * 30], "--seed 9999"),
        (["train", "--method", "random", "--ucb-c", "2"], "does not apply to method='random'"),
        (["compare", "--methods", "full,random", "--ucb-c", "2"], "applies to ucb"),
        (["train", "--ucb-c", "inf", "--method", "ucb"], "--ucb-c inf is not allowed"),
        (["train", "--weight-decay", "-1"], "--weight-decay -1.0"),
        (["compare", "--seeds", ",,"], "--seeds is empty"),
        (["compare", "--seeds", "0,0"], "repeats a seed"),
        (["compare", "--methods", "full,full"], "repeats a name"),
        (["compare", "--methods", ""], "--methods is empty"),
        (["compare", "--methods", "full", "--prune", "0.5"], "--prune applies to pruning"),
        (["train", "--train-limit", "99999"], "--train-limit 99999 exceeds the 1437 train"),
        (["train", "--out", ""], "--out '' is empty"),
        (["train", "--data-dir", ""], "--data-dir '' is empty"),
        (["train", "--batch-size", "100000000000"], "--batch-size 100000000000 must be <="),
        (["train", "--epochs", "10000000"], "--epochs 10000000 must be <= 1000000"),
        (["train", "--ucb-c", "1e39", "--method", "ucb"], "beyond float32's range"),
        (
            ["train", "--method", "ucb", "--prune", "0.5", "--warmup-epochs", "10"],
            "leave none of the 10",
        ),
        (["train", "--stop-after", "1"], "needs out"),
    ],
)
def test_misleading_options_are_refused_in_one_line(capsys, argv, fragment):
    assert fragment in error_of(capsys, *argv, "--no-progress")


def test_export_coreset_into_a_folder_writes_inside_it(capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_ok(capsys, "--method", "random", "--prune", "0.5", "--epochs", "1", "--out", str(run_dir))
    target = tmp_path / "coresets"
    target.mkdir()
    assert cli.main(["export-coreset", str(run_dir), "--prune", "0.5", "--out", str(target)]) == 0
    assert (target / "coreset.pt").is_file() and (target / "coreset.csv").is_file()
    assert not (tmp_path / "coresets.pt").exists()


def _import_reproduce():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import reproduce
    finally:
        sys.path.pop(0)
    return reproduce


def test_infobatch_anneal_default_is_one_definition():
    from dataprune import Pruner
    from dataprune.policies import POLICIES

    infobatch = POLICIES["infobatch"]
    assert [infobatch.default_anneal_epochs(e) for e in (1, 2, 4, 8, 12, 40)] == [0, 1, 1, 1, 2, 5]
    assert Pruner(100, "infobatch", 0.5, 4).anneal_epochs == 1  # was round(0.5) = 0
    reproduce = _import_reproduce()
    config = RunConfig(method="infobatch", epochs=4)
    assert reproduce._anneal(config) == infobatch.default_anneal_epochs(4)


def test_cli_flags_and_defaults_are_the_run_config_fields():
    parser = cli.build_parser()
    args = parser.parse_args(["train"])
    config = cli._config(args, options={})
    assert config == RunConfig(), "train's flag defaults differ from RunConfig's"
    compare = parser.parse_args(["compare"])
    compare_config = cli._config(compare, options={}, method="full", prune=0.0)
    assert compare_config == dataclasses.replace(RunConfig(), epochs=15, out="runs/compare")
    assert math.isclose(RunConfig().lr, args.lr)


def test_a_policy_defined_in_one_file_runs_through_compare(capsys, tmp_path, toy_method):
    argv = ["compare", *QUICK, "--methods", "full,toy-lowest-loss", "--prune", "0.5"]
    assert cli.main([*argv, "--epochs", "2", "--toy-margin", "0.1", "--out", str(tmp_path)]) == 0
    assert "toy-lowest-loss" in capsys.readouterr().out
    saved = (tmp_path / "toy-lowest-loss-p0.5-s0" / "result.json").read_text()
    assert '"margin": 0.1' in saved


def test_a_policy_defined_in_one_file_runs_through_the_reproduce_script(tmp_path, toy_method):
    reproduce = _import_reproduce()
    (smoke,) = reproduce.suites(smoke=True, data_dir=None, device="cpu")
    toy = [c for c in smoke.configs if c.method == "toy-lowest-loss"]
    assert [c.prune for c in toy] == [0.5]
    reproduce.run_suite(reproduce.Suite("smoke", smoke.title, toy), tmp_path)
    assert (tmp_path / "smoke" / "toy-lowest-loss-p0.5-s0" / "result.json").is_file()


def test_a_file_that_is_not_a_score_file_is_one_line(capsys, tmp_path):
    junk = tmp_path / "scores.pt"
    junk.write_text("root:x:0:0:root:/root:/bin/bash\n")
    argv = ["train", *QUICK, "--method", "el2n", "--prune", "0.5", "--scores", str(junk)]
    assert "not a dataprune score file" in error_of(capsys, *argv)
