"""Every queue the app routes to has a consumer, and ops see when one has none.

A worker started the standard way (``celery -A services.worker worker``, no ``-Q``; the session worker
of conftest.py) consumes every queue, so cohort statistics stay current. A worker started with
``-Q patients`` alone leaves the ``cohorts`` queue without a consumer: ``GET /v1/ops/queues`` lists
it with no consumers, ``/readyz`` fails naming it, ``/metrics`` counts 0 consumers; a ``-Q cohorts``
worker then brings readiness back and the waiting refresh runs. Real redis-server and Celery worker
processes throughout, no mocks.
"""

from __future__ import annotations

import uuid

from services.api import create_app
from shared.config import load_settings
from shared.queue import QUEUES
from tests.procs import RedisServer, Worker, wait_for
from tests.support import register, result, wait_status

OPS = "/v1/ops/queues"


def statistics(client, cohort_id: str) -> dict:
    resp = client.get(f"/v1/cohorts/{cohort_id}/statistics")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def by_queue(client) -> dict[str, dict]:
    return {q["queue"]: q for q in client.get(OPS).get_json()["queues"]}


def test_a_worker_started_without_q_keeps_statistics_current(client, worker, pid):
    assert worker.queues is None  # the session worker: `celery -A services.worker worker`, no -Q
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    register(client, pid, cohorts=[cohort], enrolled_on="2024-01-10")
    assert client.post("/v1/assay-results", json=result(pid, collected_at="2024-04-02")).status_code == 202
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    doc = wait_for(lambda: (d := statistics(client, cohort)) and not d["pending"] and d, 15,
                   interval=0.1, what=f"statistics of {cohort}")  # fmt: skip
    assert doc["n"] == 1 and doc["n_evaluable"] == 1
    report = client.get(OPS).get_json()
    mine = next(w for w in report["workers"] if w["worker"].startswith(f"{worker.name}@"))
    assert mine["alive"] and mine["queues"] == sorted(QUEUES)
    for q in report["queues"]:
        assert mine["worker"] in q["consumers"] and q["consumers_alive"] == len(q["consumers"]) >= 1
    ready = client.get("/readyz").get_json()
    assert ready["checks"]["queues"] == {"ok": True, "without_consumer": []}


def test_a_queue_without_consumer_fails_readiness_until_one_starts(tmp_path, monkeypatch):
    """On a Redis of its own, so the session worker does not consume the queue left without one."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    client = create_app(load_settings()).test_client()
    patients_only = Worker(server.url, "ponly", tmp_path, concurrency=1, queues="patients")
    cohorts_only = Worker(server.url, "conly", tmp_path, concurrency=1, queues="cohorts")
    try:
        patients_only.start()
        register(client, "QC-1", cohorts=["QC"], enrolled_on="2024-01-10")
        posted = client.post("/v1/assay-results", json=result("QC-1", collected_at="2024-04-02"))
        assert posted.status_code == 202
        wait_status(client, "QC-1", lambda d: d["results_count"] == 1)  # the patients queue is consumed
        # The refresh the recompute sent waits in `cohorts`, where nobody listens.
        wait_for(lambda: by_queue(client)["cohorts"]["depth"] >= 1, 10, what="a refresh waiting in cohorts")
        assert statistics(client, "QC")["pending"] is True

        queues = by_queue(client)
        assert queues["cohorts"]["consumers"] == [] and queues["cohorts"]["consumers_alive"] == 0
        (listener,) = queues["patients"]["consumers"]
        assert listener.startswith("ponly@") and queues["patients"]["consumers_alive"] == 1
        (me,) = client.get(OPS).get_json()["workers"]
        assert me["worker"] == listener and me["queues"] == ["patients"] and me["alive"]

        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.mimetype == "application/problem+json"
        problem = not_ready.get_json()
        assert problem["checks"]["queues"] == {"ok": False, "without_consumer": ["cohorts"]}
        assert problem["checks"]["workers"]["ok"] is True and problem["checks"]["redis"]["ok"] is True
        assert "cohorts" in problem["detail"] and "patients" not in problem["detail"]

        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'cml_queue_consumers{queue="cohorts"} 0.0' in metrics
        assert 'cml_queue_consumers{queue="patients"} 1.0' in metrics

        cohorts_only.start()
        ready = wait_for(lambda: (resp := client.get("/readyz")).status_code == 200 and resp, 10,
                         what="readiness with a cohorts consumer")  # fmt: skip
        assert ready.get_json()["checks"]["queues"] == {"ok": True, "without_consumer": []}
        assert [c.split("@")[0] for c in by_queue(client)["cohorts"]["consumers"]] == ["conly"]
        doc = wait_for(lambda: (d := statistics(client, "QC")) and not d["pending"] and d, 15,
                       interval=0.1, what="the waiting refresh to run")  # fmt: skip
        assert doc["n"] == 1
        assert 'cml_queue_consumers{queue="cohorts"} 1.0' in client.get("/metrics").get_data(as_text=True)
    finally:
        cohorts_only.stop()
        patients_only.stop()
        server.stop()
