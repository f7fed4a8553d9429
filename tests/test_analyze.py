"""The analysis of a run (dataprune.harness.analyze): its plots."""

from __future__ import annotations

from test_trainer import quick

from dataprune.harness import cli
from dataprune.harness.runner import run


def test_analyze_plots_selection_frequency_and_churn(tmp_path):
    config = quick(method="ucb", prune=0.5, epochs=3, out=str(tmp_path / "run"))
    run(config.resolve())
    assert cli.main(["analyze", str(tmp_path / "run")]) == 0
    for plot in ("selection_frequency.png", "selection_churn.png"):
        assert (tmp_path / "run" / plot).read_bytes()[:4] == b"\x89PNG"
