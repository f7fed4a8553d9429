"""The behaviour digests (dataprune.harness.behaviour) against the committed ones."""

from __future__ import annotations

import json
from pathlib import Path

from dataprune.harness.behaviour import core_digest, harness_digest
from dataprune.harness.methods import run_methods

BEHAVIOUR = Path(__file__).resolve().parents[1] / "benchmarks" / "behaviour.json"


def test_every_methods_core_behaviour_is_the_committed_one():
    committed = json.loads(BEHAVIOUR.read_text())
    assert list(committed) == list(run_methods())
    changed = [m for m in run_methods() if core_digest(m) != committed[m]["core"]]
    assert not changed, (
        f"{changed} behave differently from the code of the committed results: if that is "
        "meant, run `python benchmarks/reproduce.py --digests`, say what changed in "
        "CHANGELOG.md, and rerun their results (`reproduce.py --rerun-stale`)"
    )


def test_digests_are_deterministic_and_tell_methods_apart(toy_method):
    assert core_digest("ucb") == core_digest("ucb")
    assert harness_digest("random") == harness_digest("random")
    methods = ["random", "ucb", "epsilon-greedy", "infobatch", toy_method.name]
    assert len({core_digest(m) for m in methods}) == len(methods)
