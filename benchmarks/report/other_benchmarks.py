"""The sections of the other benchmarks' files, each against its targets: data on disk
(``benchmarks/large_data.py``), the framework integrations (``benchmarks/integrations.py``) and
the GPU session (``benchmarks/gpu_session.sh``)."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

from dataprune import methods
from dataprune.harness.report import Row, group
from dataprune.harness.results import RunResult
from dataprune.harness.verdict import mean_interval


def _row(rows: Sequence[Row], method: str, prune: float | None = None) -> Row | None:
    for row in rows:
        if row.method == method and (prune is None or row.prune == prune):
            return row
    return None


def _fmt_acc(row: Row) -> str:
    """Mean final accuracy over seeds with its 95% interval: ``90.25±0.30%``."""
    interval = mean_interval(row.accuracy_by_seed().values())
    if interval.n < 2:
        return f"{100 * interval.mean:.2f}% (1 seed)"
    return f"{100 * interval.mean:.2f}±{100 * (interval.high - interval.mean):.2f}%"


def md_table(text: str, title_prefix: str) -> list[dict[str, str]]:
    """The rows of the markdown table under the first heading that starts with ``title_prefix``."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.lstrip("# ").startswith(title_prefix)), None
    )
    if start is None:
        return []
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    if len(table) < 2:
        return []
    return [dict(zip(table[0], row, strict=True)) for row in table[2:]]


def _number(cell: str) -> float | None:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


def _wall_ratio_line(path: Path, label: str, prune: float = 0.5) -> str:
    """Random's wall time over full's, from a compare's results.json, against (1 - p) + 0.05."""
    if not path.exists():
        return f"- {label}: not measured."
    runs = json.loads(path.read_text())["runs"]
    rows = group([RunResult.from_dict(r) for r in runs])
    full, rand = _row(rows, "full"), _row(rows, "random", prune)
    if full is None or rand is None:
        return f"- {label}: the file holds no full and random p={prune:g} pair."
    ratio = rand.wall_seconds[0] / full.wall_seconds[0]
    limit = (1 - prune) + 0.05
    verdict = "meets" if ratio <= limit else "misses"
    return (
        f"- {label}: random p={prune:g} took {ratio:.3f} of full's wall time "
        f"({rand.wall_seconds[0]:.1f} s vs {full.wall_seconds[0]:.1f} s, mean of "
        f"{len(rand.runs)} seeds; accuracy {_fmt_acc(rand)} vs {_fmt_acc(full)}): "
        f"{verdict} the target of at most {limit:.2f}."
    )


