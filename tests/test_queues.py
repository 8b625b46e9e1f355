"""Every queue the app routes to has a consumer.

A worker started the standard way (``celery -A services.worker worker``, no ``-Q``; the session worker
of conftest.py) consumes every queue, so cohort statistics stay current. Real redis-server and Celery
worker processes, no mocks.
"""

from __future__ import annotations

import uuid

from tests.procs import wait_for
from tests.support import register, result, wait_status


def statistics(client, cohort_id: str) -> dict:
    resp = client.get(f"/v1/cohorts/{cohort_id}/statistics")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_a_worker_started_without_q_keeps_statistics_current(client, worker, pid):
    assert worker.queues is None  # the session worker: `celery -A services.worker worker`, no -Q
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    register(client, pid, cohorts=[cohort], enrolled_on="2024-01-10")
    assert client.post("/v1/assay-results", json=result(pid, collected_at="2024-04-02")).status_code == 202
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    doc = wait_for(lambda: (d := statistics(client, cohort)) and not d["pending"] and d, 15,
                   interval=0.1, what=f"statistics of {cohort}")  # fmt: skip
    assert doc["n"] == 1 and doc["n_evaluable"] == 1
