"""Redis memory per stored result (issue 11), statuses, timelines and every index included: N patients
x M results stored through ``shared.store.store_results`` (batches of one result per patient, the
audit entry the API writes), then every patient recomputed with the worker's calls
(``store.load_patient(raw=True)``, ``documents.patient_documents``, ``store.commit_status``).
``INFO memory`` used_memory after minus before the results, over N x M; and per key kind
(``MEMORY USAGE``), to show where the bytes are.

Baseline in the same run: the same load through the code of another commit (``--before``, default the
commit before issue 11), extracted with ``git archive`` and run in a subprocess against its own fresh
redis-server.

    python bench/memory.py [--patients 100] [--results 100] [--before f3470f0]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from recompute import BEFORE, result  # noqa: E402


def load(url: str, patients: int, results: int) -> dict:
    """Runs in the code under test: store, recompute, measure."""
    from shared import documents, store

    r = store.connect(url)
    raw = "raw" in store.load_patient.__code__.co_varnames
    pids = [f"B-{i:05d}" for i in range(patients)]
    for pid in pids:
        reg = {"patient_id": pid, "cohorts": ["BENCH"], "enrolled_on": "2015-01-05", "tki": "imatinib",
               "tki_started_on": "2014-12-01", "dose_mg": 400.0}  # fmt: skip
        store.register_patient(r, pid, reg, {"who": "bench"})
    for pid in pids:  # a first status for each (as in service), so that the measure is of results only
        data = store.load_patient(r, pid)
        store.commit_status(r, data, *documents.patient_documents(data))
    before = r.info("memory")["used_memory"]
    for m in range(results):
        batch = [result(pid, m) for pid in pids]
        audit = {"who": "api-key-1", "what": "POST /v1/assay-results",
                 "when": "2026-11-30T10:00:00.000+00:00",
                 "result_ids": [d["result_id"] for d in batch]}  # fmt: skip
        store.store_results(r, batch, audit)
    for pid in pids:
        data = store.load_patient(r, pid, raw=True) if raw else store.load_patient(r, pid)
        store.commit_status(r, data, *documents.patient_documents(data))
    after = r.info("memory")["used_memory"]
    kinds: collections.Counter = collections.Counter()
    for key in r.scan_iter(count=1000):
        name = key.decode()
        kind = name.rsplit(":", 1)[-1] if "{" in name else name
        kinds[kind] += r.memory_usage(key, samples=0) or 0
    n = patients * results
    return {"per_result": (after - before) / n, "kinds": {k: v / n for k, v in kinds.most_common(8)}}


def run_in(tree: Path, url: str, patients: int, results: int) -> dict:
    code = (
        f"import sys, json; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(ROOT / 'bench')!r});"
        f"import memory; print(json.dumps(memory.load({url!r}, {patients}, {results})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract(rev: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    (into.parent / f"{into.name}.tar").write_bytes(archive.stdout)
    with tarfile.open(into.parent / f"{into.name}.tar") as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--results", type=int, default=100)
    parser.add_argument("--before", default=BEFORE)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.procs import RedisServer

    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": extract(args.before, Path(tmp) / "before"), "after": ROOT}
        for name, tree in trees.items():
            server = RedisServer(Path(tmp) / f"redis-{name}")
            server.start()
            try:
                got[name] = run_in(tree, server.url, args.patients, args.results)
            finally:
                server.stop()
    print(f"{args.patients} patients x {args.results} results")
    for name, doc in got.items():
        ratio = doc["per_result"] / got["before"]["per_result"]
        print(f"{name:7s} {doc['per_result']:8.1f} bytes per result (x{ratio:.3f})")
        for kind, size in doc["kinds"].items():
            print(f"          {kind:28s} {size:8.1f}")


if __name__ == "__main__":
    main()
