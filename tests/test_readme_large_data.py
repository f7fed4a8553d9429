"""The README's "Large datasets" section runs as written: its commands (on fewer images) write
and train from data on disk, and each format's snippet, with the section's loop, trains."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import readme
import torch
import torch.nn.functional as F
from test_formats import DATA, FORMATS, missing_library

from dataprune.harness import cli

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--train-limit", "500", "--test-limit", "100"]  # the commands, on fewer images


def blocks(language: str) -> list[str]:
    return readme.blocks("Large datasets", language)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder where the README's commands ran: data/fashion/<format> for every format whose
    library imports here (the README's prepare command names them)."""
    if not (DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    folder = tmp_path_factory.mktemp("readme")
    (prepare, train) = (shlex.split(line) for line in blocks("bash")[0].strip().splitlines())
    assert prepare[:2] == ["dataprune", "prepare"] and train[:2] == ["dataprune", "train"]
    formats = prepare.index("--formats") + 1
    prepare[formats] = ",".join(f for f in FORMATS if missing_library(f) is None)
    out = prepare.index("--out") + 1
    prepare[out] = str(folder / prepare[out])
    assert cli.main([*prepare[1:], "--data-dir", str(DATA), *SMALL, "--no-progress"]) == 0
    if missing_library("webdataset") is None:
        path = train.index("--data-path") + 1
        train[path] = str(folder / train[path])
        quick = ["--epochs", "1", "--model", "mlp", "--no-progress"]
        assert cli.main([*train[1:], *quick]) == 0
    return folder


def snippets() -> dict[str, str]:
    """Each format's snippet, by the format its data path names."""
    found = {}
    for code in blocks("python")[1:]:
        (fmt,) = set(re.findall(r"data/fashion/(\w+)", code))
        found[fmt] = code
    return found


def test_the_section_has_a_snippet_for_every_format():
    assert sorted(snippets()) == sorted(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_snippet_trains_with_the_sections_loop(fmt, workdir, monkeypatch):
    if missing_library(fmt):
        pytest.skip(missing_library(fmt))
    monkeypatch.chdir(workdir)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    namespace = {"epochs": 2, "model": model, "opt": opt, "F": F}
    loop = blocks("python")[0]
    exec(compile(snippets()[fmt] + loop, f"README.md ({fmt})", "exec"), namespace)
    pruner = namespace["pruner"]
    summary = pruner.summary()
    assert summary["samples_used"] == pruner.epoch_size(0) + pruner.epoch_size(1) == 500
    assert summary["samples_backpropagated"] == summary["samples_used"]  # each kept sample, once
