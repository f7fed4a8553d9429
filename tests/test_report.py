"""benchmarks/report: docs/RESULTS.md and the README's headline, computed from result files
(here synthetic ones, written to tmp_path), paired by seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from dataprune.harness.config import RunConfig
from dataprune.harness.results import EpochRecord, RunResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import headline_markdown, write_results_md  # noqa: E402
from report.evidence import (  # noqa: E402
    load_setting,
    recommended_method,
    recommended_prune,
    target_checks,
)
from report.render import load_settings, readme_block, readme_blocks  # noqa: E402
from report.tables import BEHAVIOUR, SETTINGS, TARGETS  # noqa: E402

SEEDS = (0, 1, 2)
FULL_ACCURACY = {0: 0.900, 1: 0.910, 2: 0.890}
FULL_SECONDS = {0: 10.0, 1: 20.0, 2: 40.0}


def image_run(
    method: str,
    prune: float,
    seed: int,
    accuracy: float,
    seconds: float,
    options: dict | None = None,
    counts: tuple[int, int] | None = None,
) -> dict:
    """A one-epoch result of ``seconds`` of training, then 1 s of evaluation."""
    config = RunConfig(method=method, prune=prune, seed=seed, options=options or {})
    epoch = EpochRecord(0, 100, 0.5, accuracy, seconds, 0.0, 1.0, seconds + 1.0, steps=10)
    summary = {}
    if counts is not None:
        summary = {"samples_forwarded": counts[0], "samples_backpropagated": counts[1]}
    result = RunResult(config, [epoch], pruner_summary=summary, device_name="cpu (2 threads)")
    # this code's behaviour digests: the result holds for it
    behaviour = json.loads(BEHAVIOUR.read_text())[method]
    result.provenance = {"commit": "abcdef0123", "behaviour": behaviour}
    return result.to_dict()


def text_run(method: str, prune: float, seed: int, loss: float, seconds: float) -> dict:
    config = {"method": method, "prune": prune, "seed": seed, "epochs": 3, "batch_size": 16}
    return {
        "setting": "text",
        "config": config,
        "held_out_loss": loss,
        "perplexity": 2.718**loss,
        "train_seconds": seconds,
        "steps": 100,
        "pruner_summary": {"samples_forwarded": 300, "samples_backpropagated": 300},
        "device_name": "cpu (2 threads)",
        "provenance": {"commit": "abcdef0123"},
    }


def write(root: Path, setting: str, results: list[dict]) -> None:
    for result in results:
        c = result["config"]
        options = "".join(f"-{k}{v}" for k, v in sorted(c.get("options", {}).items()))
        folder = root / setting / f"{c['method']}-p{c['prune']:g}-s{c['seed']}{options}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(result))


def cell(method: str, prune: float, points: float, share: float, **kwargs) -> list[dict]:
    """A cell ``points`` from full's accuracy in every seed, in ``share`` of its time."""
    return [
        image_run(
            method, prune, s, FULL_ACCURACY[s] + points / 100, share * FULL_SECONDS[s], **kwargs
        )
        for s in SEEDS
    ]


def full() -> list[dict]:
    return [image_run("full", 0.0, s, FULL_ACCURACY[s], FULL_SECONDS[s]) for s in SEEDS]


def test_time_share_pairs_each_run_with_full_of_its_own_seed(tmp_path):
    """Training time (wall less evaluation) over full's of the same seed, then the mean: not a
    ratio of means; a seed full lacks is left out."""
    shares = {0: 0.5, 1: 0.6, 2: 0.4}
    runs = [image_run("ucb", 0.5, s, 0.9, shares[s] * FULL_SECONDS[s]) for s in SEEDS]
    runs.append(image_run("ucb", 0.5, 3, 0.9, 1000.0))  # no full run of seed 3 to pair
    write(tmp_path, "fashion-mnist-table", [*full(), *runs])
    setting = load_setting(tmp_path, "fashion-mnist-table")
    comparison = setting.versus_full(setting.cell("ucb", 0.5))
    assert comparison.time_share.n == 3
    assert comparison.time_share.mean == pytest.approx(0.5)  # the ratio of means is 0.47
    assert comparison.time_share.low == pytest.approx(0.5 - 4.303 * 0.1 / 3**0.5, abs=1e-3)


def test_compute_share_weighs_forwarded_samples_by_the_forward_share(tmp_path):
    forwarded, trained = (1000, 1000), (1000, 400)  # full; a method forwarding all, training 40%
    write(tmp_path, "fashion-mnist", [*cell("full", 0.0, 0, 1.0, counts=forwarded)])
    write(tmp_path, "fashion-mnist", cell("selective-backprop", 0.5, 0, 0.8, counts=trained))
    (tmp_path / "fashion-mnist" / "forward_share.json").write_text('{"forward_share": 0.25}')
    setting = load_setting(tmp_path, "fashion-mnist")
    comparison = setting.versus_full(setting.cell("selective-backprop", 0.5))
    assert comparison.compute_share == pytest.approx((0.25 * 1000 + 0.75 * 400) / 1000)


