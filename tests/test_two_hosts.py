"""Issue 12: several stateless hosts on one Redis. Two API processes (gunicorn, two ports) and two Celery
workers with their own names (``-n w1@%h``, ``-n w2@%h``), as two hosts would run them: a burst split
across both APIs, one worker killed with SIGKILL mid-burst, and everything converges (statuses current,
``pending`` false, the cohort's statistics those of a clean computation); the ops view lists both
workers and the queues each consumes."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from shared import keys, store
from tests.procs import RedisServer, Worker, start_gunicorn, stop_process, wait_for
from tests.support import http, result
from tests.test_faults import VOLATILE, clean_cohort_statistics, clean_documents, cohort_converged, converged

pytestmark = pytest.mark.slow

PATIENTS = [f"TH-{i:02d}" for i in range(16)]
BATCHES = 10


def post_batches(base: str, host: int, acknowledged: list[str], failures: list) -> None:
    """This API's half of the burst: batches of one result per patient, each a new collection date."""
    for batch in range(BATCHES):
        items = [
            result(pid, f"TH-{host}-{batch}-{pid}", collected_at=f"2024-{1 + batch:02d}-{10 + host}",
                   bcr_abl1_copies=float((batch * 7 + host) % 50))
            for pid in PATIENTS
        ]  # fmt: skip
        status, body = http("POST", f"{base}/v1/assay-results", items)
        if status != 202:
            failures.append((status, body))
            return
        acknowledged += [i["result_id"] for i in items]
        time.sleep(0.05)


def test_two_apis_two_workers_one_killed_converge(tmp_path):
    server = RedisServer(tmp_path / "redis", appendfsync="always")
    procs: list = []
    workers: list[Worker] = []
    try:
        server.start()
        r = store.connect(server.url)
        bases = []
        for i in (1, 2):
            proc, base = start_gunicorn(server.url, tmp_path / f"api-{i}.log", env={"WEB_CONCURRENCY": "1"})
            procs.append(proc)
            bases.append(base)
        workers = [Worker(server.url, name, tmp_path, concurrency=2) for name in ("w1", "w2")]
        for w in workers:
            w.start(wait=False)
        for w in workers:
            w.wait_ready()
        for n, pid in enumerate(PATIENTS):  # registrations through both APIs too
            status, body = http(
                "PUT", f"{bases[n % 2]}/v1/patients/{pid}", {"cohorts": ["TH"], "enrolled_on": "2023-06-01"}
            )
            assert status == 201, body

        # The ops view, from either API: both workers, each consuming both queues (started without -Q).
        status, report = http("GET", f"{bases[1]}/v1/ops/queues")
        assert status == 200
        listed = {w["worker"].split("@")[0]: w for w in report["workers"]}
        assert {"w1", "w2"} <= set(listed), report["workers"]
        for name in ("w1", "w2"):
            assert listed[name]["alive"] and sorted(listed[name]["queues"]) == ["cohorts", "patients"]
        for queue in report["queues"]:
            assert {c.split("@")[0] for c in queue["consumers"]} >= {"w1", "w2"}, queue

        acknowledged: list[str] = []
        failures: list = []
        threads = [
            threading.Thread(target=post_batches, args=(base, n, acknowledged, failures))
            for n, base in enumerate(bases)
        ]
        for t in threads:
            t.start()
        # Mid-burst, with work held by w1 or w2 if we catch it: kill w1 (and its pool) outright. The
        # workers may drain each batch faster than we poll (or the burst may end first), so after a bound
        # w1 is killed anyway; convergence is asserted either way.
        wait_for(lambda: len(acknowledged) >= 4 * len(PATIENTS), 30, what="a burst under way")
        deadline = time.monotonic() + 10
        while r.hlen(keys.KOMBU_UNACKED) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        in_flight = r.hlen(keys.KOMBU_UNACKED)
        workers[0].kill9()
        for t in threads:
            t.join(60)
        assert not failures, failures[:2]
        assert len(acknowledged) == 2 * BATCHES * len(PATIENTS)

        try:
            wait_for(lambda: converged(r, PATIENTS), 60, interval=0.2, what="statuses to converge")
            wait_for(lambda: cohort_converged(r, "TH"), 30, interval=0.2, what="the cohort to converge")
        except TimeoutError:
            raise AssertionError(workers[1].log.read_text()[-4000:]) from None
        for rid in acknowledged:
            assert r.hexists(keys.RESULT_INDEX, rid), rid
        for n, pid in enumerate(PATIENTS):
            status, doc = http("GET", f"{bases[n % 2]}/v1/patients/{pid}/status")
            assert status == 200 and doc["pending"] is False, doc
            stored = {k: v for k, v in orjson.loads(r.get(keys.status(pid))).items() if k not in VOLATILE}
            assert stored == clean_documents(r, pid) and stored["results_count"] == 2 * BATCHES
        stats = {k: v for k, v in orjson.loads(r.get(keys.cohort_stats("TH"))).items() if k not in VOLATILE}
        assert stats == clean_cohort_statistics(r, "TH") and stats["pending"] is False
        assert stats["n_evaluable"] == len(PATIENTS)
        print(f"w1 killed with {in_flight} unacked message(s) in flight")

        # The survivor still consumes both queues; w1 stays listed until its heartbeat ages out.
        status, report = http("GET", f"{bases[0]}/v1/ops/queues")
        listed = {w["worker"].split("@")[0]: w for w in report["workers"]}
        assert listed["w2"]["alive"] and sorted(listed["w2"]["queues"]) == ["cohorts", "patients"]
        for queue in report["queues"]:
            assert any(c.startswith("w2@") for c in queue["consumers"]), queue
    finally:
        for w in workers:
            w.stop()
        for proc in procs:
            stop_process(proc)
        server.stop()
