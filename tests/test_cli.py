"""The command line (dataprune.harness.cli): bad input and misleading options in one line,
compare's table, files and progress lines, flags that reach the runs, SIGTERM. The helpers here
run it for the other harness tests."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dataprune.harness import cli
from dataprune.harness.checkpoint import CHECKPOINT
from dataprune.harness.config import RunConfig
from dataprune.harness.data import formats, locate
from dataprune.harness.data.locate import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = resolve_data_dir()  # $DATAPRUNE_DATA_DIR, else ../shared/data
FASHION = SHARED / "fashion-mnist" / "train-images-idx3-ubyte.gz"
QUICK = ["--dataset", "digits", "--train-limit", "300", "--test-limit", "100", "--no-progress"]
SMALL = QUICK


def error_of(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dataprune: error:") and "\n" not in err, err
    return err


def train_ok(capsys, *argv: str) -> str:
    assert cli.main(["train", *QUICK, *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


# ------------------------------------------------------------------------ bad input


def test_cli_reports_bad_input_in_one_line(capsys, tmp_path):
    assert "--dataset 'nope'" in error_of(capsys, "train", "--dataset", "nope")
    assert "--model 'vit'" in error_of(capsys, "train", "--model", "vit")
    assert "ucb" in error_of(capsys, "train", "--method", "magic")
    assert "1.2" in error_of(capsys, "compare", "--prune", "0.5,1.2")
    assert "comma-separated" in error_of(capsys, "compare", "--prune", "half")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "cannot write" in error_of(capsys, "train", "--out", str(blocker / "sub"))


def test_cli_rejects_resume_from_another_configuration(capsys, tmp_path):
    out = str(tmp_path / "run")
    args = ["train", "--epochs", "1", "--no-progress", "--out", out, "--method", "random"]
    assert cli.main([*args, "--prune", "0.5"]) == 0
    err = error_of(capsys, *args, "--prune", "0.3", "--resume")
    assert "another configuration" in err and "prune=0.5" in err


def test_cli_reports_missing_and_corrupt_data_files(capsys, tmp_path, monkeypatch):
    offline = tuple(
        dataclasses.replace(d, urls=("http://127.0.0.1:9/" + d.filename,))
        for d in locate.DOWNLOADS["fashion-mnist"]
    )
    monkeypatch.setitem(locate.DOWNLOADS, "fashion-mnist", offline)
    err = error_of(capsys, "train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path))
    assert "offline" in err

    folder = tmp_path / "corrupt" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in formats.required_files("fashion-mnist"):
        (folder / name).write_bytes(b"not a gzip file")
    err = error_of(
        capsys, "train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "corrupt")
    )
    assert "fashion-mnist" in err


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


def test_cli_flags_and_defaults_are_the_run_config_fields():
    parser = cli.build_parser()
    args = parser.parse_args(["train"])
    config = cli._config(args, options={})
    assert config == RunConfig(), "train's flag defaults differ from RunConfig's"
    compare = parser.parse_args(["compare"])
    compare_config = cli._config(compare, options={}, method="full", prune=0.0)
    assert compare_config == dataclasses.replace(RunConfig(), epochs=15, out="runs/compare")
    assert math.isclose(RunConfig().lr, args.lr)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "full", "--prune-schedule", "linear"], "--prune-schedule 'linear' does not"),
        (["--method", "ucb", "--prune-schedule", "cosine"], "needs prune_end"),
        (["--method", "ucb", "--prune-end", "0.5"], "does not apply to prune_schedule='constant'"),
        (["--method", "ucb", "--prune-schedule", "step"], "one of: constant, linear, cosine"),
    ],
)
def test_bad_prune_schedule_flags_are_refused(capsys, argv, message):
    assert cli.main(["train", *SMALL, *argv]) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------ train and compare


def test_prune_schedule_and_every_reach_train_and_compare(capsys, tmp_path):
    schedule = ["--prune-schedule", "linear", "--prune-end", "0.8", "--epochs", "4"]
    argv = ["train", *SMALL, "--method", "ucb", "--prune", "0.2", *schedule, "--every", "2"]
    assert cli.main([*argv, "--out", str(tmp_path / "one")]) == 0, capsys.readouterr().err
    epochs = json.loads((tmp_path / "one" / "result.json").read_text())["epochs"]
    # each selection of 2 epochs takes the rate of its first: 0.2, then 0.6 (at epoch 2 of 0-3)
    assert [e["samples"] for e in epochs] == [240, 240, 120, 120]
    # a pruning method first: the untimed warm-up is full data without the pruning flags
    argv = ["compare", *SMALL, "--methods", "ucb,full,rs2", "--prune", "0.2", *schedule]
    assert cli.main([*argv, "--rescale", "--out", str(tmp_path / "cmp")]) == 0
    summary = json.loads((tmp_path / "cmp" / "results.json").read_text())["summary"]
    used = {(r["method"], r["prune"]): r["samples_used"] for r in summary}
    assert used == {("ucb", 0.2): 240 + 180 + 120 + 60, ("full", 0.0): 1200, ("rs2", 0.2): 600}


def test_compare_writes_table_json_csv_and_plots(capsys, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--methods", "full,random,ucb", "--prune", "0.3,0.6", "--epochs", "2"]
    assert cli.main([*argv, "--no-progress", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| method | prune |")
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 1 + 2 + 2
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert {(r["method"], r["prune"]) for r in summary} == {
        ("full", 0.0),
        ("random", 0.3),
        ("random", 0.6),
        ("ucb", 0.3),
        ("ucb", 0.6),
    }
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    for plot in ("accuracy_vs_time.png", "accuracy_vs_prune.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"

    # A rerun reuses the finished runs instead of training again.
    before = (out / "random-p0.3-s0" / "result.json").stat().st_mtime_ns
    assert cli.main([*argv, "--no-progress", "--out", str(out)]) == 0
    assert (out / "random-p0.3-s0" / "result.json").stat().st_mtime_ns == before


def test_compare_logs_plain_progress_lines_where_stderr_is_no_terminal(capsys, tmp_path):
    """Not tqdm's nested bars, whose carriage returns and escape codes fill a log file."""
    argv = ["compare", "--dataset", "digits", "--train-limit", "200", "--test-limit", "50"]
    argv += ["--methods", "full,random", "--epochs", "2", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert "dataprune: run 1 of 2: full p=0 seed 0\ndataprune: run 2 of 2: random p=0.5" in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--no-progress         hide progress" in capsys.readouterr().out  # was "progress bars"


def test_compare_with_the_static_scorers_and_few_epochs_runs(capsys, tmp_path):
    """score_epochs defaulted to 5, which made this ordinary command fail at --epochs 4."""
    argv = ["compare", *QUICK, "--methods", "full,el2n,forgetting,random", "--prune", "0.5"]
    assert cli.main([*argv, "--epochs", "2", "--out", str(tmp_path)]) == 0
    assert "el2n" in capsys.readouterr().out


@pytest.mark.skipif(not FASHION.is_file(), reason="Fashion-MNIST not found in ../shared/data")
@pytest.mark.parametrize("method", ["seta", "selective-backprop", "kakurenbo"])
def test_new_methods_train_and_compare_on_fashion_mnist(capsys, tmp_path, method):
    data = ["--dataset", "fashion-mnist", "--data-dir", str(SHARED), "--model", "mlp"]
    data += ["--train-limit", "2000", "--test-limit", "500", "--no-progress", "--epochs", "3"]
    out = tmp_path / "cmp"
    argv = ["compare", *data, "--methods", f"full,{method}", "--prune", "0.5", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    runs = json.loads((out / "results.json").read_text())["runs"]
    run = next(r for r in runs if r["config"]["method"] == method)
    assert run["final_accuracy"] > 0.6  # chance is 0.1
    summary = run["pruner_summary"]
    if method == "selective-backprop":  # every sample forwarded, half of each batch trained
        assert summary["samples_used"] == 3 * 2000
        # 15 batches of 128 and one of 80 a rank: 15 * 64 + 40 back-propagated an epoch
        assert summary["samples_backpropagated"] == 3 * (15 * 64 + 40)
    else:
        assert summary["samples_used"] == 3 * 1000
    if method == "kakurenbo":  # the hidden half is forwarded after each epoch, and recorded
        assert summary["samples_forwarded"] == 3 * 2000


def test_a_policy_defined_in_one_file_runs_through_compare(capsys, tmp_path, toy_method):
    argv = ["compare", *QUICK, "--methods", "full,toy-lowest-loss", "--prune", "0.5"]
    assert cli.main([*argv, "--epochs", "2", "--toy-margin", "0.1", "--out", str(tmp_path)]) == 0
    assert "toy-lowest-loss" in capsys.readouterr().out
    saved = (tmp_path / "toy-lowest-loss-p0.5-s0" / "result.json").read_text()
    assert '"margin": 0.1' in saved


# ---------------------------------------------------------------------------- signals


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
