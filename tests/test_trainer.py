"""The training loop (dataprune.harness.trainer) on real data: learning, reproducibility, wall
time, exact resume, full-matched's steps, kakurenbo's measurement, the end of each epoch,
divergence, and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_cli import FASHION, QUICK, SHARED, train_ok

from dataprune.harness import cli
from dataprune.harness.checkpoint import CHECKPOINT
from dataprune.harness.config import RunConfig
from dataprune.harness.data import load_dataset
from dataprune.harness.trainer import _make_schedule, train


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


def test_peek_keeping_steps_trains_full_trainings_steps_and_resumes(digits, tmp_path):
    config = quick(method="peek", prune=0.7, epochs=3, options={"steps": True})
    result, _ = train(config.resolve(), digits)
    full, _ = train(quick(method="full", epochs=3).resolve(), digits)
    assert result.steps == full.steps == 3 * 23  # ceil(1437 / 64) steps an epoch
    assert [e.samples for e in result.epochs] == [431] * 3  # round(0.3 * 1437)
    assert result.final_accuracy > 0.8
    out = str(tmp_path / "run")
    train(dataclasses.replace(config, out=out, stop_after=1).resolve(), digits)
    resumed, _ = train(dataclasses.replace(config, out=out, resume=True).resolve(), digits)
    assert [e.test_accuracy for e in resumed.epochs] == [e.test_accuracy for e in result.epochs]


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


# ------------------------------------------------------------------------- divergence


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


# ---------------------------------------------------------------------------- schedule


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
