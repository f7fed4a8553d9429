"""dataprune.harness.files: the output folder's lock dies with the process that took it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_formats

from dataprune.harness.files import LOCK, locked_folder

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
