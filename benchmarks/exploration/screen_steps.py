"""Keep full training's step count instead of stretching the learning rate? 2 to 5 seeds.

    python benchmarks/exploration/screen_steps.py run short 0.7 0,1 full,steps,stretch
    python benchmarks/exploration/screen_steps.py summary   # the table in docs/METHOD.md

``selective-backprop`` is the most accurate method in the 5-epoch setting and takes as many
optimizer steps as full training, on smaller batches; ``peek`` takes ``k / N`` of them at
``N / k`` times the learning rate. This loop (the README's, on the harness's data, model,
optimizer and schedule) runs:

- ``stretch``: ``peek`` on batches of the setting's size ``B``, with the stretch, as the harness
  runs it (a check: its accuracy is the suite's ``peek`` run's);
- ``steps``: ``peek`` without the stretch; each epoch's batches hold ``B * k / N`` samples, so
  that it takes as many steps as a full epoch, at the schedule's learning rate;
- ``full``: full training in this loop (a check: its accuracy is the suite's full run's).

Each row records its training time (``seconds``); the summary divides it by that of the
``stretch`` run of the same seed, run beside it (``full,steps,stretch``, seed by seed).

Rows go to ``screening_steps.jsonl`` (printed; append them). The summary pairs each with full
training of the same seed in ``benchmarks/results/<setting>/``. Exploration, not evidence.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from screen import SETTINGS, per_seed

from dataprune import Pruner
from dataprune.harness.config import RunConfig
from dataprune.harness.models import build_model
from dataprune.harness.trainer import _losses, _make_schedule, _read_rows, evaluate

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def run(setting: str, prune: float, seed: int, mode: str) -> dict:
    config = RunConfig(**SETTINGS[setting][1], model="cnn", method="peek", prune=prune,
                       seed=seed, progress=False, device="cpu")  # fmt: skip
    data = config.load_data().to(torch.device("cpu"))
    torch.manual_seed(seed)
    model = build_model(config.model, data.in_channels, data.num_classes, data.image_size)
    if mode == "full":
        pruner = Pruner(data.num_train, "full", 0.0, config.epochs, seed)
    else:
        pruner = Pruner(
            data.num_train, "peek", prune, config.epochs, seed, stretch=mode == "stretch"
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)  # fmt: skip
    batch = {  # each epoch's batch size
        epoch: config.batch_size
        if mode != "steps"
        else max(1, round(config.batch_size * pruner.epoch_size(epoch) / data.num_train))
        for epoch in range(config.epochs)
    }
    if mode == "stretch":
        pruner.attach(optimizer)
    steps = sum(math.ceil(pruner.epoch_size(e) / batch[e]) for e in range(config.epochs))
    schedule = _make_schedule(optimizer, config, steps)
    sampler = pruner.sampler(shuffle=True)

    def sample_losses(rows):
        x, y = rows
        return _losses(model(x), y, config)

    start = time.perf_counter()
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        model.train()
        augment = torch.Generator().manual_seed(seed * 100_003 + epoch)
        for index in sampler.local_indices().split(batch[epoch]):
            x, y = data.train_x[index], data.train_y[index]
            loss = pruner.loss(index, (data.augment_batch(x, augment), y), sample_losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        read = functools.partial(_read_rows, data, augment)
        pruner.end_epoch(model, read, sample_losses, batch_size=config.batch_size)
    seconds = time.perf_counter() - start
    summary = pruner.summary()
    return {
        "setting": setting, "prune": prune, "seed": seed, "mode": mode, "steps": steps,
        "acc": evaluate(model, data), "fwd": summary["samples_forwarded"],
        "bwd": summary["samples_backpropagated"], "seconds": seconds,
    }  # fmt: skip


def summary() -> str:
    """Each mode's accuracy minus full's of the same seed (the suite's), in points, beside the
    suite's peek; the time over that of this loop's ``stretch`` run of the same seed, where one
    ran beside it."""
    rows = [json.loads(line) for line in (HERE / "screening_steps.jsonl").read_text().splitlines()]
    full, suite = {}, {}
    for setting, (folder, _) in SETTINGS.items():
        for path in (RESULTS / folder).glob("*/result.json"):
            result = json.loads(path.read_text())
            config = result["config"]
            if config["method"] == "full":
                full[setting, config["seed"]] = result["final_accuracy"]
            elif config["method"] == "peek" and not config["options"]:
                suite[setting, config["prune"], config["seed"]] = result["final_accuracy"]
    wanted = {(row["setting"], row["prune"], row["seed"]) for row in rows}
    rows += [  # the suite's own peek runs of the same seeds, beside this loop's
        {"setting": setting, "prune": prune, "seed": seed, "mode": "suite's peek", "acc": acc}
        for (setting, prune, seed), acc in suite.items()
        if (setting, prune, seed) in wanted
    ]
    stretched = {  # peek as the suite runs it, in this loop: the times' reference
        (row["setting"], row["prune"], row["seed"]): row["seconds"]
        for row in rows
        if row["mode"] == "stretch" and "seconds" in row
    }
    cells: dict[tuple, list[float]] = {}
    times: dict[tuple, list[float]] = {}
    for row in sorted(rows, key=lambda row: row["seed"]):
        key, seed_key = (
            (row["setting"], row["prune"], row["mode"]),
            (row["setting"], row["prune"], row["seed"]),
        )
        cells.setdefault(key, []).append(100 * (row["acc"] - full[row["setting"], row["seed"]]))
        if seed_key in stretched and "seconds" in row:
            times.setdefault(key, []).append(row["seconds"] / stretched[seed_key])
    lines = [
        "| setting | prune | run | minus full, points, per seed | mean | time / stretch's |",
        "|---|---|---|---|---|---|",
    ]
    for key, diffs in sorted(cells.items()):
        setting, prune, mode = key
        share = f"{statistics.fmean(times[key]):.2f}" if key in times else "-"
        lines.append(f"| {setting} | {prune} | {mode} | {per_seed(diffs)} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        setting, prune, seeds, modes = sys.argv[2:6]
        for seed in seeds.split(","):  # seed by seed, so that each seed's times are side by side
            for mode in modes.split(","):
                print(json.dumps(run(setting, float(prune), int(seed), mode)), flush=True)
    else:
        print(summary())
