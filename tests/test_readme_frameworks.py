"""The README's "Frameworks" section runs as written: each snippet trains on real data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import readme  # noqa: E402
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import dataprune
from dataprune.harness.data.locate import resolve_data_dir
from dataprune.policies import DEFAULT_PRUNE

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
FASHION = resolve_data_dir() / "fashion-mnist"


def snippets() -> list[str]:
    return readme.blocks("Frameworks", "python")


def snippet(name: str) -> str:
    (code,) = [code for code in snippets() if name in code]
    return code


@pytest.fixture
def fashion(monkeypatch, tmp_path):
    if not FASHION.is_dir():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    from dataprune.harness.data import load_dataset

    monkeypatch.chdir(tmp_path)  # the snippets write logs and checkpoints here
    data = load_dataset("fashion-mnist", FASHION.parent, train_limit=256, test_limit=10)
    return TensorDataset(data.train_x, data.train_y)


def test_the_section_has_one_snippet_per_framework_and_for_token_losses():
    assert len(snippets()) == 4
    for name in ("DataPruning(", "DataPruningTrainer(", "Accelerator(", "sequence_losses("):
        snippet(name)


def test_lightning_snippet(fashion):
    pl = pytest.importorskip("lightning.pytorch")

    class MyModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    namespace = {"MyModule": MyModule, "train_set": fashion, "epochs": 2}
    exec(snippet("DataPruning("), namespace)
    kept = round(256 * (1 - DEFAULT_PRUNE))  # DataPruning() runs the default method and share
    assert namespace["pruning"].pruner.summary()["samples_used"] == 2 * kept
    assert namespace["trainer"].global_step == 2 * math.ceil(kept / 128)


def test_hf_trainer_snippet(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    import hf_job

    monkeypatch.chdir(tmp_path)
    example = hf_job.load_example()
    namespace = {
        "model": example.tiny_gpt2(32),
        "train_set": example.byte_sequences(32, 64),
        "collate": example.pad_collate,
        "epochs": 2,
    }
    exec(snippet("DataPruningTrainer("), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == trainer.pruner.total_steps(8) == 2 * 4


def test_accelerate_snippet(fashion):
    pytest.importorskip("accelerate")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    namespace = {
        "dataprune": dataprune,
        "F": F,
        "train_set": fashion,
        "model": model,
        "opt": torch.optim.SGD(model.parameters(), lr=0.1),
        "epochs": 2,
    }
    exec(snippet("Accelerator("), namespace)
    assert namespace["pruner"].summary()["samples_backpropagated"] == 2 * 128


def test_token_losses_snippet():
    pytest.importorskip("transformers")
    import hf_job

    example = hf_job.load_example()
    token_set = example.byte_sequences(32, 40)  # shorter last sequences are padded
    pruner = dataprune.Pruner(len(token_set), "ucb", prune=0.5, epochs=1)
    pruner.set_epoch(0)
    namespace = {
        "dataprune": dataprune,
        "DataLoader": DataLoader,
        "token_set": token_set,
        "collate": example.pad_collate,
        "model": example.tiny_gpt2(32),
        "pruner": pruner,
    }
    exec(snippet("sequence_losses("), namespace)
    assert pruner.summary()["samples_backpropagated"] == 20
    assert torch.isfinite(namespace["loss"])