def gpu_section(folder: Path) -> str:
    """Figures of ``benchmarks/gpu_session.sh``, copied into ``folder``, with the targets of #8."""
    overhead = folder / "overhead.md"
    if not overhead.exists():
        return (
            "## GPU\n\nNot measured yet: no GPU was available to the sessions that produced "
            "these results. `bash benchmarks/gpu_session.sh` on a GPU machine produces the "
            "figures; copied into `benchmarks/results/gpu/`, they appear here."
        )
    env = (folder / "env.txt").read_text() if (folder / "env.txt").exists() else ""
    device = next((line for line in env.splitlines() if line.startswith("torch ")), "unknown")
    text = overhead.read_text()
    checks = []
    for row in md_table(text, "Training step"):
        limit = {"resnet18": 1.0, "cnn": 3.0}.get(row["model"])
        share = _number(row["difference (% of step)"])
        if limit is None or share is None:
            continue
        checks.append(
            f"- record() ({row['statistics update']}) adds {share:.2f}% to a {row['model']} "
            f"step at batch {row['batch']} ({row['step (ms)']} ms): "
            f"{'meets' if share < limit else 'misses'} the target of under {limit:g}%."
        )
    for row in md_table(text, "Selection"):
        if row["N"] in ("100M", "1B"):
            limit = {"100M": 3.0, "1B": 25.0}[row["N"]]
            topk = _number(row["topk (raw)"])
            selection_ms = [
                v for m in methods() if m != "full" and (v := _number(row.get(m, ""))) is not None
            ]
            if topk is not None:
                checks.append(
                    f"- The threshold at N={row['N']} (topk, the library's choice on CUDA) "
                    f"takes {topk:.2f} ms: {'meets' if topk <= limit else 'misses'} the target "
                    f"of at most {limit:g} ms; kthvalue takes {row['kthvalue (raw)']} ms."
                    + (
                        f" A whole selection (set_epoch) takes {min(selection_ms):.1f} to "
                        f"{max(selection_ms):.1f} ms across methods."
                        if selection_ms
                        else ""
                    )
                )
    checks.append(_wall_ratio_line(folder / "walltime.json", "Fashion-MNIST cnn, 8 epochs"))
    checks.append(_wall_ratio_line(folder / "walltime-compile.json", "the same with --compile"))
    tests = folder / "pytest.txt"
    lines = tests.read_text().splitlines() if tests.exists() else []
    outcome = [
        line.strip("= ")
        for line in lines
        if re.fullmatch(r"=* ?\d+ (passed|failed|skipped|errors?)\b.* in [\d.]+s.*", line)
    ]
    checks.append(f"- The CUDA tests (tests/test_cuda.py): {(outcome or ['no result'])[-1]}.")
    kept = ("#", "|", "device:", "total time")  # not step markers, warnings or profiler noise
    demoted = "\n".join(
        "#" + line if line.startswith("#") else line
        for line in text.splitlines()
        if not line or line.startswith(kept)
    )
    return "\n\n".join(
        [
            "## GPU",
            f"Measured by `bash benchmarks/gpu_session.sh` ({device}); the files are in "
            "`benchmarks/results/gpu/`.",
            "\n".join(checks),
            demoted.strip(),
        ]
    )


#: The pruned/full epoch wall-time ratio at prune 0.5 that loading from disk should reach.
LARGE_DATA_TARGET = 0.6


