"""The evidence benchmark: every method, prune rate and seed in four settings, then docs/RESULTS.md.

    python benchmarks/reproduce.py                   # every suite (resumable), then the report
    python benchmarks/reproduce.py --suite text      # one suite
    python benchmarks/reproduce.py --smoke           # seconds, on digits: keeps it working in CI
    python benchmarks/reproduce.py --report          # only regenerate docs/RESULTS.md
    python benchmarks/reproduce.py --digests         # every method's behaviour digests

A suite runs interleaved: for each seed, full training first, then every other run of that seed
in an order shuffled from the seed, so that each time ratio compares runs made side by side and
the machine's drift averages out. Each run writes ``result.json`` under
``benchmarks/results/<suite>/<run>/``; those files are committed, and a rerun skips every
finished run. A result whose method behaves differently now (its behaviour digests,
``benchmarks/behaviour.json``) or of another torch is refused; ``--rerun-stale`` reruns it.
The report is generated from the result files alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataprune.harness.behaviour import all_digests
from dataprune.harness.config import RunConfig
from dataprune.harness.files import write_json
from dataprune.harness.methods import get_method, run_methods
from dataprune.harness.provenance import code_identity
from dataprune.harness.runner import run_grid, run_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Every method's behaviour digests for the code of the committed results.
BEHAVIOUR = ROOT / "benchmarks" / "behaviour.json"
PRUNES = (0.3, 0.5, 0.7)
SEEDS = (0, 1, 2)
#: Two more seeds for the cells that decide the default and the targets (and full's).
MORE_SEEDS = (3, 4)
DECIDING = {
    ("peek", 0.5), ("peek", 0.7), ("kakurenbo", 0.5), ("kakurenbo", 0.7), ("ucb", 0.5),
    ("ucb", 0.7), ("epsilon-greedy", 0.3), ("epsilon-greedy", 0.5), ("infobatch", 0.5),
    ("infobatch", 0.7), ("selective-backprop", 0.5),
}  # fmt: skip
#: What each of peek's ingredients is worth: peek with one of them taken away (or added).
INGREDIENTS = (
    ("peek", {"stretch": False}),  # no longer steps: the schedule's learning rate
    ("peek", {"peek": 0.0}),  # no measurement of the hidden samples
    ("peek", {"steps": True}),  # full training's step count on smaller batches, no stretch
)
#: The rates at which the ingredients run: the targets'.
INGREDIENT_PRUNES = (0.5, 0.7)


@dataclass
class Suite:
    """A setting: a base configuration and the runs made in it, in the order they run."""

    name: str
    title: str
    configs: list[RunConfig] = field(default_factory=list)
    runner: str = "harness"  # or "text": the HF Trainer (benchmarks/text.py)


def interleaved(
    base: RunConfig,
    methods: Sequence[str],
    ablations: Sequence[tuple[str, dict[str, Any]]] = (),
    prunes: Sequence[float] = PRUNES,
    seeds: Sequence[int] = SEEDS,
    more_seeds: Sequence[int] = MORE_SEEDS,
) -> list[RunConfig]:
    """Every run of a suite, seed by seed: full first, then the seed's other runs shuffled
    from the seed. The ``more_seeds`` run only full and the :data:`DECIDING` cells."""
    order = []
    for seed in (*seeds, *more_seeds):
        runs = []
        for method in methods:
            unpruned = "prune" in get_method(method).unused_fields()
            for prune in [0.0] if unpruned else prunes:
                if seed in more_seeds and method != "full" and (method, prune) not in DECIDING:
                    continue
                runs.append(base.for_method(method, prune, seed))
        if seed in seeds:
            for method, options in ablations:
                for prune in INGREDIENT_PRUNES:
                    config = base.for_method(method, prune, seed)
                    runs.append(dataclasses.replace(config, options=options))
        full = [c for c in runs if c.method == "full"]
        rest = [c for c in runs if c.method != "full"]
        random.Random(seed).shuffle(rest)
        order += full + rest
    return order


def suites(smoke: bool, data_dir: str | None, device: str) -> list[Suite]:
    """The four settings of the evidence (method rankings change with them); with ``smoke``,
    one short suite on the embedded digits.

    Each image setting fixes its dataset's size (``train_limit``/``test_limit``), so that the
    data dir found first cannot change it: one with fewer samples is refused, and results
    record the counts. The static scorers are not rerun here: their results, from the suites
    of 2026-11 (``benchmarks/results/archive/``), carry the behaviour of this code.
    """
    common = dict(data_dir=data_dir, progress=False, model="cnn", device=device)
    methods = [m for m in run_methods() if not get_method(m).scorer]
    if smoke:  # embedded data: runs anywhere, no files needed
        digits = RunConfig(dataset="digits", epochs=2, batch_size=64, **common)
        runs = interleaved(digits, ["full", "random", "peek"], (), (0.5,), (0,), ())
        return [Suite("smoke", "Smoke test (digits)", runs)]
    fashion = dict(dataset="fashion-mnist", train_limit=60_000, test_limit=10_000, **common)
    short = RunConfig(epochs=5, batch_size=256, lr=0.1, **fashion)
    table = RunConfig(epochs=8, batch_size=128, lr=0.05, schedule="cosine", **fashion)
    cifar = RunConfig(
        dataset="cifar10", train_limit=5_000, test_limit=1_000, epochs=30, batch_size=128,
        lr=0.05, **common,
    )  # fmt: skip
    return [
        Suite(
            "fashion-mnist-table",
            "Fashion-MNIST (60k/10k), cnn, 8 epochs, cosine",
            interleaved(table, methods, INGREDIENTS),
        ),
        Suite(
            "fashion-mnist",
            "Fashion-MNIST (60k/10k), cnn, 5 epochs, one-cycle",
            interleaved(short, methods, INGREDIENTS),
        ),
        Suite(
            "cifar10-subset",
            "CIFAR-10 subset (5k/1k), cnn, 30 epochs, one-cycle",
            interleaved(cifar, methods),
        ),
        Suite(
            "text",
            "Text: a tiny GPT-2 on the standard library's source, 3 epochs, the HF Trainer",
            runner="text",
        ),
    ]


def variant_name(config: RunConfig) -> str:
    """Run directory: method, prune, seed, and any option that differs from the defaults."""
    defaults = RunConfig()
    extras = [
        f"{f}{getattr(config, f)}"
        for f in ("every", "rescale", "anneal_epochs")
        if getattr(config, f) != getattr(defaults, f)
    ]
    return "-".join([run_name(config), *extras, *option_parts(config.options.items())])


def option_parts(options: Iterable[tuple[str, Any]]) -> list[str]:
    """A run folder's name parts for a method's options, sorted: ``stepsTrue``."""
    return [f"{name}{value}" for name, value in sorted(options)]


def run_suite(
    suite: Suite,
    results: Path,
    rerun_stale: bool = False,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    figures: Path = ROOT / "docs" / "results",
) -> None:
    """Run ``suite``'s unfinished runs into ``results``: only those of ``methods`` and
    ``seeds``, if given, still in the suite's interleaved order. The report's pictures that
    need the data are drawn into ``figures``."""
    out = results / suite.name
    if suite.runner == "text":
        import text

        text.run_suite(out, rerun_stale, methods, seeds)
        return
    measure_forward_share(suite, out)
    configs = []
    for config in suite.configs:
        if (methods and config.method not in methods) or (seeds and config.seed not in seeds):
            continue
        run_dir = out / variant_name(config)
        configs.append(
            dataclasses.replace(
                config, out=str(run_dir), overwrite=rerun_stale and is_stale(run_dir)
            )
        )
    run_grid([config.resolve() for config in configs], out=None, progress=True)
    for config in configs:
        if (config.method, config.prune, config.seed, config.options) == ("peek", 0.5, 0, {}):
            save_selection(Path(config.out))
            draw_kept(config, Path(config.out), figures / f"{suite.name}-kept.png")


def is_stale(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a result of other behaviour or another torch than this code's."""
    path = run_dir / "result.json"
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    saved, method = result.get("provenance", {}), result["config"]["method"]
    return any(saved.get(field) != value for field, value in code_identity(method).items())


