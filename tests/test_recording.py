"""Pruner.record, loss, end_epoch, attach and lr_scale (dataprune.recording): the weighted mean
and its gradient, non-finite losses, the end of an epoch, the learning-rate scale through the
optimizer, and the errors of bad inputs."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from test_pruner import _raises

from dataprune import Pruner

# ------------------------------------------------------------------------------ record


def test_rescale_random_weights_and_weighted_mean():
    n = 100
    pruner = Pruner(n, "random", 0.75, 3, rescale=True, anneal_epochs=1)
    pruner.set_epoch(0)
    subset = pruner.indices()
    assert subset.numel() == 25
    batch = subset[:10]
    losses = torch.linspace(0.5, 5.0, 10)
    out = pruner.record(batch, losses)
    assert float(out) == pytest.approx(float((losses * 4.0).mean()), rel=1e-6)
    pruner.set_epoch(2)  # annealed full epoch: weight 1 again
    assert float(pruner.record(batch, losses)) == pytest.approx(float(losses.mean()), rel=1e-6)

    plain = Pruner(n, "random", 0.75, 3)
    plain.set_epoch(0)
    assert float(plain.record(batch, losses)) == pytest.approx(float(losses.mean()), rel=1e-6)


def test_record_result_is_differentiable():
    pruner = Pruner(10, "random", 0.5, 2, rescale=True)
    pruner.set_epoch(0)
    batch = pruner.indices()
    x = torch.ones(5, requires_grad=True)
    pruner.record(batch, x * 3).backward()
    assert torch.allclose(x.grad, torch.full((5,), 3 * 2 / 5))


def test_nan_and_inf_losses_are_logged_once_an_epoch(caplog):
    pruner = Pruner(8, "random", 0.0, 3)
    with caplog.at_level(logging.WARNING, logger="dataprune"):
        pruner.set_epoch(0)
        for _ in range(3):
            loss = pruner.record(torch.arange(4), torch.tensor([1.0, math.nan, math.inf, 2.0]))
        assert float(loss) == pytest.approx(1.5)  # the finite ones' mean
        pruner.set_epoch(1)
        pruner.record(torch.arange(4), torch.ones(4))
        pruner.set_epoch(2)
        pruner.record(torch.arange(2), torch.tensor([math.nan, 1.0]))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("2 NaN or inf losses in epoch 0 (2 in the run so far)")
    assert lines[1].startswith("1 NaN or inf losses in epoch 2 (7 in the run so far)")
    assert pruner.summary()["nonfinite_losses_skipped"] == 7


def test_an_inf_loss_still_gives_nan_gradients_as_documented():
    """record() leaves an inf loss out of the mean, but cannot cancel the NaN gradient of the
    graph behind it (0 * inf): the docs say so instead of promising a zero gradient."""
    p = torch.tensor([0.0, 0.5], requires_grad=True)
    pruner = Pruner(2, "full", 0.0, 1)
    pruner.set_epoch(0)
    pruner.record(torch.arange(2), -torch.log(p)).backward()
    assert math.isnan(float(p.grad[0])) and float(p.grad[1]) == pytest.approx(-2.0)
    assert "NaN whatever this" in Pruner.record.__doc__


def test_a_float64_loss_past_float32_range_is_skipped_not_stored_as_inf():
    """1e300 is finite in float64 but overflows the float32 statistics."""
    pruner = Pruner(10, "ucb", 0.5, 3)
    pruner.set_epoch(0)
    loss = pruner.record(torch.arange(10), torch.full((10,), 1e300, dtype=torch.float64))
    assert float(loss) == 0.0
    assert pruner.summary()["nonfinite_losses_skipped"] == 10
    assert bool(torch.isfinite(pruner.stats.table).all())


def test_bad_record_inputs():
    pruner = Pruner(10, "random", 0.5, 2)
    pruner.set_epoch(0)
    with _raises(IndexError, "num_samples=10", "[0, 10]"):
        pruner.record(torch.tensor([0, 10]), torch.ones(2))
    with _raises(IndexError, "num_samples=10", "[-1, 3]"):
        pruner.record(torch.tensor([-1, 3]), torch.ones(2))
    with _raises(TypeError, "indices", "torch.float32"):
        pruner.record(torch.tensor([0.0, 1.0]), torch.ones(2))
    with _raises(ValueError, "losses must have one entry per index", "(4,)", "got (3,)"):
        pruner.record(torch.arange(4), torch.ones(3))
    with _raises(ValueError, "indices must be 1-D", "(2, 2)"):
        pruner.record(torch.arange(4).view(2, 2), torch.ones(2, 2))
    with _raises(ValueError, "losses must have one entry per index", "(2, 2)"):
        pruner.record(torch.arange(2), torch.ones(2, 2))
    with _raises(ValueError, "scalar", "reduction='none'"):
        pruner.record(torch.arange(4), torch.ones(4).mean())
    with _raises(TypeError, "losses", "floating-point", "torch.int64"):
        pruner.record(torch.arange(2), torch.ones(2, dtype=torch.long))
    assert pruner.summary()["record_calls"] == 0
    assert not bool(pruner.stats.seen.any())


# --------------------------------------------------------- end_epoch, lr_scale, attach


def test_kakurenbo_end_epoch_measures_every_hidden_sample_in_eval_mode():
    n = 64
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    x = torch.randn(n, 3)
    pruner = Pruner(n, "kakurenbo", 0.5, 2, anneal_epochs=0)
    pruner.set_epoch(0)
    modes = []

    def sample_losses(rows: torch.Tensor) -> torch.Tensor:
        modes.append((model.training, torch.is_grad_enabled()))
        return model(x[rows]).pow(2).mean(1)

    for rows in pruner.indices().split(16):
        pruner.loss(rows, rows, sample_losses)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = pruner.stats.seen.clone()
    pruner.end_epoch(model, lambda rows: rows, sample_losses, batch_size=16)
    assert bool(pruner.stats.seen.all()) and not bool(seen.all())  # the hidden ones too
    assert modes[-1] == (False, False) and model.training  # measured in eval mode, restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    summary = pruner.summary()
    assert (summary["samples_forwarded"], summary["samples_backpropagated"]) == (n, n // 2)
    pruner.end_epoch(model, lambda rows: rows, sample_losses, batch_size=16)  # once an epoch
    assert pruner.summary()["samples_forwarded"] == n


def test_lr_scale_is_one_except_in_kakurenbo_pruned_epochs():
    pruner = Pruner(10, "kakurenbo", 0.5, 3, warmup_epochs=1, anneal_epochs=1)
    scales = []
    for epoch in range(3):
        pruner.set_epoch(epoch)
        scales.append(pruner.lr_scale())
    assert scales == [1.0, 2.0, 1.0]
    ucb = Pruner(10, "ucb", 0.5, 3)
    ucb.set_epoch(0)
    assert ucb.lr_scale() == 1.0
    scheduled = Pruner(100, "kakurenbo", 0.3, 3, prune_schedule="linear", prune_end=0.1)
    rates = []
    for epoch in range(3):
        scheduled.set_epoch(epoch)
        rates.append(scheduled.lr_scale())
    assert rates == pytest.approx([100 / 70, 100 / 80, 100 / 90])  # F decreasing over training


def test_attach_steps_at_the_scaled_rate_and_leaves_the_schedule_alone(caplog):
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    pruner = Pruner(10, "kakurenbo", 0.5, 2, anneal_epochs=0)
    pruner.attach(optimizer)
    pruner.attach(optimizer)  # once is enough: a second attach changes nothing
    pruner.set_epoch(0)
    weight.grad = torch.ones(2)
    optimizer.step()
    assert weight.tolist() == pytest.approx([0.8, 0.8])  # a step at 2 x 0.1
    assert optimizer.param_groups[0]["lr"] == 0.1  # restored: the schedule's own rate
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    with caplog.at_level("WARNING", logger="dataprune"):  # a scale and no optimizer: said once
        alone = Pruner(10, "kakurenbo", 0.5, 2, anneal_epochs=0)
        alone.set_epoch(0)
        alone.record(torch.arange(5), torch.ones(5))
        alone.end_epoch(torch.nn.Identity(), lambda rows: rows, lambda rows: rows.float(), 5)
        alone.end_epoch(torch.nn.Identity(), lambda rows: rows, lambda rows: rows.float(), 5)
    assert len([r for r in caplog.records if "pruner.attach(optimizer)" in r.message]) == 1
