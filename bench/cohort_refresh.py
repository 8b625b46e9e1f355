"""Whole cohort refresh at 100,000 patients: from the follow-up records in Redis to the stored
statistics document, stage by stage, with the same calls the refresh_cohort task makes.

    python bench/cohort_refresh.py [--n 100000] [--repeat 5]

Prints the best of --repeat for each stage and the total (target: whole refresh <= 1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import cohort_store, cohorts, documents, keys, store  # noqa: E402
from shared.store import canonical  # noqa: E402
from tests.procs import RedisServer  # noqa: E402

COHORT = "BENCH"


def records(n: int, seed: int = 3) -> dict[str, dict]:
    """Visit-date data: quarterly visits on a weekly grid, a third reaching MR4.5, some deaths."""
    rng = np.random.default_rng(seed)
    base = date(2015, 1, 5)
    out = {}
    for i in range(n):
        enrolled = base + timedelta(days=7 * int(rng.integers(0, 300)))
        last = int(rng.integers(1, 40)) * 91
        reached = int(rng.integers(1, 40)) * 91 if rng.random() < 0.35 else None
        reach = {lvl: None for lvl in cohorts.ENDPOINT_LEVELS}
        if reached is not None and reached <= last:
            reach["MMR"] = reach["MR4"] = reach["MR4.5"] = (enrolled + timedelta(days=reached)).isoformat()
        events = (
            [["death", (enrolled + timedelta(days=last + 30)).isoformat()]] if rng.random() < 0.05 else []
        )
        out[f"P{i:06d}"] = {
            "enrolled_on": enrolled.isoformat(),
            "level": "MR4.5" if reach["MR4.5"] else "MMR",
            "reached": reach,
            "first_assay": (enrolled + timedelta(days=min(91, last))).isoformat(),
            "last_assay": (enrolled + timedelta(days=last)).isoformat(),
            "events": events,
        }
    return out


def seed(r, data: dict[str, dict]) -> None:
    pipe = r.pipeline(transaction=False)
    items = list(data.items())
    for start in range(0, len(items), 5000):
        chunk = items[start : start + 5000]
        pipe.hset(keys.cohort_followup(COHORT), mapping={pid: canonical(rec) for pid, rec in chunk})
        pipe.sadd(keys.cohort_members(COHORT), *[pid for pid, _ in chunk])
    pipe.sadd(keys.COHORTS, COHORT)
    pipe.execute()


def refresh_once(r, pause_gc: bool) -> dict[str, float]:
    """The refresh_cohort task body (services/worker/cohorts.py), timed stage by stage."""
    r.incr(keys.cohort_version(COHORT))  # a member changed: a new version to compute
    with cohort_store.paused_gc() if pause_gc else contextlib.nullcontext():
        t0 = time.perf_counter()
        snap = cohort_store.load_cohort(r, COHORT)
        t1 = time.perf_counter()
        data = cohorts.cohort_data(snap.records, snap.definition)
        t2 = time.perf_counter()
        doc, curve = documents.cohort_documents(snap, data)
        t3 = time.perf_counter()
    cohort_store.commit_cohort(r, COHORT, snap.version, doc, cohort_store.encode_arrays(data, curve))
    t4 = time.perf_counter()
    return {"read": t1 - t0, "outcomes": t2 - t1, "statistics": t3 - t2, "store": t4 - t3, "total": t4 - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            r = store.connect(server.url)
            seed(r, records(args.n))
            # Alternate: the task's way (collector paused) and the baseline (collector running).
            runs = {True: [], False: []}
            for _ in range(args.repeat):
                for pause in (True, False):
                    runs[pause].append(refresh_once(r, pause))
        finally:
            server.stop()
    print(f"cohort refresh, n = {args.n:,} patients, {args.repeat} runs each (ms)")
    print(f"  {'stage':<11} {'task (gc paused) best':>22} {'median':>8} {'gc running, median':>19}")
    for stage in runs[True][0]:
        paused = sorted(run[stage] * 1000 for run in runs[True])
        running = sorted(run[stage] * 1000 for run in runs[False])
        mid = len(paused) // 2
        print(f"  {stage:<11} {paused[0]:>22.1f} {paused[mid]:>8.1f} {running[mid]:>19.1f}")
    print("  target: whole refresh (total) <= 1000 ms")


if __name__ == "__main__":
    main()
