"""Coreset export (dataprune.harness.coreset): where its files are written."""

from __future__ import annotations

from test_cli import train_ok

from dataprune.harness import cli


def test_export_coreset_into_a_folder_writes_inside_it(capsys, tmp_path):
    run_dir = tmp_path / "run"
    train_ok(capsys, "--method", "random", "--prune", "0.5", "--epochs", "1", "--out", str(run_dir))
    target = tmp_path / "coresets"
    target.mkdir()
    assert cli.main(["export-coreset", str(run_dir), "--prune", "0.5", "--out", str(target)]) == 0
    assert (target / "coreset.pt").is_file() and (target / "coreset.csv").is_file()
    assert not (tmp_path / "coresets.pt").exists()
