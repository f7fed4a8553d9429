"""dataprune.harness.files: the output folder's lock dies with the process that took it, and a
file that cannot be read or written is named as the user knows it."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_formats
import torch
from test_cli import QUICK, error_of, train_ok

from dataprune.harness import cli
from dataprune.harness.checkpoint import CHECKPOINT
from dataprune.harness.files import LOCK, locked_folder, save_torch, write_text

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except (OSError, ValueError):  # not a process, or gone
            continue
        if f"\nPPid:\t{pid}\n" in status:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_after_kill_9_the_lock_is_free_at_once_though_workers_outlive_the_run(tmp_path):
    """DataLoader workers are forked while the run holds its lock: they must not hold it too,
    or an immediate --resume after a kill -9 is refused until they notice and exit."""
    if test_formats.missing_library("folder"):
        pytest.skip(test_formats.missing_library("folder"))
    data = test_formats.write_tiny(tmp_path, "folder")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "dataprune", "train", "--data-path", str(data), "--model"]
    argv += ["mlp", "--epochs", "10000", "--num-workers", "2", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if (out / LOCK).exists():  # training has started: its persistent workers are up
                workers = _children(run.pid)
        assert len(workers) >= 2, run.stderr.read() if run.poll() is not None else workers
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        assert any(Path(f"/proc/{pid}").exists() for pid in workers)  # orphans, for now
        with locked_folder(out):  # not refused: no orphan holds the lock
            pass
    finally:
        if run.poll() is None:
            run.kill()
        for pid in workers:  # the run's orphaned workers, which exit on their own within ~10 s
            with contextlib.suppress(OSError):  # gone already
                if str(out) in Path(f"/proc/{pid}/cmdline").read_text():  # still one of them
                    os.kill(pid, signal.SIGKILL)
        run.stderr.close()


@pytest.mark.parametrize("command", ["resume", "analyze", "export-coreset"])
def test_a_folder_where_the_checkpoint_should_be_is_named_as_such(command, tmp_path, capsys):
    """Not "no checkpoint at .../checkpoint.pt" (or "holds no checkpoint.pt") while one is there."""
    out = tmp_path / "run"
    (out / CHECKPOINT).mkdir(parents=True)
    argv = {
        "resume": ["train", "--dataset", "digits", "--epochs", "1", "--resume", "--out", str(out)],
        "analyze": ["analyze", str(out)],
        "export-coreset": ["export-coreset", str(out), "--prune", "0.5", "--out", str(tmp_path)],
    }[command]
    assert cli.main([*argv]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {out / CHECKPOINT} is a folder, not a checkpoint file" in err


def test_a_failed_write_names_the_file_it_was_to_write_not_its_temporary_file(tmp_path, capsys):
    target = tmp_path / "results.json"
    target.mkdir()  # a folder where the file is to go: the final rename fails
    with pytest.raises(IsADirectoryError) as raised:
        write_text("{}", target)
    assert str(raised.value) == f"[Errno 21] cannot write {target} (Is a directory)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary left
    (tmp_path / "coreset.csv").mkdir()
    source = tmp_path / "scores.pt"
    torch.save({"scores": torch.rand(20), "seconds": 1.0, "name": "el2n", "details": {}}, source)
    assert cli.main(["export-coreset", str(source), "--prune", "0.5", "--out", f"{tmp_path}/"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'coreset.csv'} (Is a directory)" in err and ".tmp" not in err


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
