"""The evidence benchmark's settings, and docs/RESULTS.md's GPU, data-on-disk and integrations
sections, computed from the benchmarks' files, never typed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from dataprune.harness import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from report.other_benchmarks import gpu_section, md_table  # noqa: E402

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
    from report.other_benchmarks import large_data_section

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
    from report.other_benchmarks import integrations_section

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


def test_reproduce_defines_four_settings_of_every_method_prune_rate_and_seed():
    from reproduce import DECIDING, INGREDIENTS, MORE_SEEDS, suites

    from dataprune.harness.methods import harness_methods

    by_name = {s.name: s for s in suites(smoke=False, data_dir=None, device="cpu")}
    assert list(by_name) == ["fashion-mnist-table", "fashion-mnist", "cifar10-subset", "text"]
    settings = [by_name[n] for n in ("fashion-mnist", "fashion-mnist-table", "cifar10-subset")]
    for suite in settings:
        runs = {(c.method, c.prune, c.seed) for c in suite.configs if not c.options}
        for method, entry in harness_methods().items():
            if entry.scorer:  # not rerun: reported from the archive
                assert method not in {m for m, _, _ in runs}, suite.name
                continue
            prunes = (0.0,) if "prune" in entry.unused_fields() else (0.3, 0.5, 0.7)
            assert {(method, p, s) for p in prunes for s in (0, 1, 2)} <= runs, suite.name
        # the seeds beyond the first three run only full and the cells that decide
        more = {(c.method, c.prune) for c in suite.configs if c.seed in MORE_SEEDS}
        assert more == {*DECIDING, ("full", 0.0)}, suite.name
        # the size is fixed here, not by the data folder found first
        assert all(c.train_limit and c.test_limit for c in suite.configs)
    for suite in settings[:2]:  # peek's ingredients, in the two Fashion-MNIST settings
        variants = {(c.method, str(c.options), c.prune) for c in suite.configs if c.options}
        expected = {(m, str(o), p) for m, o in INGREDIENTS for p in (0.5, 0.7)}
        assert variants == expected, suite.name
    short, table, long = (s.configs[0] for s in settings)
    assert (short.epochs, short.schedule) == (5, "onecycle")
    assert (table.epochs, table.schedule, table.batch_size, table.lr) == (8, "cosine", 128, 0.05)
    assert long.epochs >= 30 and long.train_limit == 5_000


def test_text_setting_runs_every_method_and_peeks_ingredients_each_in_its_own_folder():
    pytest.importorskip("transformers")
    import text
    from reproduce import INGREDIENT_PRUNES, INGREDIENTS, MORE_SEEDS

    runs = text.runs()
    assert len({r.name for r in runs}) == len(runs)
    plain = {(r.method, r.prune, r.seed) for r in runs if not r.options}
    assert {(m, p, s) for m in text.METHODS[1:] for p in (0.3, 0.5, 0.7) for s in (0, 1, 2)} < plain
    variants = {(r.method, r.options, r.prune, r.seed) for r in runs if r.options}
    expected = {
        (m, tuple(sorted(o.items())), p, s)
        for m, o in INGREDIENTS
        for p in INGREDIENT_PRUNES
        for s in (0, 1, 2)
    }
    assert variants == expected
    assert "peek-p0.5-s0-stepsTrue" in {r.name for r in runs}
    firsts = [r for i, r in enumerate(runs) if i == 0 or runs[i - 1].seed != r.seed]
    assert [(r.method, r.seed) for r in firsts] == [("full", s) for s in (0, 1, 2, *MORE_SEEDS)]


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


def test_a_policy_defined_in_one_file_joins_the_evidence_suites(tmp_path, toy_method):
    """Every registered method runs in the evidence suites, at every prune rate and seed."""
    import reproduce

    table = reproduce.suites(smoke=False, data_dir=None, device="cpu")[0]
    toy = sorted((c.prune, c.seed) for c in table.configs if c.method == "toy-lowest-loss")
    assert toy == [(p, s) for p in reproduce.PRUNES for s in reproduce.SEEDS]
    (smoke,) = reproduce.suites(smoke=True, data_dir=None, device="cpu")
    run = smoke.configs[0].for_method("toy-lowest-loss", 0.5, 0)
    reproduce.run_suite(reproduce.Suite("smoke", smoke.title, [run]), tmp_path)
    assert (tmp_path / "smoke" / "toy-lowest-loss-p0.5-s0" / "result.json").is_file()
