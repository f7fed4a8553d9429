"""What a run produced: per-epoch records and the run's result, as written to result.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig


@dataclass
class EpochRecord:
    epoch: int
    samples: int
    train_loss: float
    test_accuracy: float
    train_seconds: float
    selection_seconds: float
    eval_seconds: float
    wall_seconds: float  # cumulative: scoring, selection, training, evaluation, checkpoints
    checkpoint_seconds: float = 0.0  # writing the previous epoch's checkpoint
    nonfinite_losses: int = 0  # NaN or inf training losses, left out of statistics and loss
    steps: int = 0  # optimizer steps on one rank (0 in results written before it was kept)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    config: RunConfig
    epochs: list[EpochRecord] = field(default_factory=list)
    scoring_seconds: float = 0.0
    scores_source: str = ""  # "computed", or the file the scores were loaded from
    pruner_summary: dict[str, Any] = field(default_factory=dict)
    device_name: str = ""
    #: the code, torch and data it came from (:func:`dataprune.harness.provenance.provenance`)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return self.epochs[-1].test_accuracy if self.epochs else float("nan")

    @property
    def best_accuracy(self) -> float:
        return max((e.test_accuracy for e in self.epochs), default=float("nan"))

    @property
    def wall_seconds(self) -> float:
        return self.epochs[-1].wall_seconds if self.epochs else self.scoring_seconds

    @property
    def samples_used(self) -> int:
        return sum(e.samples for e in self.epochs)

    @property
    def steps(self) -> int:
        """Optimizer steps of the run on one rank."""
        return sum(e.steps for e in self.epochs)

    def time_to_accuracy(self, target: float) -> float | None:
        """Wall-clock seconds (every cost counted) at which test accuracy first reached target."""
        for e in self.epochs:
            if e.test_accuracy >= target:
                return e.wall_seconds
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "final_accuracy": self.final_accuracy,
            "best_accuracy": self.best_accuracy,
            "wall_seconds": self.wall_seconds,
            "scoring_seconds": self.scoring_seconds,
            "scores_source": self.scores_source,
            "samples_used": self.samples_used,
            "device_name": self.device_name,
            "pruner_summary": self.pruner_summary,
            "provenance": self.provenance,
            "epochs": [e.to_dict() for e in self.epochs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(
            config=RunConfig(**data["config"]),
            epochs=[EpochRecord(**e) for e in data["epochs"]],
            scoring_seconds=data["scoring_seconds"],
            scores_source=data.get("scores_source", ""),
            pruner_summary=data.get("pruner_summary", {}),
            device_name=data.get("device_name", ""),
            provenance=data.get("provenance", {}),
        )