def measure_forward_share(suite: Suite, out: Path, repeats: int = 20) -> None:
    """The time of a forward pass without gradients as a share of a training step's, for the
    suite's model and batch on this machine (``forward_share.json``): the weight of a sample
    forwarded but not trained in the compute shares of the report."""
    target = out / "forward_share.json"
    if target.is_file() or not suite.configs:
        return
    from dataprune.harness.device import setup_device
    from dataprune.harness.models import build_model

    config = suite.configs[0]
    data = config.load_data()
    device = setup_device(config.device)
    torch.manual_seed(0)
    model = build_model(config.model, data.in_channels, data.num_classes, data.image_size).to(
        device
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = (
        data.train_x[: config.batch_size].to(device),
        data.train_y[: config.batch_size].to(device),
    )

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    write_forward_share(
        target, step, forward, repeats,
        batch_size=config.batch_size, model=config.model, device=str(device),
    )  # fmt: skip


def write_forward_share(
    target: Path,
    step: Callable[[], None],
    forward: Callable[[], None],
    repeats: int,
    **about: object,
) -> None:
    """Time ``step`` and ``forward`` interleaved (medians of ``repeats``, after a warm-up) and
    write the forward pass's share of a step to ``target``, with ``about`` the model and batch."""
    times: dict[str, list[float]] = {"step": [], "forward": []}
    for _ in range(3):  # warm-up
        step(), forward()
    for _ in range(repeats):  # interleaved, so that both see the same machine
        for name, call in (("step", step), ("forward", forward)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    write_json(
        target,
        {
            "forward_share": median["forward"] / median["step"],
            "step_seconds": median["step"],
            "forward_seconds": median["forward"],
            **about,
            "threads": torch.get_num_threads(),
        },
    )


def save_selection(run_dir: Path) -> None:
    """Keep what ``dataprune analyze`` draws, as a small committed file: how often each sample
    was selected (checkpoints are not committed)."""
    from dataprune.harness.analyze import load_pruner_state

    target = run_dir / "selection.pt"
    if target.is_file() or not (run_dir / "checkpoint.pt").is_file():
        return
    state = load_pruner_state(run_dir)
    torch.save(
        {
            "selected_count": state["selected_count"].to(torch.int16),
            "pruned_epochs": state["counters"]["pruned_epochs"],
            "churn": state["progress"]["churn"],
        },
        target,
    )


def draw_kept(config: RunConfig, run_dir: Path, target: Path) -> None:
    """The report's picture of the images kept most and least often, per class (drawn here,
    where the data is at hand: the report reads result files alone)."""
    from dataprune.harness.analyze import draw_kept_examples

    selection = run_dir / "selection.pt"
    if target.is_file() or not selection.is_file():
        return
    saved = torch.load(selection)
    target.parent.mkdir(parents=True, exist_ok=True)
    epochs = saved["pruned_epochs"]
    title = f"{config.method} at prune {config.prune:g}, seed {config.seed}"
    draw_kept_examples(saved["selected_count"].long(), config.load_data(), epochs, target, title)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a one-minute version for CI")
    parser.add_argument("--report", action="store_true", help="only regenerate the report")
    parser.add_argument("--data-dir", default=None, help="dataset directory")
    parser.add_argument("--results", default=None, help="results directory")
    parser.add_argument("--suite", default=None, help="run only this suite")
    parser.add_argument(
        "--method",
        action="append",
        choices=run_methods(),
        help="run only this method's runs; repeat for more (with --rerun-stale: rerun a method "
        "after a change)",
    )
    parser.add_argument(
        "--seed",
        action="append",
        type=int,
        help="run only this seed's runs; repeat for more (a shorter suite: fewer seeds)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--rerun-stale",
        action="store_true",
        help="rerun results of other behaviour or torch instead of refusing them",
    )
    parser.add_argument(
        "--digests",
        action="store_true",
        help=f"write every method's behaviour digests to {BEHAVIOUR.relative_to(ROOT)} and stop",
    )
    args = parser.parse_args(argv)
    if args.digests:
        write_json(BEHAVIOUR, all_digests())
        print(f"behaviour digests written to {BEHAVIOUR}")
        return 0
    results = Path(args.results) if args.results else RESULTS
    if args.smoke and args.results is None:
        results = ROOT / "runs" / "smoke"
    every = suites(args.smoke, args.data_dir, args.device)
    selected = [s for s in every if args.suite in (None, s.name)]
    out = results / "RESULTS.md" if args.smoke else ROOT / "docs" / "RESULTS.md"
    if not args.report:
        for suite in selected:
            figures = out.parent / "results"
            run_suite(suite, results, args.rerun_stale, args.method, args.seed, figures)
    from report import write_results_md

    write_results_md(results, out, [(s.name, s.title) for s in every], smoke=args.smoke)
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
