"""The training harness and CLI on real data: learning, exact resume, errors, reports."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dataprune.errors import RunError
from dataprune.harness import cli
from dataprune.harness.config import RunConfig
from dataprune.harness.data import formats, load_dataset, locate
from dataprune.harness.runner import run
from dataprune.harness.trainer import train

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FASHION = SHARED / "fashion-mnist" / "train-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def quick(**overrides) -> RunConfig:
    base = RunConfig(dataset="digits", model="cnn", epochs=4, batch_size=64, progress=False)
    return dataclasses.replace(base, **overrides)


def test_short_run_learns_far_above_chance(digits):
    result, _ = train(quick(method="ucb", prune=0.5).resolve(), digits)
    assert result.final_accuracy > 0.85  # chance is 0.10
    assert [e.samples for e in result.epochs] == [718] * 4  # round(0.5 * 1437), half to even
    assert result.pruner_summary["fraction_pruned"] == pytest.approx(1 - 718 / 1437)


def test_fixed_seed_reproduces_on_cpu(digits):
    a, model_a = train(quick(method="random", prune=0.3).resolve(), digits)
    b, model_b = train(quick(method="random", prune=0.3).resolve(), digits)
    assert [e.test_accuracy for e in a.epochs] == [e.test_accuracy for e in b.epochs]
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_wall_time_counts_every_phase(digits, tmp_path):
    config = quick(method="epsilon-greedy", prune=0.5, out=str(tmp_path))
    result, _ = train(config.resolve(), digits, scoring_seconds=7.0)
    total = 7.0
    for e in result.epochs:
        assert (e.checkpoint_seconds > 0) == (e.epoch > 0)  # the previous epoch's checkpoint
        total += e.train_seconds + e.selection_seconds + e.eval_seconds + e.checkpoint_seconds
        assert e.wall_seconds == pytest.approx(total, rel=1e-3, abs=0.05)
    assert result.time_to_accuracy(0.0) == result.epochs[0].wall_seconds
    assert result.time_to_accuracy(1.01) is None


@pytest.mark.parametrize("method", ["ucb", "rs2", "infobatch"])
def test_resume_after_interruption_matches_uninterrupted_run(digits, tmp_path, method):
    config = quick(method=method, prune=0.5, epochs=5)
    full_run, full_model = train(
        dataclasses.replace(config, out=str(tmp_path / "a")).resolve(), digits
    )

    class Stop(Exception):
        pass

    seen_batches = []

    def stop_in_epoch_3(indices, logits, labels):
        seen_batches.append(1)
        if len(seen_batches) > 3 * 12:  # 12 batches an epoch: 718 samples at batch 64
            raise Stop

    interrupted = dataclasses.replace(config, out=str(tmp_path / "b"))
    with pytest.raises(Stop):
        train(interrupted.resolve(), digits, on_batch=stop_in_epoch_3)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert saved["pruner"]["progress"]["epoch"] == 2

    resumed, resumed_model = train(dataclasses.replace(interrupted, resume=True).resolve(), digits)
    assert [e.test_accuracy for e in resumed.epochs] == [e.test_accuracy for e in full_run.epochs]
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    for name, tensor in full_state.items():
        assert torch.equal(tensor, resumed_state[name]), name


@pytest.mark.parametrize(
    "pruning",
    [
        dict(prune=0.5),
        dict(prune=0.7),
        dict(prune=0.3, prune_schedule="linear", prune_end=0.7, warmup_epochs=1),
    ],
)
def test_full_matched_trains_exactly_the_pruned_runs_steps(digits, pruning):
    pruned, _ = train(quick(method="random", epochs=5, **pruning).resolve(), digits)
    matched, _ = train(quick(method="full-matched", epochs=5, **pruning).resolve(), digits)
    assert matched.steps == pruned.steps == matched.config.resolve().step_budget(1437)
    # full data each epoch, up to the budget, which ends within the last epoch
    assert [e.samples for e in matched.epochs[:-1]] == [1437] * (len(matched.epochs) - 1)
    assert 0 < matched.epochs[-1].samples <= 1437
    assert abs(matched.samples_used - pruned.samples_used) < 64 * 5  # a batch an epoch at most


def test_full_matched_budgets_differ_by_prune_rate():
    steps = [
        quick(method="full-matched", prune=p, epochs=5).resolve().step_budget(1437)
        for p in (0.5, 0.7)
    ]
    assert steps == [5 * 12, 5 * 7]  # ceil(719 / 64) and ceil(431 / 64) steps an epoch


# ------------------------------------------------------------------------------------ CLI
def error_of(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dataprune: error:") and "\n" not in err
    return err


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


SMALL = ["--dataset", "digits", "--train-limit", "300", "--test-limit", "100", "--no-progress"]


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


def test_kakurenbo_measures_hidden_samples_and_resumes(digits, tmp_path):
    config = quick(method="kakurenbo", prune=0.5, epochs=3, options={"tau": 0.6})
    result, _ = train(config.resolve(), digits)
    assert result.final_accuracy > 0.8
    assert [e.samples for e in result.epochs] == [718] * 3
    summary = result.pruner_summary
    assert summary["samples_forwarded"] == 3 * 1437  # trained + measured after each epoch
    assert summary["samples_backpropagated"] == 3 * 718
    # a run stopped after epoch 1 and resumed ends where the uninterrupted one does
    out = str(tmp_path / "run")
    train(dataclasses.replace(config, out=out, stop_after=1).resolve(), digits)
    resumed, _ = train(dataclasses.replace(config, out=out, resume=True).resolve(), digits)
    assert [e.test_accuracy for e in resumed.epochs] == [e.test_accuracy for e in result.epochs]


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


def test_analyze_plots_selection_frequency_and_churn(tmp_path):
    config = quick(method="ucb", prune=0.5, epochs=3, out=str(tmp_path / "run"))
    run(config.resolve())
    assert cli.main(["analyze", str(tmp_path / "run")]) == 0
    for plot in ("selection_frequency.png", "selection_churn.png"):
        assert (tmp_path / "run" / plot).read_bytes()[:4] == b"\x89PNG"


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


@pytest.mark.skipif(not FASHION.is_file(), reason="Fashion-MNIST not found in ../shared/data")
def test_infobatch_does_not_diverge_where_full_does_not():
    # At prune 0.7 the unbounded weights (N / k = 3.3 in the unseen first epoch, |H| / k later)
    # multiplied the step: two of these three seeds diverged (most losses NaN), one reached 59%.
    data = load_dataset("fashion-mnist", SHARED, train_limit=2000, test_limit=1000)
    base = RunConfig(
        dataset="fashion-mnist", model="mlp", epochs=4, batch_size=64, lr=0.1, progress=False
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: one thread is faster on a busy machine
    try:
        for seed in range(3):
            full, _ = train(dataclasses.replace(base, seed=seed).resolve(), data)
            pruned, _ = train(
                dataclasses.replace(base, method="infobatch", prune=0.7, seed=seed).resolve(), data
            )
            assert full.final_accuracy > 0.75
            assert pruned.final_accuracy > full.final_accuracy - 0.08
            assert all(e.nonfinite_losses == 0 for e in pruned.epochs)
    finally:
        torch.set_num_threads(threads)


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


def test_schedules_with_few_steps_and_full_data_with_warmup_flags(digits):
    # 1437 training samples at batch 360: exactly 4 steps, where OneCycleLR divides by zero.
    result, _ = train(quick(method="full", epochs=1, batch_size=360).resolve(), digits)
    assert len(result.epochs) == 1
    # full-matched's budget, half of 2 epochs of 4 steps, is exactly one full epoch.
    config = quick(method="full-matched", prune=0.5, epochs=2, batch_size=360)
    result, _ = train(config.resolve(), digits)
    assert [(e.samples, e.steps) for e in result.epochs] == [(1437, 4)]


def test_the_harness_ends_each_epoch_once_after_its_last_batch(digits):
    from dataprune.policies import POLICIES, register
    from dataprune.policies.kakurenbo import Kakurenbo

    seen_when_measured = []

    class Counting(Kakurenbo):
        name = "counting-kakurenbo"

        def remeasure(self, ctx, hidden):
            seen_when_measured.append(int(ctx.stats.seen.sum()))
            return hidden

    register(Counting)
    try:
        config = quick(method="counting-kakurenbo", prune=0.5, epochs=2)
        train(config.resolve(), digits)
    finally:
        POLICIES.pop(Counting.name)
    # after epoch 0's 718 trained samples (not after its first batch), then after epoch 1's
    assert seen_when_measured == [718, 1437]
