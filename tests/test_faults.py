"""Faults on processes the tests start: kill -9 the worker or the redis-server in a burst.

Bounded: a few hundred results, convergence waits of at most 60 s (the broker's own redelivery of a
killed worker's tasks would take an hour: only the sweeper can make these pass).
"""

from __future__ import annotations

import threading

import orjson
import pytest

from services.api import create_app
from shared import cohort_store, cohorts, documents, keys, store
from shared.config import load_settings
from tests.procs import Worker, wait_for
from tests.support import result

pytestmark = pytest.mark.slow

VOLATILE = ("computed_at",)


def clean_documents(r, patient_id: str) -> dict:
    """What a clean recomputation from the stored data gives, without the volatile envelope."""
    status, _, _ = documents.patient_documents(store.load_patient(r, patient_id))
    return {k: v for k, v in status.items() if k not in VOLATILE}


def converged(r, patients: list[str]) -> bool:
    if r.zcard(keys.DIRTY_PATIENTS):
        return False
    for pid in patients:
        raw = r.get(keys.status(pid))
        if raw is None or orjson.loads(raw)["data_version"] != int(r.get(keys.version(pid))):
            return False
    return True


def register_all(client, patients: list[str]) -> None:
    for pid in patients:
        resp = client.put(f"/v1/patients/{pid}", json={"cohorts": ["F"], "enrolled_on": "2023-01-01"})
        assert resp.status_code == 201


def clean_cohort_statistics(r, cohort_id: str) -> dict:
    """What a clean refresh from the stored follow-up records gives (without the envelope)."""
    snap = cohort_store.load_cohort(r, cohort_id)
    doc, _ = documents.cohort_documents(snap, cohorts.cohort_data(snap.records, snap.definition))
    return {k: v for k, v in doc.items() if k not in VOLATILE}


def cohort_converged(r, cohort_id: str) -> bool:
    raw = r.get(keys.cohort_stats(cohort_id))
    return (
        raw is not None
        and r.zscore(keys.DIRTY_COHORTS, cohort_id) is None
        and orjson.loads(raw)["data_version"] == int(r.get(keys.cohort_version(cohort_id)))
    )


def test_worker_killed_mid_burst_converges(own_redis, tmp_path):
    app = create_app(load_settings())
    client = app.test_client()
    r = store.connect(own_redis.url)
    patients = [f"FW-{i:02d}" for i in range(20)]
    register_all(client, patients)
    first = Worker(own_redis.url, "victim", tmp_path, concurrency=2)
    first.start()
    acknowledged = []
    for batch in range(12):
        items = [
            result(
                pid,
                f"FW-{batch}-{pid}",
                collected_at=f"2024-{1 + batch:02d}-15",
                bcr_abl1_copies=float(10 * batch),
            )
            for pid in patients
        ]
        resp = client.post("/v1/assay-results", json=items)
        assert resp.status_code == 202
        acknowledged += [i["result_id"] for i in items]
        if batch == 5:
            # Mid-burst, with messages held by the worker (reserved or running): they die with it and
            # the broker would give them back only after its one-hour visibility timeout.
            wait_for(lambda: r.hlen(keys.KOMBU_UNACKED) > 0, 30, interval=0.01, what="work in flight")
            first.kill9()
            held = set(r.hkeys(keys.KOMBU_UNACKED))
    assert held and r.zcard(keys.DIRTY_PATIENTS) > 0, "the kill should leave work undone"
    second = Worker(own_redis.url, "rescuer", tmp_path, concurrency=2)
    second.start()
    try:
        wait_for(lambda: converged(r, patients), 60, interval=0.2, what="statuses to converge")
        # Converged while the dead worker's messages still sit unacked: the sweeper did it, not the broker.
        assert held <= set(r.hkeys(keys.KOMBU_UNACKED))
        wait_for(lambda: cohort_converged(r, "F"), 60, interval=0.2, what="the cohort to converge")
        for rid in acknowledged:
            assert r.hexists(keys.RESULT_INDEX, rid), rid
        for pid in patients:
            stored = {k: v for k, v in orjson.loads(r.get(keys.status(pid))).items() if k not in VOLATILE}
            assert stored == clean_documents(r, pid)
            assert stored["results_count"] == 12
        stats = {k: v for k, v in orjson.loads(r.get(keys.cohort_stats("F"))).items() if k not in VOLATILE}
        assert stats == clean_cohort_statistics(r, "F")
        assert stats["n_evaluable"] == 20
        # Every record the cohort holds equals the one a clean recompute of the patient gives.
        for pid in patients:
            _, _, record = documents.patient_documents(store.load_patient(r, pid))
            assert orjson.loads(r.hget(keys.cohort_followup("F"), pid)) == record
    finally:
        second.stop()


def test_redis_killed_mid_burst_loses_nothing_acknowledged(own_redis, tmp_path):
    app = create_app(load_settings())
    client = app.test_client()
    patients = [f"FR-{i:02d}" for i in range(5)]
    register_all(client, patients)
    acknowledged: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def burst() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            item = result(patients[n % 5], f"FR-{n}", bcr_abl1_copies=float(n % 97))
            resp = client.post("/v1/assay-results", json=item)
            statuses.append(resp.status_code)
            if resp.status_code == 202:
                acknowledged.append(item["result_id"])
            else:
                assert resp.status_code == 503, resp.get_data()
                assert resp.mimetype == "application/problem+json"
            n += 1

    worker = Worker(own_redis.url, "survivor", tmp_path, concurrency=2)
    worker.start()
    thread = threading.Thread(target=burst)
    thread.start()
    wait_for(lambda: len(acknowledged) >= 200, 30, what="a burst under way")
    own_redis.kill9()
    wait_for(lambda: statuses[-3:] == [503, 503, 503], 30, what="503 while Redis is down")
    down = client.get("/v1/patients/FR-00/status")
    assert down.status_code == 503 and down.headers.get("Retry-After")
    own_redis.start()  # same port, same directory: Redis replays its AOF
    wait_for(lambda: statuses[-3:] == [202, 202, 202], 30, what="the API to recover by itself")
    stop.set()
    thread.join(30)
    r = store.connect(own_redis.url)
    missing = [rid for rid in acknowledged if not r.hexists(keys.RESULT_INDEX, rid)]
    assert not missing, f"{len(missing)} acknowledged results lost, e.g. {missing[:5]}"
    assert 503 in statuses
    try:
        # The worker lived through the outage: it reconnects and every status catches up.
        try:
            wait_for(
                lambda: converged(r, patients), 90, interval=0.3, what="statuses to converge after restart"
            )
        except TimeoutError:
            state = {
                "dirty": r.zrange(keys.DIRTY_PATIENTS, 0, -1, withscores=True),
                "enqueued": r.zrange(keys.ENQUEUED_PATIENTS, 0, -1, withscores=True),
                "dead": r.hgetall(keys.DEAD["patient"]),
                "queue": r.llen("patients"),
                "unacked": r.hlen("unacked"),
                "versions": {p: (r.get(keys.version(p)), r.get(keys.status_version(p))) for p in patients},
            }
            raise AssertionError(f"{state}\n{worker.log.read_text()[-4000:]}") from None
        for pid in patients:
            stored = orjson.loads(r.get(keys.status(pid)))
            assert stored["results_count"] == r.hlen(keys.results(pid))
        # An outage is not the data's fault: nothing was parked as a dead letter.
        assert r.hlen(keys.DEAD["patient"]) == 0
    finally:
        worker.stop()