def test_targets_say_met_or_missed_by_how_much(tmp_path):
    write(tmp_path, "fashion-mnist-table", [*full(), *cell("peek", 0.5, -0.05, 0.5)])
    write(tmp_path, "fashion-mnist-table", cell("peek", 0.7, -0.62, 0.42))
    write(tmp_path, "fashion-mnist-table", cell("peek", 0.7, -0.2, 0.38, options={"steps": True}))
    setting = load_setting(tmp_path, "fashion-mnist-table")
    half, third = TARGETS
    checks = target_checks(half, setting.versus_full(setting.cell("peek", 0.5)), setting.metric)
    assert [c.text for c in checks] == ["time 0.50, met", "mean -0.05, met", "lower end -0.05, met"]
    checks = target_checks(third, setting.versus_full(setting.cell("peek", 0.7)), setting.metric)
    assert [c.text for c in checks] == ["time 0.42, 0.02 over", "mean -0.62, missed by 0.12 points"]

    out = tmp_path / "RESULTS.md"
    write_results_md(tmp_path, out, [("fashion-mnist-table", "Table")], readme=tmp_path / "none")
    report = out.read_text()
    assert "| time 0.50, met; mean -0.05, met; lower end -0.05, met | **met** |" in report
    assert "| time 0.42, 0.02 over; mean -0.62, missed by 0.12 points | missed |" in report
    # a setting of peek's other than its defaults, where measured: its own row
    assert "| a third of the cost (prune 0.7) | steps=True |" in report
    assert "| time 0.38, met; mean -0.20, met | **met** |" in report
    assert "| half the cost (prune 0.5) | steps=True |" not in report
    assert "| infobatch at 0.3 | not measured yet |" in report  # the peers were not run


def test_text_setting_compares_the_held_out_loss_in_percent_of_fulls(tmp_path):
    losses = {0: 2.0, 1: 2.5, 2: 4.0}
    runs = [text_run("full", 0.0, s, losses[s], 100.0) for s in SEEDS]
    runs += [text_run("peek", 0.5, s, 1.02 * losses[s], 50.0) for s in SEEDS]  # 2% worse
    runs += [text_run("ucb", 0.5, s, 1.10 * losses[s], 50.0) for s in SEEDS]  # peek's is lower
    write(tmp_path, "text", runs)
    setting = load_setting(tmp_path, "text")
    comparison = setting.versus_full(setting.cell("peek", 0.5))
    assert comparison.difference.mean == pytest.approx(2.0)
    checks = target_checks(TARGETS[0], comparison, setting.metric)
    assert [c.text for c in checks] == [
        "time 0.50, met",
        "mean +2.00, missed by 1.00%",
        "upper end +2.00, met",
    ]

    out = tmp_path / "RESULTS.md"
    write_results_md(tmp_path, out, [("text", "Text")], readme=tmp_path / "none")
    assert "| time ≤ 0.55, mean ≤ +1%, upper end ≤ +5% |" in out.read_text()
    assert "2.833 ± " in out.read_text() and "(perplexity " in out.read_text()
    # a lower loss is the better one: peek's against ucb's
    assert (
        "rather than a bandit's choice | -7.27 [-7.27, -7.27] | 1.00 [1.00, 1.00] | peek better |"
        in out.read_text()
    )


def test_the_default_is_the_method_that_meets_the_most_targets(tmp_path):
    """peek meets both targets, ucb one; between two that meet as many, the better mean rank
    of the difference at prune 0.5 over the settings wins."""
    for setting in ("fashion-mnist-table", "fashion-mnist"):
        write(tmp_path, setting, full())
        write(tmp_path, setting, cell("peek", 0.5, -0.05, 0.5) + cell("peek", 0.7, -0.3, 0.35))
        write(tmp_path, setting, cell("ucb", 0.5, +0.2, 0.5) + cell("ucb", 0.7, -2.0, 0.35))
        write(tmp_path, setting, cell("full-matched", 0.5, +1.0, 0.5))  # a baseline, not a pick
    settings = [load_setting(tmp_path, n) for n in ("fashion-mnist-table", "fashion-mnist")]
    assert recommended_method(settings) == "peek"
    # the highest of the targets' rates met in every setting
    assert recommended_prune(settings, "peek") == 0.7
    assert recommended_prune(settings, "ucb") == 0.5

    write(tmp_path, "cifar10-subset", [*full(), *cell("ucb", 0.5, -0.05, 0.5)])
    write(tmp_path, "cifar10-subset", cell("ucb", 0.7, -0.3, 0.35))
    write(tmp_path, "cifar10-subset", cell("peek", 0.5, -0.9, 0.5) + cell("peek", 0.7, -3, 0.3))
    settings.append(load_setting(tmp_path, "cifar10-subset"))
    # 4 targets met each; ucb ranks first at prune 0.5 in every setting
    assert recommended_method(settings) == "ucb"
    assert recommended_prune(settings, "ucb") == 0.5
    assert recommended_prune(settings, "peek") == 0.5  # no target met everywhere: the lowest


