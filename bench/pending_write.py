"""What marking documents pending costs the write path: one batch of 1,000 results for 1,000 patients
of one cohort (``shared.store.store_results``, the script the API runs before its 202), every
patient's status and timeline stored and saying ``pending: false`` (so each write flips 2,000
documents and the cohort's statistics), in alternating rounds of one run, against:

- ``none``: the same script with the marking taken out (the write path before pending was honest);
- ``getset``: the marking done by GET, string rewrite and SET of each document (the obvious way),
  instead of the in-place GETRANGE/SETRANGE of the flag the store uses (``setrange``).

    python bench/pending_write.py [--rounds 9] [--results-per-patient 24]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import cohort_store, cohorts, documents, keys, store  # noqa: E402
from tests.procs import RedisServer  # noqa: E402

COHORT = "BENCH"
N = 1000
AUDIT = {"who": "bench"}

_SETRANGE = store._STORE_RESULTS
_NONE = _SETRANGE.replace("  await_write(pid,", "  -- await_write(pid,")
_GETSET = _SETRANGE.replace(
    "  if redis.call('GETRANGE', key, 0, #from - 1) == from then redis.call('SETRANGE', key, 0, to) end",
    "  local doc = redis.call('GET', key)\n"
    "  if doc and string.sub(doc, 1, #from) == from then\n"
    "    redis.call('SET', key, to .. string.sub(doc, #from + 1))\n"
    "  end",
)
assert _NONE != _SETRANGE and _GETSET != _SETRANGE
VARIANTS = {"none": _NONE, "setrange": _SETRANGE, "getset": _GETSET}


def result(pid: str, rid: str, month: int) -> dict:
    return {
        "result_id": rid,
        "patient_id": pid,
        "collected_at": f"{2021 + month // 12}-{1 + month % 12:02d}-10",
        "control_gene": "ABL1",
        "control_copies": 100000.0,
        "bcr_abl1_copies": float(40 - month % 30),
        "is_percent": None,
        "conversion_factor": 1.0,
        "status": "final",
        "lab": "Central lab",
        "assay": "qPCR",
        "transcript": "e14a2",
    }


def seed(r, per_patient: int) -> list[str]:
    """1,000 patients in one cohort, each with ``per_patient`` results, computed and refreshed."""
    pids = [f"B-{i:04d}" for i in range(N)]
    for pid in pids:
        reg = {"patient_id": pid, "cohorts": [COHORT], "enrolled_on": "2021-01-05", "tki": "imatinib",
               "tki_started_on": "2020-03-01", "dose_mg": 400.0}  # fmt: skip
        store.register_patient(r, pid, reg, AUDIT)
    for month in range(per_patient):
        store.store_results(r, [result(pid, f"{pid}-{month}", month) for pid in pids], AUDIT)
    for pid in pids:
        data = store.load_patient(r, pid)
        store.commit_status(r, data, *documents.patient_documents(data))
    snap = cohort_store.load_cohort(r, COHORT)
    data = cohorts.cohort_data(snap.records, snap.definition)
    doc, curve = documents.cohort_documents(snap, data)
    cohort_store.commit_cohort(r, COHORT, snap.version, doc, cohort_store.encode_arrays(data, curve))
    return pids


def settle_all(r, pids: list[str]) -> None:
    """Every document back to pending: false (as after the recomputes), outside the timing."""
    pipe = r.pipeline(transaction=False)
    for pid in pids:
        pipe.setrange(keys.status(pid), 0, store.PENDING_FALSE)
        pipe.setrange(keys.timeline(pid), 0, store.PENDING_FALSE)
    pipe.setrange(keys.cohort_stats(COHORT), 0, store.PENDING_FALSE)
    pipe.delete(keys.cohort_awaiting(COHORT))
    pipe.execute()


def timed_batch(r, pids: list[str], round_no: int, variant: str, tag: str = "") -> tuple[float, float]:
    """(client ms, Redis ms): the call as the API sees it, and the script's time inside Redis (its
    commandstats), during which Redis serves nobody else."""
    store._STORE_RESULTS = VARIANTS[variant]
    batch = [result(pid, f"{pid}-x{round_no}-{variant}{tag}-{time.time_ns()}", 5) for pid in pids]  # all new
    r.config_resetstat()
    t = time.perf_counter()
    store.store_results(r, batch, AUDIT)
    client_ms = (time.perf_counter() - t) * 1000
    return client_ms, r.info("commandstats")["cmdstat_eval"]["usec"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--results-per-patient", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            r = store.connect(server.url)
            pids = seed(r, args.results_per_patient)
            sizes = [r.strlen(keys.timeline(p)) for p in pids[:20]]
            print(f"timeline {statistics.median(sizes)} bytes, status {r.strlen(keys.status(pids[0]))} bytes")
            times: dict[str, list[tuple[float, float]]] = {v: [] for v in [*VARIANTS, "setrange, burst"]}
            # getset writes every document whole to the AOF (~20 MB a batch), which slows whatever runs
            # next: it runs in its own phase, after the alternating rounds of the other two.
            for phase in (("none", "setrange"), ("none", "getset")):
                for i in range(args.rounds):
                    for variant in phase if i % 2 else phase[::-1]:  # neither always runs first
                        settle_all(r, pids)
                        times[variant].append(timed_batch(r, pids, i, variant))
                    if phase[1] == "setrange":
                        # A burst: the documents already say pending, so the next batch flips nothing.
                        times["setrange, burst"].append(timed_batch(r, pids, i, "setrange", "-burst"))
        finally:
            store._STORE_RESULTS = _SETRANGE
            server.stop()
    base = [statistics.median(x[j] for x in times["none"]) for j in (0, 1)]
    print("variant            client ms (median, vs none)    script in Redis ms (median, vs none)")
    for variant, values in times.items():
        med = [statistics.median(x[j] for x in values) for j in (0, 1)]
        print(
            f"{variant:17s}  {med[0]:7.1f}  ({med[0] - base[0]:+6.1f})            "
            f"{med[1]:7.1f}  ({med[1] - base[1]:+6.1f}, x{med[1] / base[1]:.2f})"
        )


if __name__ == "__main__":
    main()
