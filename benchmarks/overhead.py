"""What the pruner costs: record() per batch, selection per epoch, and its share of a train step.

Prints markdown tables:

1. ``record()``: microseconds per call at batch sizes 128, 1024 and 8192 for N = 1.28M and
   100M samples (distinct indices in a batch, as a sampler gives them), with the eager
   statistics update and with ``Pruner(compile=True)``, beside a bare scatter of the same EMA
   update (no checks, no mean returned), in the same run. Indices and losses live on the
   device; on CUDA the clock is read after a synchronise, so the numbers are throughput,
   queued kernels included.
2. Selection: milliseconds per ``set_epoch`` of a pruned epoch (a fresh selection) for every
   method at N = 50k, 1.28M and 10M (plus 100M and 1B on CUDA), after a loss was recorded for
   every sample; next to it the raw primitives ``torch.kthvalue``, ``torch.topk`` (the smaller
   side, as the library uses it on CUDA), ``torch.sort`` and ``numpy.partition`` (host memory)
   at the same N.
3. Training step: forward + backward + SGD step of ``cnn`` (1x28x28) and ``resnet18``
   (3x32x32) at batch 512 (``--quick``: 128), without ``pruner.record`` and with it (eager and
   compiled), interleaved; the difference, and the time of ``record`` itself, as a percentage
   of the plain step. On CUDA
   the step runs under bf16 autocast with channels_last. Indices come from the host, as a
   DataLoader gives them.

    python benchmarks/overhead.py                  # CUDA if available, else CPU
    python benchmarks/overhead.py --device cpu --quick   # under a minute on 2 cores
    python benchmarks/overhead.py --sections record,selection --threads 4

``--quick`` on the CPU runs torch with one thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from dataprune import Pruner, methods

PRUNE = 0.3
FILL_CHUNK = 1 << 22  # samples per record() call when filling the statistics


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def fmt_n(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:g}{unit}" if value == int(value) else f"{value:.2f}{unit}"
    return str(n)


def fmt(value: float | str | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def guarded(fn: Callable[[], float]) -> float | str:
    """Run one measurement; an out-of-memory or other failure becomes a table cell."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        return "OOM"
    except (RuntimeError, MemoryError) as exc:  # e.g. a primitive that rejects the size
        return f"error: {type(exc).__name__}"
    finally:
        free_memory()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_pruner(
    n: int, method: str, device: torch.device, epochs: int, compile: bool = False
) -> Pruner:
    """A pruner whose epoch 0 is full and every later epoch a fresh pruned selection."""
    options = {}
    if method == "static-score":
        gen = torch.Generator(device=device).manual_seed(1)
        options["scores"] = torch.rand(n, generator=gen, device=device)
    return Pruner(
        n,
        method,
        PRUNE,
        epochs,
        seed=0,
        warmup_epochs=1,
        anneal_epochs=0,
        device=device,
        compile=compile,
        **options,
    )


# ----------------------------------------------------------------------------- record()
RECORD_BATCHES = (128, 1024, 8192)
#: What each row times: a bare scatter of the same EMA update (no checks, no mean returned:
#: the floor), and record() with the eager and the compiled statistics update.
RECORD_MODES = {"plain update": None, "record()": False, "record(), compiled": True}
PRUNER_MODES = {mode: compiled for mode, compiled in RECORD_MODES.items() if compiled is not None}


def plain_update(table: torch.Tensor, idx: torch.Tensor, loss: torch.Tensor) -> None:
    """The EMA update of distinct indices, as one gather and one scatter, nothing else."""
    rows = table.index_select(0, idx)
    mean, var, seen = rows.unbind(1)
    diff = loss - mean
    again = seen > 0
    new_mean = torch.where(again, mean + 0.8 * diff, loss)
    new_var = torch.where(again, (var + 0.8 * diff * diff) * 0.2, 0.0)
    table.index_copy_(0, idx, torch.stack([new_mean, new_var, seen + 1], 1))


