"""Selection cost per rank with sharded statistics, simulated with W CPU processes (gloo).

Each configuration starts W processes on this machine (``torch.multiprocessing.spawn``, one
thread each), builds ``Pruner(N, method, shard_stats=True)`` and times ``set_epoch`` on every
rank: the first epoch, when no sample has been seen (every score is ``+inf``: the whole
threshold is a tie, broken by hashed keys), then re-selections over filled statistics (each
rank writes random losses straight into its shard, as if an epoch had been recorded). W=1 is
the plain single-process Pruner (one fresh process too), for comparison. It also times
``record`` of one batch per rank (gather + update of the sharded statistics).

Memory per rank: the statistics (the EMA table and selection counts this rank holds), and the
process RSS after building the pruner and selecting, minus the RSS before, and the peak RSS
minus the RSS before. Every rank also holds the selected subset itself (k int64 indices),
which is the same on every rank by design and counted in the RSS, so the RSS does not shrink
with W the way the statistics do; neither does the gather of the kept indices.

    python benchmarks/scale.py             # N = 10M and 100M, W = 1 and 2, ucb and random
    python benchmarks/scale.py --quick     # N = 1M and 10M
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dataprune import Pruner

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _timed(fn) -> float:
    _barrier()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    _barrier()
    return elapsed


def measure(n: int, method: str, prune: float, repeats: int, batch: int) -> dict:
    torch.manual_seed(0)
    before = rss()
    pruner = Pruner(n, method, prune, repeats + 2, seed=0, shard_stats=True)
    stats = pruner.stats
    first = _timed(lambda: pruner.set_epoch(0))
    # as if every sample of this shard had been recorded for a while
    gen = torch.Generator().manual_seed(1 + stats.offset)
    rows = stats.table
    rows[:, 0] = torch.rand(rows.shape[0], generator=gen) * 4
    rows[:, 1] = torch.rand(rows.shape[0], generator=gen)
    rows[:, 2] = 3.0
    times = [_timed(lambda e=e: pruner.set_epoch(e)) for e in range(1, repeats + 1)]
    idx = torch.randint(0, n, (batch,), generator=gen)
    losses = torch.rand(batch, generator=gen)
    record = [_timed(lambda: pruner.record(idx, losses)) for _ in range(10)]
    stats_bytes = stats.table.numel() * 4 + pruner.selected_count.numel() * 4
    return {
        "first_ms": first * 1e3,
        "select_ms": statistics.median(times) * 1e3,
        "record_ms": statistics.median(record) * 1e3,
        "stats_mb": stats_bytes / 2**20,
        "rss_mb": (rss() - before) / 2**20,
        "peak_mb": (peak_rss() - before) / 2**20,
        "subset": pruner.indices().numel(),
    }


def _worker(rank: int, world: int, store: str, args: tuple, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    result = measure(*args)
    torch.save(result, f"{out}.rank{rank}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def run(n: int, world: int, method: str, prune: float, repeats: int, batch: int) -> list[dict]:
    args = (n, method, prune, repeats, batch)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        mp.spawn(
            _worker, args=(world, os.path.join(tmp, "store"), args, out), nprocs=world, join=True
        )
        return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(world)]


def size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1], 1)
    return int(float(text.rstrip("KMG")) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10M,100M", help="comma-separated N (K/M suffixes)")
    parser.add_argument("--quick", action="store_true", help="N = 1M and 10M")
    parser.add_argument("--worlds", default="1,2", help="comma-separated W (1: unsharded)")
    parser.add_argument("--methods", default="ucb,random")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="re-selections timed (median)")
    parser.add_argument("--batch", type=int, default=1024, help="record() batch per rank")
    args = parser.parse_args()
    sizes = [size(s) for s in ("1M,10M" if args.quick else args.sizes).split(",")]
    worlds = [int(w) for w in args.worlds.split(",")]
    methods = args.methods.split(",")

    print(
        f"# Sharded selection, prune={args.prune:g}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, one thread per rank; per-rank figures, max over ranks\n"
    )
    print(
        "| method | N | W | first selection, all unseen (ms) | re-selection (ms) "
        "| record, batch/rank (ms) | statistics per rank (MB) | RSS delta per rank (MB) "
        "| peak RSS delta per rank (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in methods:
        for n in sizes:
            for world in worlds:
                ranks = run(n, world, method, args.prune, args.repeats, args.batch)
                worst = {key: max(r[key] for r in ranks) for key in ranks[0]}
                print(
                    f"| {method} | {n / 1e6:g}M | {world} | {worst['first_ms']:,.0f} "
                    f"| {worst['select_ms']:,.0f} | {worst['record_ms']:.2f} "
                    f"| {worst['stats_mb']:,.0f} | {worst['rss_mb']:,.0f} "
                    f"| {worst['peak_mb']:,.0f} |",
                    flush=True,
                )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
