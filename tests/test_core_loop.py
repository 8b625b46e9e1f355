"""The core loop end to end: API (Flask app) -> real Redis -> real Celery worker -> status in Redis."""

from __future__ import annotations

import orjson

from shared import keys
from tests.support import register, result, wait_status

PROBLEM = "application/problem+json"


def post(client, body):
    return client.post("/v1/assay-results", json=body)


def test_register_then_status_is_computed(client, pid):
    resp = client.put(f"/v1/patients/{pid}", json={"cohorts": ["A"], "enrolled_on": "2023-01-10"})
    assert resp.status_code == 201
    assert resp.get_json()["outcome"] == "created"
    doc = wait_status(client, pid, lambda d: d["data_version"] >= 1)
    assert doc["results_count"] == 0
    assert doc["response_level"] is None
    # Same registration again: nothing changes, not an error.
    again = client.put(f"/v1/patients/{pid}", json={"cohorts": ["A"], "enrolled_on": "2023-01-10"})
    assert again.status_code == 200 and again.get_json()["outcome"] == "unchanged"


def test_result_changes_status_and_task_completes(client, pid):
    register(client, pid)
    resp = post(client, result(pid, "R1", bcr_abl1_copies=3.2, control_copies=100000))
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["accepted"] == [{"result_id": "R1", "patient_id": pid, "outcome": "created"}]
    task = body["tasks"][0]
    assert resp.headers["Location"] == task["href"]
    doc = wait_status(client, pid, lambda d: d["data_version"] >= task["data_version"])
    # 3.2 copies in 100,000 ABL1 is exactly 0.0032% IS: MR4.5 (Cross 2015), not MR4.
    assert doc["response_level"] == "MR4.5"
    assert abs(doc["is_percent"] - 0.0032) < 1e-12
    assert doc["results_count"] == 1
    assert doc["first_reached"]["MR4.5"] == "2024-03-01"
    assert doc["first_reached"]["MR5"] is None
    assert doc["computed_at"]
    state = client.get(task["href"]).get_json()
    assert state["state"] == "done" and state["patient_id"] == pid


def test_identical_repost_is_a_no_op(client, pid, r):
    register(client, pid)
    first = post(client, result(pid, "R-same")).get_json()
    version = first["tasks"][0]["data_version"]
    again = post(client, result(pid, "R-same"))
    assert again.status_code == 202
    assert again.get_json()["accepted"][0]["outcome"] == "unchanged"
    assert int(r.get(keys.version(pid))) == version


def test_conflicting_final_is_409_and_writes_nothing(client, pid, r):
    register(client, pid)
    post(client, result(pid, "R-c", bcr_abl1_copies=50))
    stored = r.hget(keys.results(pid), "R-c")
    resp = post(client, [result(pid, "R-new"), result(pid, "R-c", bcr_abl1_copies=51)])
    assert resp.status_code == 409
    assert resp.mimetype == PROBLEM
    problem = resp.get_json()
    assert problem["errors"][0]["pointer"] == "/1/result_id"
    assert "R-c" in problem["detail"]
    assert r.hget(keys.results(pid), "R-c") == stored
    assert r.hget(keys.results(pid), "R-new") is None


def test_amendment_replaces_and_withdrawal_removes(client, pid):
    register(client, pid)
    post(client, result(pid, "R-a", collected_at="2024-01-05", bcr_abl1_copies=500))  # 0.5%: MR2
    post(client, result(pid, "R-b", collected_at="2024-02-05", bcr_abl1_copies=50))  # 0.05%: MMR
    doc = wait_status(client, pid, lambda d: d["results_count"] == 2)
    assert doc["response_level"] == "MMR"
    amended = post(client, result(pid, "R-b", collected_at="2024-02-05", bcr_abl1_copies=5, status="amended"))
    assert amended.get_json()["accepted"][0]["outcome"] == "replaced"
    doc = wait_status(client, pid, lambda d: d["response_level"] == "MR4")  # 0.005%
    assert doc["results_count"] == 2
    # A correction replaces alike, and the status follows it: 2 copies = 0.002%, MR4.5.
    corrected = post(
        client, result(pid, "R-b", collected_at="2024-02-05", bcr_abl1_copies=2, status="corrected")
    )
    assert corrected.get_json()["accepted"][0]["outcome"] == "replaced"
    doc = wait_status(client, pid, lambda d: d["response_level"] == "MR4.5")
    assert doc["results_count"] == 2 and doc["is_percent"] == 0.002
    withdrawn = post(client, {"result_id": "R-b", "patient_id": pid, "collected_at": "2024-02-05",
                              "status": "entered-in-error"})  # fmt: skip
    assert withdrawn.get_json()["accepted"][0]["outcome"] == "withdrawn"
    doc = wait_status(client, pid, lambda d: d["results_count"] == 1)
    assert doc["response_level"] == "MR2"
    timeline = client.get(f"/v1/patients/{pid}/results").get_json()
    by_id = {x["result_id"]: x for x in timeline["results"]}
    assert by_id["R-b"]["withdrawn"] is True and by_id["R-b"]["classification"] is None
    assert by_id["R-a"]["classification"]["level"] == "MR2"