def record_row(n: int, mode: str, device: torch.device, repeats: int) -> list[str]:
    compile = RECORD_MODES[mode]
    pruner = make_pruner(n, "epsilon-greedy", device, epochs=2, compile=bool(compile))
    pruner.set_epoch(0)
    gen = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(device)
    row = [fmt_n(n), mode]
    for batch in RECORD_BATCHES:
        # distinct indices within a batch, as a sampler gives them; a few distinct batches, so
        # the timed loop does not replay one cached access
        idx = [order[i * batch : (i + 1) * batch] for i in range(8)]
        loss = [torch.rand(batch, generator=gen, device=device) for _ in range(8)]
        if compile is None:
            table = torch.zeros(n, 3, device=device)

            def call(i: int, table: torch.Tensor = table, idx=idx, loss=loss) -> object:
                return plain_update(table, idx[i % 8], loss[i % 8])
        else:

            def call(i: int, idx=idx, loss=loss) -> object:
                return pruner.record(idx[i % 8], loss[i % 8])

        for i in range(3):  # warm-up
            call(i)

        def loop(call: Callable[[int], object] = call) -> None:
            for i in range(repeats):
                call(i)

        row.append(fmt(timed(loop, device) / repeats * 1e6))
    row.append(str(ops_per_call(lambda: call(0), device)))
    return row