def test_the_default_method_and_rate_are_what_the_committed_evidence_recommends():
    from reproduce import RESULTS

    from dataprune.policies import DEFAULT_METHOD, DEFAULT_PRUNE

    settings = load_settings(RESULTS, list(SETTINGS))
    if not any(setting.full for setting in settings):
        pytest.skip("this edition's results are not committed yet")
    method = recommended_method(settings)
    assert (method, recommended_prune(settings, method)) == (DEFAULT_METHOD, DEFAULT_PRUNE)


def test_write_results_md_rewrites_the_readme_headline_and_marks_archived_results(tmp_path):
    results = tmp_path / "results"
    write(results, "fashion-mnist-table", [*full(), *cell("peek", 0.5, -0.05, 0.5)])
    write(results, "fashion-mnist-table", cell("peek", 0.7, -0.3, 0.35))
    variant = cell("peek", 0.5, -0.25, 0.5, options={"stretch": False})
    write(results, "fashion-mnist-table", variant)
    # the archived suite: its own full, 2x slower; el2n in 1.5x that suite's full's time
    archived = [image_run("full", 0.0, s, FULL_ACCURACY[s], 2 * FULL_SECONDS[s]) for s in SEEDS]
    archived += [
        image_run("el2n", 0.5, s, FULL_ACCURACY[s] - 0.01, 3 * FULL_SECONDS[s]) for s in SEEDS
    ]
    # not rerun in this edition, and of the same behaviour: taken from the archive
    archived += [image_run("ucb", 0.5, s, FULL_ACCURACY[s] + 0.002, FULL_SECONDS[s]) for s in SEEDS]
    archived += cell("peek", 0.5, 0, 0.1)  # rerun in this edition: not taken
    stale = cell("random", 0.5, 0, 0.1)  # it behaves otherwise now: not taken
    for result in stale:
        result["provenance"]["behaviour"] = {"core": "older", "harness": "older"}
    write(results / "archive", "fashion-mnist-table", archived + stale)
    selection = results / "fashion-mnist-table" / "peek-p0.5-s0" / "selection.pt"
    counts = torch.tensor([0, 7, 7, 3], dtype=torch.int16)
    churn = [{"epoch": 1, "entered": 2, "left": 2}]
    torch.save({"selected_count": counts, "pruned_epochs": 7, "churn": churn}, selection)
    readme = tmp_path / "README.md"
    which = "<!-- results:which -->\n<!-- /results:which -->\n"
    readme.write_text(
        f"# x\n\n<!-- results:headline -->\nold\n<!-- /results:headline -->\n{which}rest\n"
    )

    out = tmp_path / "docs" / "RESULTS.md"
    write_results_md(
        results, out, [("fashion-mnist-table", "Table"), ("text", "Text")], readme=readme
    )
    report = out.read_text()
    assert (
        "| el2n † | 0.5 | 3 | " in report
        and "| -1.00 [-1.00, -1.00] | 1.50 [1.50, 1.50] |" in report
    )
    assert "| ucb † | 0.5 | 3 | " in report and "| +0.20 [+0.20, +0.20] | 0.50 [0.50" in report
    assert "| peek † |" not in report and "| random" not in report
    assert "| `peek (stretch=False)` | the stretch:" in report
    assert "| +0.20 [+0.20, +0.20] | 1.00 [1.00, 1.00] | peek better |" in report
    assert "of 4 samples, 2 were kept in all 7 pruned epochs, 1 in none" in report
    assert (out.parent / "results" / "fashion-mnist-table-frontier.png").is_file()
    assert "## Text\n\nNot measured yet" in report
    headline = headline_markdown(results)
    assert "recommends `peek`" in headline and "it meets 2 of the 2 targets" in headline
    assert "at prune 0.5, -0.05 [-0.05, -0.05] points in 0.50 of full's training time" in headline
    which = readme_blocks(results)["which"]
    assert (
        "recommends `peek` at prune 0.7 (the highest of the targets" in which
        and "| fashion-mnist-table | 0.5 |" in which
    )
    assert readme.read_text() == (
        f"# x\n\n<!-- results:headline -->\n{headline}\n<!-- /results:headline -->\n"
        f"<!-- results:which -->\n{which}\n<!-- /results:which -->\nrest\n"
    )


def test_the_readme_blocks_are_the_committed_results():
    from reproduce import RESULTS

    if not (RESULTS / "fashion-mnist-table").is_dir():
        pytest.skip("this edition's results are not committed yet")
    readme = (ROOT / "README.md").read_text()
    for name, body in readme_blocks(RESULTS).items():
        block = readme_block(name).search(readme)
        assert block, f"README.md lacks the <!-- results:{name} --> markers"
        assert block[2] == body + "\n", f"README.md's {name} block is not the committed results"
