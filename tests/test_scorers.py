"""Static scorers: EL2N, GraNd, forgetting; score files, class balancing, timing, export."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from test_cli import QUICK, error_of

from dataprune import Pruner
from dataprune.harness.config import RunConfig
from dataprune.harness.coreset import export_coreset
from dataprune.harness.data import load_dataset
from dataprune.harness.methods import scorers as scorer_names
from dataprune.harness.models import build_model
from dataprune.harness.scoring import run as scorers
from dataprune.harness.scoring.run import (
    ScoreResult,
    compute_scores,
    load_scores,
    run_static,
    save_scores,
)
from dataprune.harness.scoring.scorers import (
    ForgettingTracker,
    class_balanced_scores,
    class_balanced_topk,
    el2n_from_logits,
    grand_scores,
)
from dataprune.harness.trainer import train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_limit=300, test_limit=100)


def small_config(**changes) -> RunConfig:
    base = dict(
        dataset="digits",
        model="mlp",
        method="el2n",
        prune=0.5,
        epochs=2,
        batch_size=64,
        score_epochs=1,
        score_runs=1,
        progress=False,
    )
    base.update(changes)
    config = RunConfig(**base)
    # the scorer settings above, left at their defaults where the method does not use them
    return config.for_method(config.method, config.prune, config.seed)


def static_subset(scores: torch.Tensor, prune: float) -> torch.Tensor:
    pruner = Pruner(scores.numel(), method="static-score", prune=prune, epochs=1, scores=scores)
    pruner.set_epoch(0)
    return pruner.indices()


# ----------------------------------------------------------------------------------- EL2N
def test_el2n_is_zero_when_softmax_equals_the_label():
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    scores = el2n_from_logits(logits, torch.tensor([0, 2]))
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, torch.zeros(2), atol=1e-6)


def test_el2n_matches_a_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    e = [math.exp(1), math.exp(2), math.exp(3)]
    p = [v / sum(e) for v in e]  # 0.0900, 0.2447, 0.6652
    label = 1
    expected = math.sqrt(p[0] ** 2 + (p[1] - 1) ** 2 + p[2] ** 2)
    got = el2n_from_logits(logits, torch.tensor([label]))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert got.item() == pytest.approx(1.01049, abs=1e-5)
    # a maximally wrong confident prediction has the largest possible score, sqrt(2)
    worst = el2n_from_logits(torch.tensor([[0.0, 100.0, 0.0]]), torch.tensor([0]))
    assert worst.item() == pytest.approx(math.sqrt(2), abs=1e-6)


# ----------------------------------------------------------------------------------- GraNd
def _loop_grad_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        total = sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None)
        out.append(total.sqrt())
    model.zero_grad(set_to_none=True)
    return torch.stack(out).detach()


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_grand_matches_a_per_sample_autograd_loop(digits, name):
    torch.manual_seed(0)
    model = build_model(name, digits.in_channels, digits.num_classes, digits.image_size)
    # Non-trivial BatchNorm running statistics, so eval mode is actually exercised.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.train()
    x, y = digits.train_x[:8], digits.train_y[:8]
    got = grand_scores(model, x, y, batch_size=5)  # chunks of 5 and 3
    assert model.training  # mode restored
    expected = _loop_grad_norms(model, x, y)
    assert got.shape == (8,) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ forgetting
def _reference_counts(batches, n):
    """Plain sequential reference: presentations in batch order."""
    last = [False] * n
    forgotten = [0] * n
    learned = [False] * n
    for indices, flags in batches:
        for i, c in zip(indices, flags, strict=True):
            forgotten[i] += int(last[i] and not c)
            learned[i] |= c
            last[i] = c
    return forgotten, learned


def test_forgetting_counts_follow_a_scripted_sequence():
    T, F_ = True, False
    batches = [
        ([0, 1, 2, 3, 4], [T, F_, T, F_, F_]),
        ([0, 1, 2, 3, 4], [F_, T, T, F_, F_]),  # 0 forgets (1)
        ([0, 0, 1, 2, 4], [T, F_, F_, T, F_]),  # 0: F->T->F (2), 1 forgets (1)
        ([3, 0, 3, 5], [T, F_, F_, T]),  # 3: F->T->F (1); 5 first seen, correct
        ([2, 1, 0, 5, 5], [F_, T, T, F_, T]),  # 2 forgets (1), 5 forgets (1)
        ([0, 1, 2, 3, 5], [F_, F_, F_, T, T]),  # 0 (3), 1 (2), 2 stays wrong
    ]
    n = 7  # sample 4 is never correct, sample 6 never presented
    tracker = ForgettingTracker(n)
    for indices, flags in batches:
        tracker.update_flags(torch.tensor(indices), torch.tensor(flags))
    expected, learned = _reference_counts(batches, n)
    assert expected == [3, 2, 1, 1, 0, 1, 0]
    assert tracker.forgotten.tolist() == expected
    scores = tracker.scores()
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    # never learned (4: always wrong, 6: never seen) score above every learned sample
    assert scores.tolist() == [3.0, 2.0, 1.0, 1.0, 4.0, 1.0, 4.0]
    assert tracker.summary()["never_learned"] == 2


def test_forgetting_update_reads_the_training_logits_and_is_order_independent():
    labels = torch.tensor([0, 1, 2, 0])
    indices = torch.tensor([2, 0, 2, 1])
    right = F.one_hot(labels, 3).float() * 5
    wrong = F.one_hot((labels + 1) % 3, 3).float() * 5
    a = ForgettingTracker(3)
    a.update(indices, right, labels)
    a.update(indices, wrong, labels)  # every sample goes right -> wrong once
    # sample 2 is presented right, right, wrong, wrong -> one forgetting event
    assert a.forgotten.tolist() == [1, 1, 1]
    b = ForgettingTracker(3)
    b.update(indices, torch.stack([right[0], right[1], wrong[2], right[3]]), labels)
    # sample 2 within one batch: right then wrong (batch order) -> one event
    assert b.forgotten.tolist() == [0, 0, 1]
    assert b.last.tolist() == [True, True, False]


# ---------------------------------------------------------------------- computed scores, timing
@pytest.mark.parametrize("name", scorer_names())
def test_compute_scores_gives_one_finite_score_per_sample(digits, name):
    config = small_config(method=name, score_runs=2 if name == "el2n" else 1)
    result = compute_scores(name, config.resolve(), digits)
    assert result.name == name
    assert result.scores.shape == (digits.num_train,)
    assert result.scores.dtype == torch.float32 and torch.isfinite(result.scores).all()
    assert result.seconds > 0
    assert result.scores.std() > 0  # the samples are told apart
    if name == "el2n":
        assert float(result.scores.min()) >= 0 and float(result.scores.max()) <= math.sqrt(2)
        assert len(result.details["accuracy"]) == 2


def test_scoring_time_is_charged_to_the_run(digits):
    result, _ = run_static(small_config(epochs=1).resolve(), digits)
    assert result.scores_source == "computed"
    assert result.scoring_seconds > 0
    first = result.epochs[0]
    assert first.wall_seconds >= result.scoring_seconds + first.train_seconds
    assert first.samples == 150  # k = round(0.5 * 300)


def test_a_loaded_score_file_gives_the_same_subset_and_reports_its_cost(digits, tmp_path):
    path = tmp_path / "el2n.pt"
    computed_run, computed_model = run_static(small_config(scores_file=str(path)).resolve(), digits)
    assert path.is_file() and computed_run.scores_source == "computed"
    saved = load_scores(path, digits.num_train)
    assert saved.name == "el2n" and saved.seconds == computed_run.scoring_seconds

    fresh = compute_scores("el2n", small_config().resolve(), digits)  # same seeds -> same scores
    assert torch.allclose(fresh.scores, saved.scores, atol=1e-6)
    assert torch.equal(static_subset(fresh.scores, 0.5), static_subset(saved.scores, 0.5))

    loaded_run, loaded_model = run_static(small_config(scores_file=str(path)).resolve(), digits)
    assert loaded_run.scores_source == str(path)
    assert loaded_run.scoring_seconds == saved.seconds
    assert loaded_run.epochs[0].wall_seconds >= saved.seconds
    # same subset and seed -> the very same training
    computed_state, loaded_state = computed_model.state_dict(), loaded_model.state_dict()
    assert computed_state.keys() == loaded_state.keys()
    for key, value in computed_state.items():
        assert torch.equal(value, loaded_state[key]), key
    assert loaded_run.final_accuracy == computed_run.final_accuracy


def test_a_resumed_run_reuses_the_scores_it_computed(digits, tmp_path, monkeypatch):
    config = small_config(method="forgetting", epochs=2, out=str(tmp_path / "run"))
    first, _ = run_static(config.resolve(), digits)
    assert (tmp_path / "run" / "scores.pt").is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError("scores were computed again")

    monkeypatch.setattr(scorers, "compute_scores", must_not_run)
    resumed, _ = run_static(dataclasses.replace(config, resume=True).resolve(), digits)
    assert resumed.scores_source == "computed"
    assert resumed.scoring_seconds == first.scoring_seconds
    assert [e.to_dict() for e in resumed.epochs] == [e.to_dict() for e in first.epochs]


# ----------------------------------------------------------------------------- bad input
def test_bad_score_files_and_settings_are_rejected(digits, tmp_path):
    short = tmp_path / "short.pt"
    save_scores(short, ScoreResult(torch.rand(10), 1.5, "el2n"))
    with pytest.raises(ValueError, match=r"has 10 scores but the dataset has 300 samples"):
        load_scores(short, digits.num_train)
    with pytest.raises(ValueError, match="has 10 scores but the dataset has 300"):
        run_static(small_config(scores_file=str(short)).resolve(), digits)

    nan = tmp_path / "nan.pt"
    scores = torch.rand(300)
    scores[[3, 7]] = float("nan")
    torch.save({"scores": scores, "seconds": 1.0, "name": "el2n", "details": {}}, nan)
    with pytest.raises(ValueError, match="holds 2 NaN or inf scores"):
        load_scores(nan, 300)
    with pytest.raises(ValueError, match="NaN or inf"):
        save_scores(tmp_path / "x.pt", ScoreResult(scores, 1.0, "el2n"))
    assert not (tmp_path / "x.pt").exists()

    with pytest.raises(ValueError, match="score_epochs=0"):
        compute_scores("el2n", small_config(score_epochs=0).resolve(), digits)
    with pytest.raises(ValueError, match="score_runs=0"):
        compute_scores("grand", small_config(score_runs=0).resolve(), digits)
    with pytest.raises(ValueError, match="score_epochs=0"):
        run_static(small_config(score_epochs=0).resolve(), digits)
    other = tmp_path / "grand.pt"
    save_scores(other, ScoreResult(torch.rand(300), 1.0, "grand"))
    with pytest.raises(ValueError, match="holds 'grand' scores, but method='el2n'"):
        run_static(small_config(scores_file=str(other)).resolve(), digits)
    with pytest.raises(ValueError, match="scorer='nope'"):
        compute_scores("nope", small_config().resolve(), digits)


@pytest.mark.parametrize(
    ("field", "value"), [("seconds", "abc"), ("seconds", -1.0), ("name", 7), ("details", [1])]
)
def test_a_score_file_with_a_damaged_field_is_one_line_naming_the_file_and_field(
    field, value, tmp_path, capsys
):
    """Not "could not convert string to float: 'abc'", naming neither, as an internal error."""
    from dataprune.harness import cli

    path = tmp_path / "scores.pt"
    state = {"scores": torch.rand(50), "seconds": 1.0, "name": "el2n", "details": {}}
    torch.save({**state, field: value}, path)
    assert cli.main(["export-coreset", str(path), "--prune", "0.5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"score file {path} is damaged: its {field}={value!r} is not" in err


# ------------------------------------------------------------------------- class balancing
def test_class_balanced_keeps_proportions_and_the_exact_total():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    scores = torch.rand(100, generator=torch.Generator().manual_seed(1))
    k = 33  # exact quotas 16.5, 9.9, 6.6 -> floors 16, 9, 6, remainders give 1 and 2 one more
    keep = class_balanced_topk(scores, labels, k)
    assert keep.numel() == k and torch.equal(keep, keep.unique())
    assert torch.bincount(labels[keep], minlength=3).tolist() == [16, 10, 7]
    for c, q in enumerate([16, 10, 7]):  # the top scores inside each class
        members = (labels == c).nonzero().squeeze(1)
        top = members[scores[members].argsort(descending=True)[:q]]
        assert set(keep.tolist()) >= set(top.tolist())
    # the derived score vector makes static-score keep exactly those indices
    balanced = class_balanced_scores(scores, labels, k)
    assert torch.equal(static_subset(balanced, 1 - k / 100), keep)


def test_class_balanced_on_real_labels(digits):
    scores = torch.rand(digits.num_train, generator=torch.Generator().manual_seed(0))
    k = 97
    keep = class_balanced_topk(scores, digits.train_y, k)
    assert keep.numel() == k
    counts = torch.bincount(digits.train_y, minlength=10).double()
    kept = torch.bincount(digits.train_y[keep], minlength=10).double()
    assert torch.all((kept - counts * k / digits.num_train).abs() < 1)


def test_class_balanced_run_trains_on_k_samples(digits):
    result, _ = run_static(small_config(epochs=1, class_balanced=True).resolve(), digits)
    assert result.epochs[0].samples == 150


# ----------------------------------------------------------------------------------- export
def test_export_coreset_from_a_score_file(tmp_path):
    path = tmp_path / "scores.pt"
    scores = torch.rand(40, generator=torch.Generator().manual_seed(2))
    save_scores(path, ScoreResult(scores, 2.0, "grand"))
    summary = export_coreset(str(path), 0.25, str(tmp_path / "core.pt"))
    assert summary["kind"] == "scores" and summary["k"] == 30
    exported = torch.load(tmp_path / "core.pt", weights_only=True)
    assert set(exported["indices"].tolist()) == set(scores.argsort(descending=True)[:30].tolist())
    rows = Path(summary["csv"]).read_text().splitlines()
    assert rows[0] == "index,score" and len(rows) == 31
    first_index, first_score = rows[1].split(",")
    assert int(first_index) == int(scores.argmax())
    assert float(first_score) == pytest.approx(float(scores.max()))


def test_export_coreset_from_a_run_folder(digits, tmp_path):
    run_dir = tmp_path / "run"
    config = small_config(method="random", prune=0.5, epochs=2, out=str(run_dir))
    train(config.resolve(), digits, evaluate_each_epoch=False)
    summary = export_coreset(str(run_dir), 0.5, str(tmp_path / "core"))
    assert summary["kind"] == "run" and summary["method"] == "random"
    exported = torch.load(summary["pt"], weights_only=True)
    indices = exported["indices"]
    assert indices.numel() == 150 == summary["k"]
    assert indices.unique().numel() == 150
    assert int(indices.min()) >= 0 and int(indices.max()) < digits.num_train
    # selection frequencies in {0, 0.5, 1}, best first
    assert set(exported["scores"].tolist()) <= {0.0, 0.5, 1.0}
    assert torch.all(exported["scores"][:-1] >= exported["scores"][1:])
    with pytest.raises(FileNotFoundError, match="without checkpoint.pt"):
        export_coreset(str(tmp_path), 0.5, str(tmp_path / "x"))


def _shard_scores(model, data) -> dict[str, torch.Tensor]:
    config = small_config()
    return {
        name: scorers.scored_in_shards(data.num_train, scorers._scorer(name, model, data, config))
        for name in ("el2n", "grand")
    }


def _scoring_worker(rank: int, world_size: int, tmp: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world_size
    )
    torch.set_num_threads(1)
    try:
        data = load_dataset("digits", train_limit=301, test_limit=10)
        torch.manual_seed(0)
        model = build_model("cnn", data.in_channels, data.num_classes, data.image_size)
        for buffer in model.buffers():  # as if each rank's last batches moved its BatchNorm
            if buffer.is_floating_point():
                buffer.add_(rank)
        results = _shard_scores(model, data)
        # one sample for two ranks: rank 0's share is empty
        grand = scorers._scorer("grand", model, data, small_config())
        results["one sample"] = scorers.scored_in_shards(1, grand)
        torch.save(results, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_score_their_own_shares_with_one_model_and_all_get_every_score(tmp_path):
    mp.spawn(_scoring_worker, args=(2, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    data = load_dataset("digits", train_limit=301, test_limit=10)
    torch.manual_seed(0)
    model = build_model("cnn", data.in_channels, data.num_classes, data.image_size)
    alone = _shard_scores(model, data)
    assert torch.equal(ranks[0]["one sample"], ranks[1]["one sample"])
    torch.testing.assert_close(ranks[0]["one sample"], alone["grand"][:1], rtol=1e-4, atol=1e-6)
    for name, scores in alone.items():  # rank 0's BatchNorm statistics scored every share
        assert scores.shape == (301,)
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], scores, rtol=1e-4, atol=1e-6)


def test_a_file_that_is_not_a_score_file_is_one_line(capsys, tmp_path):
    junk = tmp_path / "scores.pt"
    junk.write_text("root:x:0:0:root:/root:/bin/bash\n")
    argv = ["train", *QUICK, "--method", "el2n", "--prune", "0.5", "--scores", str(junk)]
    assert "not a dataprune score file" in error_of(capsys, *argv)
