"""What docs/RESULTS.md measures, as data: each setting's metric, the targets, the peer
comparisons, the claims about peek's ingredients, the rule for archived results and the errata.
The renderer reads these tables: a threshold changed here changes the report and its verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataprune.harness.methods import scorers


@dataclass(frozen=True)
class Metric:
    """How a setting's runs are compared with full training's, seed by seed."""

    name: str
    label: str  # the table's column
    higher_is_better: bool
    relative: bool  # difference in percent of full's value; else in points (x100)
    unit: str  # of the difference
    scale: float  # of the shown value
    digits: int

    def difference(self, value: float, full: float) -> float:
        return 100 * (value - full) / (full if self.relative else 1.0)


ACCURACY = Metric("accuracy", "test accuracy %", True, False, " points", 100.0, 2)
LOSS = Metric("loss", "held-out loss per token", False, True, "%", 1.0, 3)

#: Each setting's metric, in the order the README's headline lists the settings.
SETTINGS = {
    "fashion-mnist-table": ACCURACY,
    "fashion-mnist": ACCURACY,
    "cifar10-subset": ACCURACY,
    "text": LOSS,  # a tiny GPT-2: lower is better, and a loss has no natural "point"
    "smoke": ACCURACY,  # CI's one-minute suite on digits
}

#: What pruning is measured against: never a recommendation.
BASELINES = ("full", "full-matched")

#: The method the targets are set for: dataprune's own.
TARGET_METHOD = "peek"
#: The method's settings held against the targets, where measured: its defaults, and full
#: training's step count (one of its ingredients, for few-epoch runs at high rates).
TARGET_SETTINGS: tuple[dict[str, Any], ...] = ({}, {"steps": True})
#: Between methods that meet as many targets, the best mean rank of the difference to full at
#: this prune rate (the half-cost target's) makes the default.
TIE_BREAK_PRUNE = 0.5


@dataclass(frozen=True)
class Target:
    """A cost to meet at a prune rate, and how much of full's accuracy to keep there, paired
    by seed. ``limits`` per metric: (the mean difference's limit, the limit of the interval's
    unfavourable end, or None): floors for accuracy, ceilings for loss."""

    name: str
    prune: float
    time_share: float  # the most of full's training time, mean over seeds
    limits: dict[str, tuple[float, float | None]]


TARGETS = (
    Target("half the cost", 0.5, 0.55, {"accuracy": (-0.1, -0.5), "loss": (1.0, 5.0)}),
    Target("a third of the cost", 0.7, 0.40, {"accuracy": (-0.5, None), "loss": (5.0, None)}),
)


@dataclass(frozen=True)
class PeerTarget:
    """Peek against a peer at its default rate, paired by seed: at least the peer's accuracy,
    in at most ``time_ratio`` of its training time."""

    setting: str
    peer: str
    peer_prune: float  # the peer's cell that stands for its default rate
    prunes: tuple[float, ...]  # peek's cells compared with it
    time_ratio: float


PEERS = tuple(
    PeerTarget("fashion-mnist-table", peer, 0.3, (0.5, 0.7), 0.6) for peer in ("infobatch", "seta")
)


@dataclass(frozen=True)
class Claim:
    """Peek against a run without one of its ingredients (or with another method's): the claim
    is that peek is more accurate; the time share says what the ingredient saves or costs."""

    method: str
    options: dict[str, Any]
    ingredient: str


CLAIMS = (
    Claim("peek", {"stretch": False}, "the stretch: pruned epochs at N/k times the learning rate"),
    Claim("peek", {"peek": 0.0}, "the peek: a tenth of the hidden samples measured each epoch"),
    Claim("peek", {"steps": True}, "the stretch, against a full epoch's steps on smaller batches"),
    Claim("kakurenbo", {}, "measuring a tenth of the hidden samples rather than all of them"),
    Claim("ucb", {}, "hiding the samples learned rather than a bandit's choice"),
)


@dataclass(frozen=True)
class Archive:
    """Results reported from an earlier edition (``<folder>/<setting>/``): those of ``methods``,
    and those of any method this edition did not rerun, where they carry this code's behaviour
    digests (:data:`BEHAVIOUR`)."""

    methods: tuple[str, ...]
    folder: str
    note: str


#: Every method's behaviour digests for this code (``reproduce.py --digests`` writes them).
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour.json"

#: The static scorers are not rerun (benchmarks/reproduce.py), nor every method in a shortened
#: edition: their 2026-11 results carry this code's behaviour digests, so their accuracy holds,
#: but they did not run side by side with this edition's full training, so they are compared
#: with that suite's own.
ARCHIVE = Archive(
    scorers(),
    "archive",
    "2026-11 suite, not rerun in this edition (same behaviour digests) and not interleaved "
    "with it: difference and time share",
)


@dataclass(frozen=True)
class Erratum:
    """A defect found after results were measured, and its effect: the method's runs from
    before the fix (``<before>/<setting>/``) against those rerun with it (``<after>/...``)."""

    method: str
    fixed_in: str
    what: str
    before: str
    after: str


ERRATA = (
    Erratum(
        "kakurenbo",
        "30d803a",
        "the harness refreshed the hidden samples' losses in training mode, so every evaluation "
        "used BatchNorm statistics of the hidden (easiest) samples alone",
        before="archive/errata/kakurenbo",
        after="archive",
    ),
)