def large_data_section(folder: Path, files: Sequence[Path] | None = None) -> str:
    """The section of ``benchmarks/large_data.py``'s result files (every ``*.json`` in
    ``folder``, or ``files``): the pruned/full epoch ratio per format against the target, and
    what each format reads, decodes and steps."""
    files = sorted(folder.glob("*.json")) if files is None else list(files)
    title = "## Data on disk: decode-bound loading"
    if not files:
        return (
            f"{title}\n\nNot measured yet: `python benchmarks/large_data.py` writes the files "
            "into `benchmarks/results/large-data/`."
        )
    runs = [(path, json.loads(path.read_text())) for path in files]
    settings = []
    ratios = [
        "| format | run | full epoch (s) | pruned epoch (s) | pruned / full | target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    counts = [
        "| format | samples read | PNG decodes | bytes read (MB) | optimizer steps |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    counted = set()
    for path, run in runs:
        s = run["settings"]
        settings.append(
            f"- `{path.stem}`: {s['samples']:,} Fashion-MNIST images upscaled to {s['size']} px "
            f"(PNG), {s['workers']} DataLoader workers, batch {s['batch']}, {s['method']} at "
            f"prune {s['prune']:g}, median of {s['repeats']}; {s['cpus']} CPUs, torch "
            f"{s['torch']}, {s['date']}."
        )
        for fmt, r in run["formats"].items():
            verdict = "set at prune 0.5 only"
            if s["prune"] == 0.5:
                met = r["ratio"] <= LARGE_DATA_TARGET
                verdict = f"{'meets' if met else 'misses'} <= {LARGE_DATA_TARGET:g}"
            ratios.append(
                f"| {fmt} | `{path.stem}` | {statistics.median(r['full_seconds']):.2f} | "
                f"{statistics.median(r['pruned_seconds']):.2f} | {r['ratio']:.2f} | {verdict} |"
            )
            if fmt in counted:
                continue
            counted.add(fmt)
            full, pruned = r["full"], r["pruned"]
            cells = [f"{full[k]:,} -> {pruned[k]:,}" for k in ("reads", "decodes")]
            cells.append(f"{full['bytes'] / 1e6:.1f} -> {pruned['bytes'] / 1e6:.1f}")
            cells.append(f"{full['steps']} -> {pruned['steps']}")
            counts.append(f"| {fmt} | " + " | ".join(cells) + " |")
    return "\n\n".join(
        [
            title,
            "Measured by `python benchmarks/large_data.py` (files in "
            "`benchmarks/results/large-data/`): a full epoch and a pruned one, side by side in "
            "each repeat, read by the harness's reader from a warm page cache, with a linear "
            "model, so that decoding PNGs is the cost. Each file is one run; a format whose "
            "library needs its own environment (MDS) is a run of its own, beside the image "
            "folder again.",
            "\n".join(settings),
            "\n".join(ratios),
            "Per epoch, full -> pruned (WebDataset streams past pruned samples' bytes without "
            "extracting or decoding them: its bytes read do not shrink):",
            "\n".join(counts),
        ]
    )


#: Targets of the framework integrations at prune 0.5: pruned/full wall time, per-step overhead.
INTEGRATION_RATIO_TARGET = 0.6
INTEGRATION_OVERHEAD_TARGET = 0.02


def integrations_section(folder: Path) -> str:
    """The section of ``benchmarks/integrations.py``'s result files (every ``*.json``)."""
    title = "## Framework integrations: Lightning, the Hugging Face Trainer, Accelerate"
    files = sorted(folder.glob("*.json"))
    if not files:
        return (
            f"{title}\n\nNot measured yet: `python benchmarks/integrations.py` writes the files "
            "into `benchmarks/results/integrations/`."
        )
    parts = [
        title,
        "Measured by `python benchmarks/integrations.py` (files in "
        "`benchmarks/results/integrations/`): each framework alone on full data, and with "
        "dataprune's integration, side by side in each repeat, the same epochs; evaluation is "
        "timed apart. *wall* is the whole fit/train call, every cost counted; the per-step "
        "overhead is the pruned run's time per step (each epoch from its first step's start to "
        "its last step's end: loading and record() count, the framework's fixed work between "
        "epochs does not) against the framework alone; the time inside record() and selection, "
        "as a share of the pruned run's step time, is measured directly (the overhead is a "
        "difference of two noisy timings). Medians of ratios over the repeats.",
    ]
    for path in files:
        run = json.loads(path.read_text())
        s = run["settings"]
        parts.append(
            f"`{path.stem}`: {s['samples']:,} Fashion-MNIST images, the harness's cnn, batch "
            f"{s['batch']}, {s['epochs']} epochs, {s['method']} at prune {s['prune']:g}, "
            f"{s['repeats']} repeats; {s['cpus']} CPUs, torch {s['torch']}, {s['date']}."
        )
        rows = [
            "| integration | wall, alone (s) | wall, pruned (s) | pruned / alone | "
            "per-step overhead | record() + selection, share of step | accuracy, alone | "
            "accuracy, pruned | targets |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, r in run["integrations"].items():
            alone, pruned = r["runs"]["alone"], r["runs"]["pruned"]
            cells = [
                f"{statistics.median(x['wall_seconds'] for x in alone):.1f}",
                f"{statistics.median(x['wall_seconds'] for x in pruned):.1f}",
                f"{r['wall_ratio']:.2f}",
                f"{100 * r['step_overhead']:+.1f}%",
                f"{100 * r['machinery_share']:.1f}%",
                f"{100 * statistics.mean(x['accuracy'] for x in alone):.2f}%",
                f"{100 * statistics.mean(x['accuracy'] for x in pruned):.2f}%",
            ]
            verdict = "set at prune 0.5 only"
            if s["prune"] == 0.5:
                ratio_ok = r["wall_ratio"] <= INTEGRATION_RATIO_TARGET
                step_ok = r["step_overhead"] <= INTEGRATION_OVERHEAD_TARGET
                verdict = (
                    f"ratio {'meets' if ratio_ok else 'misses'} <= "
                    f"{INTEGRATION_RATIO_TARGET:g}; overhead {'meets' if step_ok else 'misses'} "
                    f"<= {100 * INTEGRATION_OVERHEAD_TARGET:g}%"
                )
            rows.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)