def test_batch_with_one_bad_item_is_refused_whole(client, pid, r):
    register(client, pid)
    batch = [result(pid, f"R-batch-{i}") for i in range(5)]
    batch[3]["control_copies"] = 0
    resp = post(client, batch)
    assert resp.status_code == 422 and resp.mimetype == PROBLEM
    pointers = [e["pointer"] for e in resp.get_json()["errors"]]
    assert "/3/control_copies" in pointers
    assert r.hlen(keys.results(pid)) == 0
    assert not any(r.hexists(keys.RESULT_INDEX, f"R-batch-{i}") for i in range(5))


def test_unknown_patient_refuses_whole_batch(client, pid, r):
    register(client, pid)
    resp = post(client, [result(pid, "R-k1"), result("P-nobody-" + pid, "R-k2")])
    assert resp.status_code == 422
    assert resp.get_json()["errors"][0]["pointer"] == "/1/patient_id"
    assert r.hlen(keys.results(pid)) == 0


def test_unknown_patient_status_is_404_problem(client, pid):
    resp = client.get(f"/v1/patients/{pid}/status")
    assert resp.status_code == 404 and resp.mimetype == PROBLEM
    assert resp.get_json()["status"] == 404
    assert client.get(f"/v1/patients/{pid}/results").status_code == 404


def test_duplicate_ids_inside_one_batch(client, pid):
    register(client, pid)
    resp = post(client, [result(pid, "R-d"), result(pid, "R-d", bcr_abl1_copies=1)])
    assert resp.status_code == 422
    assert resp.get_json()["errors"][0]["pointer"] == "/1/result_id"


def test_events_reach_the_status(client, pid):
    register(client, pid)
    post(client, result(pid, "R-e", collected_at="2024-01-05"))
    resp = client.post(f"/v1/patients/{pid}/events", json={"type": "tki_stopped", "date": "2024-02-01"})
    assert resp.status_code == 202
    doc = wait_status(client, pid, lambda d: any(e["type"] == "tki_stopped" for e in d["events"]))
    assert doc["on_tki"] is False
    again = client.post(f"/v1/patients/{pid}/events", json={"type": "tki_stopped", "date": "2024-02-01"})
    assert again.get_json()["accepted"] == resp.get_json()["accepted"]
    assert again.get_json()["tasks"][0]["data_version"] == resp.get_json()["tasks"][0]["data_version"]


def test_events_for_unknown_patient_404(client, pid):
    resp = client.post(f"/v1/patients/{pid}/events", json={"type": "death", "date": "2024-02-01"})
    assert resp.status_code == 404 and resp.mimetype == PROBLEM


def test_burst_for_one_patient_converges(client, pid, r):
    """100 single-result posts for one patient: the last state is reflected, with few recomputes."""
    register(client, pid)
    for i in range(100):
        day = 1 + i % 28
        month = 1 + i // 28
        body = result(
            pid, f"R-burst-{i}", collected_at=f"2024-{month:02d}-{day:02d}", bcr_abl1_copies=100 - i
        )
        assert post(client, body).status_code == 202
    version = int(r.get(keys.version(pid)))
    doc = wait_status(client, pid, lambda d: d["data_version"] == version)
    assert doc["results_count"] == 100
    assert r.zscore(keys.DIRTY_PATIENTS, pid) is None


def test_timeline_lists_classified_results(client, pid):
    register(client, pid)
    post(client, [result(pid, "R-t1", collected_at="2024-01-01", bcr_abl1_copies=0, control_copies=5000),
                  result(pid, "R-t2", collected_at="2024-02-01", control_gene="GUSB",
                         control_copies=77000, bcr_abl1_copies=0)])  # fmt: skip
    wait_status(client, pid, lambda d: d["results_count"] == 2)
    timeline = orjson.loads(client.get(f"/v1/patients/{pid}/results").data)
    first, second = timeline["results"]
    # Undetectable in 5,000 ABL1 cannot show MR4 or deeper (Cross 2015).
    assert first["classification"]["level"] in ("MMR", "MR2", "MR1", "NONE")
    assert first["classification"]["detectable"] is False
    assert second["classification"]["level"] == "MR4.5"  # GUSB >= 77,000 undetectable


def test_unknown_task_is_404(client):
    resp = client.get("/v1/tasks/nope")
    assert resp.status_code == 404 and resp.mimetype == PROBLEM


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["workers"]["alive"] >= 1


def test_a_rules_change_recomputes_every_patient(client, pid, r):
    """A deployment that changes the rules marks every stored status stale; the sweeper redoes them."""
    from shared import documents, work

    register(client, pid)
    post(client, result(pid, "R-rules"))
    before = wait_status(client, pid, lambda d: d["results_count"] == 1)
    r.set(keys.RULES, "an older deployment")
    assert work.recompute_all_if_rules_changed(r, documents.rules_fingerprint()) >= 1
    assert r.zscore(keys.DIRTY_PATIENTS, pid) is not None
    assert work.recompute_all_if_rules_changed(r, documents.rules_fingerprint()) == -1
    after = wait_status(client, pid, lambda d: d["computed_at"] != before["computed_at"])
    assert after["response_level"] == before["response_level"]
