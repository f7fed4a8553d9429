"""The README's quickstart loop (examples/plain_loop.py) works for every method on real data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import dataprune
from dataprune.harness.data.locate import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
FASHION = resolve_data_dir() / "fashion-mnist" / "train-images-idx3-ubyte.gz"


def load_example():
    spec = importlib.util.spec_from_file_location("plain_loop", ROOT / "examples" / "plain_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fashion():
    if not FASHION.is_file():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    from dataprune.harness.data import load_dataset

    return load_dataset("fashion-mnist", FASHION.parent.parent, train_limit=1500, test_limit=500)


@pytest.mark.parametrize("method", dataprune.methods())
def test_plain_loop_learns_with_every_method(fashion, method):
    result = load_example().train_one(method, prune=0.5, epochs=2, data=fashion)
    assert result["accuracy"] > 0.5  # 10 classes: chance is 0.1
    # infobatch and repb train their last epoch (of 2) on full data by default;
    # selective-backprop forwards every sample and back-propagates half of each batch
    expected = {"full": 0.0, "selective-backprop": 0.0, "infobatch": 0.25, "repb": 0.25}
    expected = expected.get(method, 0.5)
    assert result["fraction_pruned"] == pytest.approx(expected)
    trained = 2 * round(1500 * (1 - expected))
    if method == "selective-backprop":
        trained = 2 * (11 * 64 + 46)  # half of each batch of 128 (and of the last, of 92)
    assert result["samples_backpropagated"] == trained
    # after each epoch kakurenbo also forwards the 750 it hid, peek a tenth of them;
    # selective backprop forwards every sample
    forwarded = {
        "kakurenbo": 2 * 1500,
        "peek": trained + 2 * 75,
        "selective-backprop": 2 * 1500 + trained,
    }
    assert result["samples_forwarded"] == forwarded.get(method, trained)
