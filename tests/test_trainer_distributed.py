"""`dataprune train` under torchrun: 2 CPU processes (gloo), sharded statistics, resume.

Run A trains 3 epochs straight through. Run B stops right after epoch 1's checkpoint
(``--stop-after 2``, as a preempted job would) and is continued with --resume. Both must learn,
and B must end bit-identical to A: accuracies, losses, model
and the pruner's statistics and selections. Then the same launch trains from data on disk
(``--data-path``), two DataLoader workers a rank.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataprune.harness.data.locate import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = resolve_data_dir()  # $DATAPRUNE_DATA_DIR, else ../shared/data
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = [
    pytest.mark.skipif(
        not (DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file(),
        reason=f"Fashion-MNIST not found under {DATA}",
    ),
    pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun not installed"),
]

ARGS = [
    "--dataset", "fashion-mnist", "--data-dir", str(DATA), "--train-limit", "2000",
    "--test-limit", "500", "--model", "cnn", "--epochs", "3", "--batch-size", "16",
    "--method", "ucb", "--prune", "0.5", "--shard-stats", "--no-progress", "--device", "cpu",
]  # fmt: skip


def torchrun(out: Path, *extra: str, args: list[str] = ARGS) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "dataprune", "train"]
    return subprocess.run(
        [*command, *args, "--out", str(out), *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_process_training_learns_and_resumes_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    done = torchrun(a)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "final accuracy" in done.stdout

    stopped = torchrun(b, "--stop-after", "2")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not (b / "result.json").exists()  # a stopped run is not a finished one
    state_b1 = torch.load(b / "checkpoint.pt", weights_only=True)
    assert [e["epoch"] for e in state_b1["result"]["epochs"]] == [0, 1]
    resumed = torchrun(b, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    result_a = json.loads((a / "result.json").read_text())
    result_b = json.loads((b / "result.json").read_text())
    assert result_a["final_accuracy"] > 0.5  # 10 classes: chance is 0.1
    for key in ("test_accuracy", "train_loss", "samples"):
        assert [e[key] for e in result_a["epochs"]] == [e[key] for e in result_b["epochs"]]
    assert [e["samples"] for e in result_a["epochs"]] == [1000] * 3

    state_a = torch.load(a / "checkpoint.pt", weights_only=True)
    state_b = torch.load(b / "checkpoint.pt", weights_only=True)
    for name, tensor in state_a["model"].items():
        assert torch.equal(tensor, state_b["model"][name]), name
    pruner_a, pruner_b = state_a["pruner"], state_b["pruner"]
    assert pruner_a["shard"] is None  # the checkpoint holds the gathered, whole state
    assert pruner_a["stats"].shape == (2000, 3)
    for key in ("stats", "selected_count"):
        assert torch.equal(pruner_a[key], pruner_b[key]), key
    progress_a, progress_b = pruner_a["progress"], pruner_b["progress"]
    assert torch.equal(progress_a["subset"], progress_b["subset"])
    assert progress_a["subset"].numel() == 1000
    assert int(pruner_a["selected_count"].sum()) == 3000
    assert progress_a["churn"] == progress_b["churn"]


DISK = ["--epochs", "2", "--batch-size", "50", "--model", "mlp", "--method", "random"]
DISK += ["--prune", "0.5", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("fmt", ["litdata", "webdataset"])
def test_two_processes_with_two_workers_each_train_from_disk(fmt, tmp_path):
    """LitData through the sampler is the in-memory run to the bit; WebDataset's ranks take
    equal steps, each reading its quota of kept samples from its own shards."""
    pytest.importorskip(fmt)
    from dataprune.harness import cli

    limits = ["--train-limit", "600", "--test-limit", "200"]
    argv = ["prepare", "--dataset", "fashion-mnist", "--data-dir", str(DATA), *limits]
    argv += ["--formats", fmt, "--shard-mb", "0.03", "--out", str(tmp_path / "data")]
    assert cli.main([*argv, "--no-progress"]) == 0
    disk = [*DISK, "--data-path", str(tmp_path / "data" / fmt), "--num-workers", "2"]
    done = torchrun(tmp_path / "disk", args=disk)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "disk" / "result.json").read_text())
    # rank 0's share: 300 kept a epoch; WebDataset's 2 x 2 workers yield 300 // 4 each
    assert result["pruner_summary"]["samples_backpropagated"] == 2 * 150
    if fmt == "litdata":
        memory = [*DISK, "--dataset", "fashion-mnist", "--data-dir", str(DATA), *limits]
        reference = torchrun(tmp_path / "memory", args=memory)
        assert reference.returncode == 0, reference.stderr[-3000:]
        expected = json.loads((tmp_path / "memory" / "result.json").read_text())
        for key in ("train_loss", "test_accuracy"):
            assert [e[key] for e in result["epochs"]] == [e[key] for e in expected["epochs"]]


def test_two_process_kakurenbo_refreshes_hidden_samples_on_every_rank(tmp_path):
    args = [*ARGS[: ARGS.index("--model")], "--model", "mlp", "--epochs", "2", "--batch-size"]
    args += ["50", "--method", "kakurenbo", "--prune", "0.5", "--shard-stats", "--no-progress"]
    done = torchrun(tmp_path / "k", args=[*args, "--device", "cpu"])
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "k" / "checkpoint.pt", weights_only=True)
    assert [e["samples"] for e in state["result"]["epochs"]] == [1000, 1000]
    pruner = state["pruner"]
    # each epoch, every sample is trained or refreshed once, half by each rank
    assert bool((pruner["stats"][:, 2] == 2).all())
    assert pruner["counters"]["samples_forwarded"] == 2 * (500 + 500)  # trained + measured
