"""docs/RESULTS.md's GPU and data-on-disk sections are computed from the benchmarks' files,
never typed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from dataprune.harness import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from report_results import gpu_section, md_table  # noqa: E402

OVERHEAD = """## dataprune overhead (full)

### Selection: ms per set_epoch of a pruned epoch, prune=0.3 (cuda; median of 5)

| N | full | random | ucb | kthvalue (raw) | topk (raw) | sort (raw) | numpy.partition (raw) |
|---:|---:|---:|---:|---:|---:|---:|---:|
| 100M | 0.01 | 4.00 | 9.00 | 723.00 | 2.30 | 5.10 | skipped |
| 1B | 0.01 | 40.00 | 80.00 | 7,200.00 | 21.00 | 50.00 | skipped |

### Training step: forward + backward + SGD, with and without record() (cuda)

| model | statistics update | batch | steps | step (ms) | step + record (ms) | record alone (ms) | difference (% of step) | record alone (% of step) |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| cnn | eager | 512 | 50 | 2.80 | 2.95 | 0.200 | 5.36 | 7.14 |
| resnet18 | compiled | 512 | 50 | 10.10 | 10.15 | 0.050 | 0.50 | 0.50 |
"""  # noqa: E501


def test_gpu_section_checks_each_target_from_the_files(tmp_path, capsys):
    folder = tmp_path / "gpu"
    assert "Not measured yet" in gpu_section(folder)

    folder.mkdir()
    (folder / "overhead.md").write_text(OVERHEAD)
    (folder / "env.txt").write_text("torch 2.11.0 cuda 13.0 numpy 2.5 gpu NVIDIA H100\n")
    (folder / "pytest.txt").write_text(".....\n5 passed in 61.00s\n== exit 0 after 62 s\n")
    argv = ["compare", "--methods", "full,random", "--prune", "0.5", "--epochs", "1"]
    assert cli.main([*argv, "--no-progress", "--out", str(tmp_path / "cmp")]) == 0
    shutil.copy(tmp_path / "cmp" / "results.json", folder / "walltime.json")

    rows = md_table(OVERHEAD, "Training step")
    assert [r["model"] for r in rows] == ["cnn", "resnet18"]
    text = gpu_section(folder)
    assert "NVIDIA H100" in text
    assert "adds 5.36% to a cnn step at batch 512 (2.80 ms): misses the target of under 3%" in text
    assert "adds 0.50% to a resnet18 step" in text and "meets the target of under 1%" in text
    assert "N=100M (topk, the library's choice on CUDA) takes 2.30 ms: meets" in text
    assert "N=1B (topk, the library's choice on CUDA) takes 21.00 ms: meets" in text
    assert "A whole selection (set_epoch) takes 40.0 to 80.0 ms across methods." in text
    assert "The CUDA tests (tests/test_cuda.py): 5 passed in 61.00s." in text
    assert "random p=0.5 took" in text and "of full's wall time" in text
    assert "the same with --compile: not measured." in text
    assert "#### Training step" in text  # the raw tables follow, one heading level down


def test_large_data_records_what_each_format_reads_and_the_report_shows_it(tmp_path, capsys):
    """A tiny run of benchmarks/large_data.py: its file holds each format's counts (a pruned
    epoch reads and decodes only the kept half), and docs/RESULTS.md's section comes from it."""
    import json

    import large_data
    from report_results import large_data_section

    if not (large_data.ROOT.parent / "shared" / "data" / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    assert "Not measured yet" in large_data_section(tmp_path)
    path = tmp_path / "run.json"
    argv = ["--samples", "300", "--size", "16", "--repeats", "1", "--workers", "1"]
    large_data.main([*argv, "--batch", "100", "--json", str(path)])
    run = json.loads(path.read_text())
    assert "folder" in run["formats"] and run["settings"]["size"] == 16
    for fmt, result in run["formats"].items():
        full, pruned = result["full"], result["pruned"]
        assert (full["reads"], full["decodes"], full["steps"]) == (300, 300, 3), fmt
        assert (pruned["reads"], pruned["decodes"], pruned["steps"]) == (150, 150, 2), fmt
    assert capsys.readouterr().out.strip() == large_data_section(tmp_path).strip()

    run["formats"]["folder"]["ratio"] = 0.7
    path.write_text(json.dumps(run))
    text = large_data_section(tmp_path)
    assert "| folder | `run` |" in text and "| 0.70 | misses <= 0.6 |" in text
    assert "| folder | 300 -> 150 | 300 -> 150 |" in text


def test_integrations_benchmark_times_each_framework_alone_and_pruned(tmp_path, capsys):
    """A tiny run of benchmarks/integrations.py: every framework trains the full and the pruned
    step counts, and docs/RESULTS.md's section comes from its file."""
    import json

    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    import integrations
    from report_results import integrations_section

    if not (integrations.ROOT.parent / "shared" / "data" / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not found in ../shared/data")
    assert "Not measured yet" in integrations_section(tmp_path)
    path = tmp_path / "run.json"
    integrations.main(["--samples", "256", "--epochs", "1", "--repeats", "1", "--json", str(path)])
    run = json.loads(path.read_text())
    assert sorted(run["integrations"]) == sorted(integrations.INTEGRATIONS)
    for name, result in run["integrations"].items():
        (alone,), (pruned,) = result["runs"]["alone"], result["runs"]["pruned"]
        assert (alone["steps"], pruned["steps"]) == (2, 1), name
    report = integrations_section(tmp_path)
    assert report.strip() in capsys.readouterr().out
    assert "| lightning |" in report and "| hf |" in report


def test_reproduce_defines_three_settings_of_every_method_prune_rate_and_seed():
    from reproduce import suites

    from dataprune.harness.methods import harness_methods

    by_name = {s.name: s for s in suites(smoke=False, data_dir=None, device="cpu")}
    settings = [by_name[n] for n in ("fashion-mnist", "fashion-mnist-table", "cifar10-subset")]
    for suite in settings:
        runs = {(c.method, c.prune, c.seed) for c in suite.configs}
        for method, entry in harness_methods().items():
            prunes = (0.0,) if "prune" in entry.unused_fields() else (0.3, 0.5, 0.7)
            assert {(method, p, s) for p in prunes for s in (0, 1, 2)} <= runs, suite.name
        # the size is fixed here, not by the data folder found first
        assert all(c.train_limit and c.test_limit for c in suite.configs)
    short, table, long = (s.configs[0] for s in settings)
    assert (short.epochs, short.schedule) == (5, "onecycle")
    assert (table.epochs, table.schedule, table.batch_size, table.lr) == (8, "cosine", 128, 0.05)
    assert long.epochs >= 30 and long.train_limit == 5_000
    for config in by_name["ablations"].configs:
        config.resolve()  # each a valid run (a scorer's fields left on a bandit's are refused)
    every = {c.every for c in by_name["ablations"].configs}
    assert every == {1, 2} and {c.epochs for c in by_name["ablations"].configs} == {8}


def _run(method: str, prune: float, seed: int, accuracy: float, train_s: float):
    """A one-epoch result: ``train_s`` seconds of training, then 1 s of evaluation."""
    from dataprune.harness.config import RunConfig
    from dataprune.harness.results import EpochRecord, RunResult

    epoch = EpochRecord(0, 100, 0.5, accuracy, train_s, 0.0, 1.0, train_s + 1.0)
    return RunResult(RunConfig(method=method, prune=prune, seed=seed), epochs=[epoch])


def test_targets_name_the_best_method_and_the_margin_of_a_miss(tmp_path):
    from report_results import headline, targets_section, write_results_md

    from dataprune.harness.report import group

    results = [_run("full", 0.0, s, a, 10.0) for s, a in enumerate((0.900, 0.910, 0.890))]
    # at 0.5: ucb is the most accurate (0.05 points below full: met), at half the time
    results += [_run("ucb", 0.5, s, a - 0.0005, 5.0) for s, a in enumerate((0.90, 0.91, 0.89))]
    results += [_run("random", 0.5, s, a - 0.01, 4.0) for s, a in enumerate((0.90, 0.91, 0.89))]
    # more accurate than full but slower than it: never the best, and named as such
    results += [
        _run("selective-backprop", 0.5, s, a + 0.01, 12.0) for s, a in enumerate((0.90, 0.91, 0.89))
    ]
    # at 0.7: the best is 0.8 points below full, a miss of 0.3 against the -0.5 target
    results += [_run("ucb", 0.7, s, a - 0.008, 3.0) for s, a in enumerate((0.90, 0.91, 0.89))]
    rows = group(results)
    section = targets_section(rows, next(r for r in rows if r.method == "full"))
    assert "| 0.5 | ucb | 89.95±" in section
    assert "in less time than full (not so here: selective-backprop)" in section
    assert "| -0.05 [-0.05, -0.05] | -0.1: met | 0.50 | ≤ 0.53: met | ucb, 0.50 |" in section
    assert "| 0.7 | ucb |" in section and "-0.5: missed by 0.30 | 0.30 | - | none |" in section

    root = tmp_path
    for r in results:
        folder = (
            root / "fashion-mnist-table" / f"{r.config.method}-{r.config.prune}-{r.config.seed}"
        )
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(r.to_dict()))
    line = headline(root)
    assert "full training 90.00±2.48%" in line
    assert "at prune 0.5, `ucb` 89.95±2.48% (-0.05 [-0.05, -0.05] points" in line
    write_results_md(root, root / "RESULTS.md", [("fashion-mnist-table", "Table")], smoke=True)
    assert "### Targets: the best method" in (root / "RESULTS.md").read_text()


def test_reproduce_refuses_results_of_other_code_unless_told_to_rerun_them(tmp_path):
    from reproduce import Suite, is_stale, run_suite

    from dataprune.harness.config import RunConfig
    from dataprune.harness.runner import RunError

    config = RunConfig(
        dataset="digits", method="random", prune=0.5, epochs=1, train_limit=300, progress=False
    )
    suite = Suite("tiny", "Tiny", [config])
    run_suite(suite, tmp_path)
    path = tmp_path / "tiny" / "random-p0.5-s0" / "result.json"
    assert not is_stale(path.parent)
    result = json.loads(path.read_text())
    result["provenance"]["source"] = "refactored code"  # the text alone: still valid
    path.write_text(json.dumps(result))
    assert not is_stale(path.parent)
    result["provenance"]["behaviour"] = {"core": "older", "harness": "older"}
    path.write_text(json.dumps(result))
    assert is_stale(path.parent)
    with pytest.raises(RunError, match="behaviour="):
        run_suite(suite, tmp_path)
    run_suite(suite, tmp_path, rerun_stale=True)
    assert not is_stale(path.parent)


def _write(root: Path, suite: str, results) -> None:
    for r in results:
        c = r.config
        folder = root / suite / f"{c.method}-{c.prune}-{c.seed}-{c.rescale}-{c.every}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(r.to_dict()))


def test_settings_table_and_ablations_compare_paired_by_seed(tmp_path):
    """Which method wins in each setting, against the default; ablations against the main
    grid's run of the same method, paired by seed, with a verdict only where the interval
    excludes zero, and their cost in optimizer steps."""
    import dataclasses

    from report_results import DEFAULT_METHOD, settings_section, write_results_md

    assert DEFAULT_METHOD == "epsilon-greedy"  # the Pruner's own default, read from it
    accs = (0.900, 0.910, 0.890)
    full = [_run("full", 0.0, s, a, 10.0) for s, a in enumerate(accs)]
    default = [_run(DEFAULT_METHOD, 0.5, s, a - 0.010, 5.0) for s, a in enumerate(accs)]
    # setting A: ucb beats the default by 0.5 points in every seed (a measured difference)
    ucb = [_run("ucb", 0.5, s, a - 0.005, 5.0) for s, a in enumerate(accs)]
    _write(tmp_path, "a", [*full, *default, *ucb])
    # setting B: ucb is best on the mean, but not in every seed (no difference measured)
    noisy = [_run("ucb", 0.5, s, a, 5.0) for s, a in enumerate((0.900, 0.890, 0.890))]
    _write(tmp_path, "b", [*full, *default, *noisy])
    text = settings_section(tmp_path, [("a", "Setting A"), ("b", "Setting B"), ("c", "None")])
    rows = [line for line in text.splitlines() if line.startswith("| Setting")]
    assert len(rows) == 2
    assert rows[0].startswith("| Setting A | 0.5 | `ucb` 89.50±2.48% | -0.50 [-0.50, -0.50] |")
    assert rows[0].endswith("| -1.00 [-1.00, -1.00] | +0.50 [+0.50, +0.50] | holds |")
    assert rows[1].startswith("| Setting B | 0.5 | `ucb` ")
    assert rows[1].endswith("| no difference measured |")
    assert "It is in 1 of the 2 cells where another method is best." in text

    # ablations: ucb with rescale + anneal, 0.2 points above the main grid's ucb in each seed
    def variant(r):
        config = dataclasses.replace(r.config, rescale=True, anneal_epochs=1)
        epochs = [
            dataclasses.replace(e, test_accuracy=e.test_accuracy + 0.002, steps=7) for e in r.epochs
        ]
        return dataclasses.replace(r, config=config, epochs=epochs)

    root = tmp_path / "report"
    _write(root, "fashion-mnist-table", [*full, *default, *ucb])
    _write(root, "ablations", [variant(r) for r in ucb])
    out = root / "RESULTS.md"
    write_results_md(root, out, [("fashion-mnist-table", "Table")])
    report = out.read_text()
    assert "## Which method, in which setting" in report
    assert "| ucb | True | 1 | 89.70±2.48% | +0.20 [+0.20, +0.20] | holds |" in report
    assert "**5a. Verdict: holds.**" in report
    assert (
        "| ucb | 1 | std | True | 1 | 89.70±2.48% | +0.20 [+0.20, +0.20] | higher | 7 |" in report
    )


def test_errata_mark_rows_of_defective_code_and_measure_the_fix(tmp_path):
    """Rows whose runs come from code with a known defect are marked and say what to rerun;
    once rerun, the erratum compares the runs kept from before the fix, paired by seed."""
    import dataclasses

    from report_results import ERRATA, errata_lines, load_results, settings_section

    from dataprune.harness.report import group

    erratum = ERRATA[0]
    accs = (0.900, 0.910, 0.890)

    def made_by(results, source):
        return [dataclasses.replace(r, provenance={"source": source}) for r in results]

    full = [_run("full", 0.0, s, a, 10.0) for s, a in enumerate(accs)]
    default = [_run("epsilon-greedy", 0.5, s, a - 0.010, 5.0) for s, a in enumerate(accs)]
    before = [_run(erratum.method, 0.5, s, a - 0.040, 4.0) for s, a in enumerate(accs)]
    after = [_run(erratum.method, 0.5, s, a - 0.005, 4.0) for s, a in enumerate(accs)]
    _write(tmp_path, "old", [*full, *default, *made_by(after, erratum.sources[0] + "ff")])
    lines = errata_lines(tmp_path / "old", group(load_results(tmp_path / "old")))
    assert len(lines) == 1 and "predate the fix" in lines[0]
    assert f"--suite old --method {erratum.method} --rerun-stale" in lines[0]
    assert f"| `{erratum.method}`‡ 89.50" in settings_section(tmp_path, [("old", "Old")])

    _write(tmp_path, "new", [*full, *default, *made_by(after, "fixed")])
    _write(tmp_path / "errata" / erratum.method, "new", made_by(before, erratum.sources[0]))
    (line,) = errata_lines(tmp_path / "new", group(load_results(tmp_path / "new")))
    assert "prune 0.5: 86.00±2.48% before, 89.50±2.48% after (+3.50 [+3.50, +3.50] points)" in line
    assert "no speed check was run" in line
    assert "‡" not in settings_section(tmp_path, [("new", "New")])
    # full training run again beside the rerun, at 0.8x its time in the suite
    _write(tmp_path / "errata" / erratum.method, "new", [_run("full", 0.0, 0, 0.900, 7.8)])
    (line,) = errata_lines(tmp_path / "new", group(load_results(tmp_path / "new")))
    assert "(seed 0) run again beside the rerun took 0.80x its time in the suite, at the" in line
