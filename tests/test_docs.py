"""The user-facing docs: the methods page is its Policy classes', and the README's Quickstart
runs as written."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import readme
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_the_methods_page_is_written_from_the_registered_methods():
    import methods_page

    assert methods_page.PAGE.read_text() == methods_page.page(), (
        "docs/METHODS.md is out of date: run python benchmarks/methods_page.py"
    )


def test_the_quickstart_trains_as_written():
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    (code,) = readme.blocks("Quickstart", "python")
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    namespace = {
        "train_set": TensorDataset(x, torch.tensor(digits.target)),
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        "epochs": 5,
    }
    exec(code, namespace)
    pruner = namespace["pruner"]
    assert namespace["schedule"].last_epoch == pruner.total_steps(128)
    assert pruner.summary()["samples_backpropagated"] == sum(pruner.budgets)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == torch.tensor(digits.target)).float().mean()
    assert accuracy > 0.8


@pytest.mark.parametrize("page", ["README.md", "docs/METHODS.md", "docs/METHOD.md"])
def test_user_pages_hold_no_issue_numbers_or_commit_hashes(page):
    text = (ROOT / page).read_text()
    assert not re.search(r"\bissue \d+", text, re.IGNORECASE)
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text)
