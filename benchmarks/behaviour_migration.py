"""Carry committed results across a refactor: the code that made them against this code.

    # on each commit that produced results (its checkout's src first on the path):
    PYTHONPATH=<old checkout>/src python benchmarks/behaviour_migration.py run digits > old.json
    # here:
    python benchmarks/behaviour_migration.py check          # every saved run against this code
    python benchmarks/behaviour_migration.py stamp          # then record the behaviour digests

``run`` trains every harness method on the embedded digits (or a Fashion-MNIST slice) with
the harness of whatever dataprune is imported, one thread, and prints a hash of the final
model's weights and of every epoch's record, to the bit: stronger than a behaviour digest, and
it needs only the harness entry points that every version has. ``check`` runs it here and
compares it with the runs saved under ``benchmarks/results/migration/<source>-<setting>.json``
(``<source>``: the first 12 characters of the results' ``provenance["source"]``). ``stamp``
adds this code's behaviour digests to every committed result whose code and method ``check``
found identical; the others stay without digests, stale, for ``reproduce.py --rerun-stale``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SAVED = ROOT / "benchmarks" / "results" / "migration"
SETTINGS = ("digits", "fashion")


def run(setting: str) -> dict[str, str]:
    """The bitwise hash of every harness method's run in ``setting``."""
    try:  # this code: a run is resolved from its configuration
        from dataprune.harness.config import RunConfig

        resolve = RunConfig.resolve
    except ImportError:  # code before the harness's split: the configuration is the run
        from dataprune.harness.trainer import RunConfig

        def resolve(config):
            return config

    from dataprune.harness.methods import run_methods
    from dataprune.harness.scoring.run import run_static
    from dataprune.harness.trainer import train

    torch.set_num_threads(1)
    common = dict(model="cnn", epochs=3, score_epochs=1, score_runs=1, progress=False)
    if setting == "digits":
        base = RunConfig(dataset="digits", batch_size=64, device="cpu", **common)
    else:
        base = RunConfig(
            dataset="fashion-mnist", train_limit=3000, test_limit=500, batch_size=128,
            lr=0.05, schedule="cosine", device="cpu", **common,
        )  # fmt: skip
    hashes = {}
    for method in run_methods():
        if method == "kakurenbo":  # its behaviour changed on purpose (CHANGELOG)
            continue
        config = base.for_method(method, 0.5, seed=1)
        scorer = method in ("el2n", "grand", "forgetting")
        result, model = (run_static if scorer else train)(resolve(config))
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        for e in result.epochs:
            digest.update(f"{e.samples},{e.steps},{e.train_loss!r},{e.test_accuracy!r}".encode())
        hashes[method] = digest.hexdigest()[:16]
    return hashes


def identical() -> dict[str, set[str]]:
    """For each saved source, the methods whose runs this code reproduces to the bit."""
    now = {setting: run(setting) for setting in SETTINGS}
    same: dict[str, set[str]] = {}
    for path in sorted(SAVED.glob("*-digits.json")):
        source = path.name.removesuffix("-digits.json")
        saved = {s: json.loads((SAVED / f"{source}-{s}.json").read_text()) for s in SETTINGS}
        same[source] = {
            m for m in saved["digits"] if all(saved[s][m] == now[s][m] for s in SETTINGS)
        }
        print(f"{source}: {len(same[source])} of {len(saved['digits'])} methods identical")
    return same


def stamp() -> None:
    from dataprune.harness.behaviour import digests
    from dataprune.harness.files import write_json

    same = identical()
    stamped = 0
    for path in sorted((ROOT / "benchmarks" / "results").rglob("result.json")):
        result = json.loads(path.read_text())
        provenance, method = result.get("provenance", {}), result["config"]["method"]
        if method in same.get(provenance.get("source", "")[:12], ()):
            provenance["behaviour"] = digests(method)
            write_json(path, result)
            stamped += 1
    print(f"{stamped} results stamped with their method's behaviour digests")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "run":
        print(json.dumps(run(sys.argv[2])))
    elif command == "check":
        identical()
    else:
        stamp()
