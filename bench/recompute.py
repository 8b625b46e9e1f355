"""Recompute of one patient with 1,000 results (issue 11): load + compute + commit, as the worker's
``recompute_patient`` does them (``store.load_patient(raw=True)``, ``documents.patient_documents``,
``store.commit_status``), warm (the worker has seen the results before: every recompute after the
first) and cold (a fresh process: every result parsed and scored once).

Baselines in the same run, against the same redis-server, alternating rounds:

- ``before``: the same measurement run by the code of another commit (``--before``, default the commit
  before issue 11), extracted with ``git archive`` into a temporary directory and run in a subprocess;
- ``bare``: the floor of any recompute: the same snapshot read (MULTI: GET, GET, HVALS, HVALS), every
  result parsed with orjson, and one status-sized SET.

    python bench/recompute.py [--rounds 7] [--results 1000] [--before f3470f0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "f3470f0"  # the commit before issue 11's recompute work


def result(pid: str, i: int) -> dict:
    month = i % 120
    return {
        "result_id": f"LAB-2024-{pid}-{i:06d}",
        "patient_id": pid,
        "collected_at": f"{2015 + month // 12}-{1 + month % 12:02d}-{1 + i % 28:02d}",
        "control_gene": "ABL1",
        "control_copies": 100000.0 + i,
        "bcr_abl1_copies": float(40 - i % 37) if i % 11 else 0.0,
        "is_percent": None,
        "conversion_factor": 1.0,
        "status": "entered-in-error" if i % 97 == 0 else "final",
        "lab": "Central lab",
        "assay": "qPCR",
        "transcript": "e14a2",
    }


def seed(url: str, pid: str, n: int) -> None:
    from shared import store

    r = store.connect(url)
    reg = {"patient_id": pid, "cohorts": ["BENCH"], "enrolled_on": "2015-01-05", "tki": "imatinib",
           "tki_started_on": "2014-12-01", "dose_mg": 400.0}  # fmt: skip
    store.register_patient(r, pid, reg, {"who": "bench"})
    store.store_results(r, [result(pid, i) for i in range(n)], {"who": "bench"})


def measure(url: str, pid: str, reps: int, n: int) -> dict:
    """Runs in the code under test (this tree or the extracted one): cold then warm, ms per recompute.
    The tree stores its own patient first (the stored encodings differ)."""
    from shared import documents, keys, store

    r = store.connect(url)
    if not r.exists(keys.registration(pid)):
        seed(url, pid, n)
    raw = "raw" in store.load_patient.__code__.co_varnames

    def once() -> float:
        t = time.perf_counter()
        data = store.load_patient(r, pid, raw=True) if raw else store.load_patient(r, pid)
        status, timeline, record = documents.patient_documents(data)
        store.commit_status(r, data, status, timeline, record)
        return (time.perf_counter() - t) * 1000

    cold = once()
    once()
    warm = statistics.median(once() for _ in range(reps))
    return {"cold": cold, "warm": warm}


def bare(url: str, pid: str, reps: int) -> float:
    import orjson

    from shared import keys, store

    r = store.connect(url)
    status = r.get(keys.status(pid))

    def once() -> float:
        t = time.perf_counter()
        pipe = r.pipeline(transaction=True)
        pipe.get(keys.version(pid))
        pipe.get(keys.registration(pid))
        pipe.hvals(keys.results(pid))
        pipe.hvals(keys.events(pid))
        _, reg, results, events = pipe.execute()
        [orjson.loads(x) for x in results]
        r.set(keys.status(pid) + ":bare", orjson.dumps(orjson.loads(status)))
        return (time.perf_counter() - t) * 1000

    once()
    return statistics.median(once() for _ in range(reps))


def run_in(tree: Path, url: str, pid: str, reps: int, n: int) -> dict:
    code = (
        f"import sys, json; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(ROOT / 'bench')!r});"
        f"import recompute; print(json.dumps(recompute.measure({url!r}, {pid!r}, {reps}, {n})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--before", default=BEFORE)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.procs import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True)
        (Path(tmp) / "before.tar").write_bytes(archive.stdout)
        with tarfile.open(Path(tmp) / "before.tar") as tar:
            tar.extractall(old, filter="data")
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            # Each tree stores and recomputes its own patient (the stored layouts differ).
            rows: dict[str, list[float]] = {k: [] for k in ("after warm", "after cold", "before warm",
                                                            "before cold", "bare")}  # fmt: skip
            for i in range(args.rounds):
                order = ("after", "before") if i % 2 else ("before", "after")
                for which in order:
                    tree, pid = (ROOT, "NEW") if which == "after" else (old, "OLD")
                    got = run_in(tree, server.url, pid, args.reps, args.results)
                    rows[f"{which} warm"].append(got["warm"])
                    rows[f"{which} cold"].append(got["cold"])
                rows["bare"].append(bare(server.url, "OLD", args.reps))  # JSON results, as the floor
        finally:
            server.stop()
    base = statistics.median(rows["before warm"])
    print(
        f"{args.results} results, {args.rounds} rounds x {args.reps} recomputes, cpu count {os.cpu_count()}"
    )
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"{name:12s} median {med:7.2f} ms  (min {min(values):6.2f}, max {max(values):6.2f})"
              f"  vs before warm x{med / base:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
