"""dataprune prepare (dataprune.harness.prepare) and its output folder: locked while written,
refused before any work when it cannot be, and never half-written for a run to read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dataprune.harness import cli
from dataprune.harness.files import locked_output

PREPARE = ["prepare", "--dataset", "digits", "--train-limit", "50", "--test-limit", "20"]


def prepare(capsys, out: str, *flags: str) -> tuple[int, str]:
    status = cli.main([*PREPARE, "--out", out, "--no-progress", *flags])
    return status, capsys.readouterr().err


def test_a_second_prepare_into_an_out_being_written_is_refused(tmp_path, capsys):
    out = tmp_path / "digits"
    with locked_output(out):  # as a prepare into it, still running, holds it
        status, err = prepare(capsys, str(out), "--overwrite")
        assert status == 2 and f"--out {out} is in use by another dataprune run" in err
        assert f"pid {os.getpid()}" in err
    assert not out.exists()
    assert prepare(capsys, str(out))[0] == 0  # free once released, and no lock file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


@pytest.mark.parametrize("out", [".", "", ".."])
def test_prepare_refuses_the_working_directory_before_any_work(out, tmp_path, capsys, monkeypatch):
    """Replacing --out . would move the working directory away: it was written in full, then the
    rename failed."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    status, err = prepare(capsys, out, "--overwrite")
    assert status == 2 and "is the working directory or holds it" in err
    assert list(tmp_path.iterdir()) == [work] and not list(work.iterdir())  # nothing written


def test_an_out_that_cannot_be_written_is_refused_naming_it_before_any_work(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "digits"
    status, err = prepare(capsys, str(out))
    assert status == 2
    assert f"--out '{out}' cannot be written: {tmp_path / 'a-file'} is a file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no staging folder


def test_a_killed_prepares_staging_folder_is_never_read_and_the_next_prepare_removes_it(
    tmp_path, capsys
):
    """A kill while the test split was written left train/ complete and no dataprune.json:
    it trained as a complete image folder of one's own."""
    out = tmp_path / "digits"
    assert prepare(capsys, str(out))[0] == 0
    left = tmp_path / ".digits.k1ll3d_x.partial"  # as a killed prepare leaves it
    shutil.copytree(out, left)
    (left / "folder" / "dataprune.json").unlink()
    argv = ["train", "--data-path", str(left / "folder"), "--epochs", "1", "--no-progress"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "dataprune prepare was writing and did not finish" in capsys.readouterr().err
    sibling = tmp_path / ".digits.x.s1bl1ng_.partial"  # of a prepare into digits.x, running
    sibling.mkdir()
    assert prepare(capsys, str(out), "--overwrite")[0] == 0
    assert not left.exists() and sibling.is_dir()


def test_stale_staging_folders_are_not_the_data_path_of_a_finished_one(tmp_path):
    """Only the hidden ``.OUT.<random>.partial`` folders count as unfinished."""
    from dataprune.harness.files import is_staging

    assert is_staging(tmp_path / ".digits.k1ll3d_x.partial" / "folder")
    assert not is_staging(tmp_path / "digits" / "folder")
    assert not is_staging(Path("data.partial") / "folder")