def ops_per_call(fn: Callable[[], object], device: torch.device) -> int:
    """What one call launches: kernels (and copies) on CUDA; on the CPU, top-level operator
    calls, a compiled region counting as one."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    events = prof.events()
    if device.type == "cuda":
        return sum(e.device_type == torch.autograd.DeviceType.CUDA for e in events)
    return sum(e.cpu_parent is None and not e.name.startswith("[") for e in events)


def bench_record(device: torch.device, sizes: list[int], repeats: int) -> str:
    rows = []
    for n in sizes:
        for mode in RECORD_MODES:
            rows.append(record_row(n, mode, device, repeats))
            free_memory()
    head = ["N", "statistics update"] + [f"batch {b} (µs/call)" for b in RECORD_BATCHES]
    head.append("kernels per call" if device.type == "cuda" else "operator calls per call")
    return (
        f"### record() per call ({device.type}, {repeats} calls each, after warm-up; "
        "compiled = Pruner(compile=True); plain update = the bare EMA scatter, the floor)\n\n"
        + table(head, rows)
    )


# ---------------------------------------------------------------------------- selection
PRIMITIVES = ("kthvalue", "topk", "sort", "numpy.partition")


def filled_table(n: int, device: torch.device) -> torch.Tensor:
    """The statistics after recording one loss for every sample, in large batches."""
    pruner = make_pruner(n, "ucb", device, epochs=2)
    pruner.set_epoch(0)
    gen = torch.Generator(device=device).manual_seed(2)
    for start in range(0, n, FILL_CHUNK):
        idx = torch.arange(start, min(start + FILL_CHUNK, n), device=device)
        pruner.record(idx, torch.rand(idx.numel(), generator=gen, device=device) * 5)
    sync(device)
    return pruner.stats.table


def time_selection(
    n: int, method: str, device: torch.device, repeats: int, filled: torch.Tensor
) -> float:
    """Median milliseconds of set_epoch for pruned epochs 1..repeats (static methods: 1)."""
    pruner = make_pruner(n, method, device, epochs=repeats + 1)
    pruner.set_epoch(0)
    pruner.stats.table.copy_(filled)  # the statistics of a fully recorded epoch
    assert bool(pruner.stats.seen.all())
    epochs = range(1, repeats + 1 if pruner.policy.reselects else 2)
    times = [timed(lambda e=e: pruner.set_epoch(e), device) for e in epochs]
    assert pruner.indices().numel() == pruner.epoch_size(epochs[-1])
    return statistics.median(times) * 1e3


def time_primitives(n: int, device: torch.device, repeats: int) -> dict[str, float | str]:
    gen = torch.Generator(device=device).manual_seed(3)
    x = torch.rand(n, generator=gen, device=device)
    k = round((1 - PRUNE) * n)
    small = min(k, n - k + 1)

    def best(fn: Callable[[], object], on: torch.device = device, times: int = repeats) -> float:
        fn()  # warm-up
        return min(timed(fn, on) for _ in range(times)) * 1e3

    slow = 1 if n >= 10**8 else repeats  # CUDA kthvalue takes seconds there
    out: dict[str, float | str] = {
        "kthvalue": guarded(lambda: best(lambda: torch.kthvalue(x, n - k + 1), times=slow)),
        "topk": guarded(lambda: best(lambda: torch.topk(x, small, sorted=False))),
        "sort": guarded(lambda: best(lambda: torch.sort(x))),
        "numpy.partition": "skipped",
    }
    if n <= 10**8:
        host = x.cpu().numpy()
        cpu = torch.device("cpu")
        out["numpy.partition"] = guarded(lambda: best(lambda: np.partition(host, n - k), cpu))
    return out


def method_cells(n: int, device: torch.device, repeats: int) -> list[str]:
    try:
        filled = filled_table(n, device)
    except torch.cuda.OutOfMemoryError:
        return ["OOM"] * len(methods())
    return [
        fmt(guarded(lambda m=method: time_selection(n, m, device, repeats, filled)), 2)
        for method in methods()
    ]


def selection_row(n: int, device: torch.device, repeats: int) -> list[str]:
    row = [fmt_n(n)] + method_cells(n, device, repeats)
    free_memory()  # the filled statistics are gone before the primitives allocate
    prim = time_primitives(n, device, repeats)
    return row + [fmt(prim[p], 2) for p in PRIMITIVES]


def bench_selection(device: torch.device, sizes: list[int], repeats: int) -> str:
    rows = []
    for n in sizes:
        rows.append(selection_row(n, device, repeats))
        free_memory()
    head = ["N"] + list(methods()) + [f"{p} (raw)" for p in PRIMITIVES]
    return (
        f"### Selection: ms per set_epoch of a pruned epoch, prune={PRUNE} ({device.type}; "
        f"median of {repeats}; raw primitives: best of {repeats} (kthvalue from 100M: one call), "
        "numpy on the host)\n\n" + table(head, rows)
    )


# ------------------------------------------------------------------------ training step
MODEL_SHAPES = {"cnn": (1, 28), "resnet18": (3, 32)}  # (channels, image size), 10 classes


def train_rows(
    build_model: Callable, name: str, device: torch.device, batch: int, steps: int, warmup: int
) -> list[list[str]]:
    """One row per statistics-update mode, all from one interleaved series of steps."""
    channels, size = MODEL_SHAPES[name]
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(name, channels, 10, size).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = 50_000
    pruners = {
        mode: make_pruner(n, "epsilon-greedy", device, epochs=2, compile=compiled)
        for mode, compiled in PRUNER_MODES.items()
    }
    for pruner in pruners.values():
        pruner.set_epoch(0)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    idx_host = list(torch.randperm(n, generator=gen)[: 4 * batch].view(4, batch))
    record_seconds: dict[str | None, list[float]] = {mode: [] for mode in PRUNER_MODES}

    def step(i: int, mode: str | None, time_record: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        if mode is None:
            loss = losses.mean()
        else:
            if time_record:
                sync(device)
                begin = time.perf_counter()
            loss = pruners[mode].record(idx_host[i % 4], losses)
            if time_record:
                sync(device)
                record_seconds[mode].append(time.perf_counter() - begin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):  # warms the model's kernels (they are the same in every mode)
        step(i, "eager", False)
    for pruner in pruners.values():  # compiles the compiled update outside the timed steps
        pruner.record(idx_host[0].to(device), torch.ones(batch, device=device))
    # Interleave plain and recorded steps, so drift (clocks, caches, other load) hits all
    # alike. On the CPU record() is timed inside the recorded steps; on CUDA that needs a
    # synchronise mid-step, so it gets steps of its own.
    times: dict[str | None, list[float]] = {None: [], **{mode: [] for mode in PRUNER_MODES}}
    for i in range(steps):
        for mode in times:
            times[mode].append(timed(lambda i=i, m=mode: step(i, m, not cuda), device))
    if cuda:
        for i in range(steps):
            for mode in PRUNER_MODES:
                step(i, mode, True)
    t_plain = statistics.median(times[None])
    rows = []
    for mode in PRUNER_MODES:
        t_rec = statistics.median(times[mode])
        t_record = statistics.median(record_seconds[mode])
        rows.append(
            [
                name,
                mode,
                str(batch),
                str(steps),
                fmt(t_plain * 1e3, 2),
                fmt(t_rec * 1e3, 2),
                fmt(t_record * 1e3, 3),
                fmt(100 * (t_rec - t_plain) / t_plain, 2),
                fmt(100 * t_record / t_plain, 2),
            ]
        )
    return rows


def bench_training(
    device: torch.device,
    batch: int,
    steps: dict[str, int],
    warmup: dict[str, int],
    models: list[str],
) -> str:
    try:
        from dataprune.harness.models import build_model
    except ImportError as exc:
        return f"### Training step\n\nskipped: dataprune.harness.models not importable ({exc})"
    rows = []
    for name in models:
        rows += train_rows(build_model, name, device, batch, steps[name], warmup[name])
        free_memory()
    head = [
        "model",
        "statistics update",
        "batch",
        "steps",
        "step (ms)",
        "step + record (ms)",
        "record alone (ms)",
        "difference (% of step)",
        "record alone (% of step)",
    ]
    mode = "bf16 autocast, channels_last" if device.type == "cuda" else "fp32"
    return (
        f"### Training step: forward + backward + SGD, with and without record() "
        f"({device.type}, {mode}; medians; epsilon-greedy, N=50k, indices from the host)\n\n"
        + table(head, rows)
    )


# -------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cuda" if torch.cuda.is_available() else "cpu",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument(
        "--sections",
        default="record,selection,training",
        help="comma-separated subset of: record, selection, training",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 for --quick on the CPU)",
    )
    args = parser.parse_args(argv)
    threads = args.threads
    if threads is None and args.quick and args.device == "cpu":
        # On a small, shared machine every multi-threaded kernel waits for busy cores (10x
        # slower per op under load); one thread keeps --quick under a minute and repeatable.
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"record", "selection", "training"}
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}")
    cuda = device.type == "cuda"

    if args.quick:
        record_sizes, record_repeats = [1_280_000, 100_000_000], 50
        select_sizes, select_repeats = [50_000, 1_280_000, 10_000_000], 1
        # on 2 CPU cores a resnet18 step at batch 128 takes seconds: one timed step of each
        # kind and no warm-up step (there, record() alone is the figure to read)
        batch = 128
        steps = {"cnn": 10, "resnet18": 10} if cuda else {"cnn": 10, "resnet18": 1}
        warmup = {"cnn": 1, "resnet18": 1 if cuda else 0}
    else:
        record_sizes, record_repeats = [1_280_000, 100_000_000], 500
        select_sizes = [50_000, 1_280_000, 10_000_000] + ([10**8, 10**9] if cuda else [])
        select_repeats = 5
        batch = 512
        steps = {"cnn": 50, "resnet18": 50} if cuda else {"cnn": 10, "resnet18": 3}
        warmup = dict.fromkeys(steps, 5 if cuda else 1)
    models = ["cnn", "resnet18"]

    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "CPU"
    print(
        f"## dataprune overhead ({'quick' if args.quick else 'full'})\n\n"
        f"device: {device.type} ({name}), torch {torch.__version__}, "
        f"threads: {torch.get_num_threads()}, python {sys.version.split()[0]}\n"
    )
    start = time.perf_counter()
    if "record" in sections:
        print(bench_record(device, record_sizes, record_repeats) + "\n", flush=True)
    if "selection" in sections:
        print(bench_selection(device, select_sizes, select_repeats) + "\n", flush=True)
    if "training" in sections:
        print(bench_training(device, batch, steps, warmup, models) + "\n", flush=True)
    print(f"total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
