"""Who may call what, the audit trail, rate limits, idempotency keys, dead letters and the ops view,
against the real Redis and worker the tests start."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import orjson
import pytest

from services.api import create_app
from services.api.auth import digest, load_keys
from shared import keys, store, work
from shared.config import load_settings
from tests.conftest import FULL_KEY, SCOPED_KEYS
from tests.procs import ROOT, RedisServer, Worker, wait_for
from tests.support import register, result, wait_status

PROBLEM = "application/problem+json"


def bearer(scope: str) -> dict:
    key = next(k for k, scopes in SCOPED_KEYS.items() if scopes == [scope])
    return {"Authorization": f"Bearer {key}"}


# --- who may call what ----------------------------------------------------------------------------


def test_no_key_or_wrong_key_is_401(client, pid):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        resp = client.get(f"/v1/patients/{pid}/status", headers=headers)
        assert resp.status_code == 401 and resp.mimetype == PROBLEM
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert client.get("/readyz", headers={"Authorization": ""}).status_code == 200
    for bad in ("Bearer", "Bearer ", "Bearertest-full-key", f"Basic {FULL_KEY}"):
        assert client.get(f"/v1/patients/{pid}/status", headers={"Authorization": bad}).status_code == 401


def test_the_scheme_name_is_case_insensitive(client, pid):
    register(client, pid)
    for scheme in ("bearer", "BEARER", "Bearer"):
        resp = client.get(f"/v1/patients/{pid}/status", headers={"Authorization": f"{scheme} {FULL_KEY}"})
        assert resp.status_code == 200, scheme


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("post", "/v1/assay-results", "results:write"),
        ("put", "/v1/patients/P-x", "results:write"),
        ("post", "/v1/patients/P-x/events", "results:write"),
        ("get", "/v1/patients/P-x/status", "status:read"),
        ("get", "/v1/patients/P-x/results", "status:read"),
        ("get", "/v1/cohorts", "status:read"),
        ("get", "/v1/cohorts/C/statistics", "status:read"),
        ("put", "/v1/cohorts/C", "cohorts:write"),
        ("get", "/v1/ops/queues", "ops:read"),
        ("get", "/v1/ops/audit", "ops:read"),
        ("get", "/v1/ops/dead-letters", "ops:read"),
        ("get", "/metrics", "ops:read"),
    ],
)
def test_scopes(client, method, path, allowed):
    for scope in ("results:write", "status:read", "cohorts:write", "ops:read"):
        resp = getattr(client, method)(path, headers=bearer(scope), json={})
        if scope == allowed:
            assert resp.status_code not in (401, 403), (scope, path)
        else:
            assert resp.status_code == 403 and resp.mimetype == PROBLEM, (scope, path, resp.status_code)
            assert allowed in resp.get_json()["detail"]


def test_keys_file_with_digests_and_key_command(tmp_path, redis_url, monkeypatch):
    out = subprocess.run(
        [sys.executable, "-m", "services.api.auth", "new", "--scopes", "status:read", "--name", "lab-reader"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = {k: v.strip() for k, v in (line.split(": ", 1) for line in out.strip().splitlines())}
    key, entry = lines["key"], json.loads(lines["API_KEYS_FILE entry"])
    assert lines["digest"] == f"sha256:{digest(key).hex()}" and key not in lines["API_KEYS_FILE entry"]
    (tmp_path / "keys.json").write_text(json.dumps(entry))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("API_KEYS")
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "keys.json"))
    client = create_app(load_settings()).test_client()
    ok = client.get("/v1/cohorts", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    assert client.get("/v1/cohorts", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
    denied = client.post("/v1/assay-results", headers={"Authorization": f"Bearer {key}"}, json={})
    assert denied.status_code == 403


def test_key_names_must_be_unique():
    # A name is the caller in the audit trail and the owner of a rate budget.
    same = {"k1": {"name": "epic", "scopes": ["status:read"]}, "k2": {"name": "epic", "scopes": ["ops:read"]}}
    with pytest.raises(ValueError, match="epic"):
        load_keys(json.dumps(same), None)
    assert [k.key_id for k in load_keys(json.dumps({**same, "k2": ["ops:read"]}), None)][0] == "epic"


# --- audit and logs ---------------------------------------------------------------------------------


def test_audit_trail_records_writes(client, pid):
    register(client, pid)
    client.post("/v1/assay-results", json=[result(pid, f"{pid}-A1"), result(pid, f"{pid}-A2")])
    entries = client.get("/v1/ops/audit?count=50", headers=bearer("ops:read")).get_json()["entries"]
    post = next(e for e in entries if e.get("result_ids") == [f"{pid}-A1", f"{pid}-A2"])
    assert post["who"] == "tests" and post["what"] == "POST /v1/assay-results"
    assert post["outcomes"] == ["created", "created"] and post["when"]
    reg = next(e for e in entries if e.get("patient_id") == pid and e["what"].startswith("PUT"))
    assert reg["outcomes"] == ["created"]
    assert client.get("/v1/ops/audit", headers=bearer("status:read")).status_code == 403
    assert client.get("/v1/ops/audit?count=0", headers=bearer("ops:read")).status_code == 422


def test_audit_trail_records_events_and_cohort_definitions(client, pid):
    register(client, pid)
    cohort = f"AUD-{pid}"
    client.post(
        f"/v1/patients/{pid}/events", json={"event_id": f"{pid}-E1", "type": "death", "date": "2024-02-01"}
    )
    client.put(f"/v1/cohorts/{cohort}", json={"endpoint": "MR4"}, headers=bearer("cohorts:write"))
    entries = client.get("/v1/ops/audit?count=50", headers=bearer("ops:read")).get_json()["entries"]
    event = next(e for e in entries if e.get("event_ids") == [f"{pid}-E1"])
    assert event["what"] == "POST /v1/patients/<patient_id>/events" and event["patient_id"] == pid
    assert event["who"] == "tests" and event["outcomes"] == ["stored"]
    definition = next(e for e in entries if e.get("cohort_id") == cohort)
    key = bearer("cohorts:write")["Authorization"].removeprefix("Bearer ")
    assert (
        definition["what"] == "PUT /v1/cohorts/<cohort_id>"
        and definition["who"] == f"key-{digest(key).hex()[:8]}"
    )


def test_audit_is_kept_unless_a_retention_is_set(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        _check_audit_retention(store.connect(server.url))
    finally:
        server.stop()


def _check_audit_retention(r) -> None:
    old_ms = store.now_ms() - 3 * 86_400_000
    stream = keys.AUDIT
    r.xadd(stream, {"entry": "{}", "outcomes": "test-old"}, id=f"{old_ms}-0")
    r.xadd(stream, {"entry": "{}", "outcomes": "test-new"})
    assert work.trim_audit(r, 0) == 0  # the default keeps everything
    outcomes = [fields[b"outcomes"] for _, fields in r.xrange(stream)]
    assert b"test-old" in outcomes and b"test-new" in outcomes
    assert work.trim_audit(r, 2) >= 1  # two days: the entry of three days ago goes
    outcomes = [fields[b"outcomes"] for _, fields in r.xrange(stream)]
    assert b"test-old" not in outcomes and b"test-new" in outcomes


def test_an_unexpected_error_is_logged_without_its_message(app, caplog, monkeypatch, pid):
    # An exception's text may quote what it was handling; the log keeps its type and stack only.
    from services.api import patients

    value = 1234.56 / 10  # not in the source line the stack shows

    def fails(*args, **kwargs):
        raise KeyError(f"{pid} at {value}")

    monkeypatch.setattr(patients.store, "register_patient", fails)
    caplog.set_level(logging.DEBUG)
    resp = app.test_client().put(f"/v1/patients/{pid}", json={"cohorts": []})
    assert resp.status_code == 500 and resp.mimetype == PROBLEM
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "unhandled KeyError on PUT /v1/patients/<patient_id>" in text
    assert "fails" in text  # the stack is there
    assert pid not in text and str(value) not in text, [
        r.getMessage() for r in caplog.records if pid in r.getMessage()
    ]


def test_logs_carry_no_patient_ids_or_values(client, pid, worker, caplog):
    caplog.set_level(logging.DEBUG)
    register(client, pid)
    client.post("/v1/assay-results", json=result(pid, f"{pid}-L1", bcr_abl1_copies=123.456))
    client.get(f"/v1/patients/{pid}/status")
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "POST /v1/assay-results 202" in text  # the access log is there, by route
    assert pid not in text and "123.456" not in text
    worker_log = worker.log.read_text()
    assert "cml.recompute_patient" in worker_log and pid not in worker_log and "123.456" not in worker_log


# --- limits and idempotency -----------------------------------------------------------------------


def test_rate_limit_429_with_retry_after(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RATE_LIMIT", "3/minute")
    client = create_app(load_settings()).test_client()
    key = bearer("ops:read")
    codes = [client.get("/v1/ops/queues", headers=key).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    resp = client.get("/v1/ops/queues", headers=key)
    assert resp.status_code == 429 and resp.mimetype == PROBLEM
    assert int(resp.headers["Retry-After"]) > 0
    assert client.get("/healthz").status_code == 200  # probes are not limited


def test_hot_reads_are_limited_per_process(redis_url, monkeypatch, pid):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("HOT_READ_RATE_LIMIT", "2/minute")
    client = create_app(load_settings()).test_client()
    codes = [client.get(f"/v1/patients/{pid}/status").status_code for _ in range(2)]
    assert codes == [404, 404]
    resp = client.get(f"/v1/patients/{pid}/status")
    assert resp.status_code == 429 and resp.mimetype == PROBLEM and int(resp.headers["Retry-After"]) > 0
    # Counted per operation: the timeline has its own budget.
    assert client.get(f"/v1/patients/{pid}/results").status_code == 404


def test_idempotency_key_replays_a_batch(client, r, pid):
    register(client, pid)
    batch = [result(pid, f"{pid}-I1"), result(pid, f"{pid}-I2")]
    headers = {"Idempotency-Key": f"batch-{pid}"}
    first = client.post("/v1/assay-results", json=batch, headers=headers)
    version = int(r.get(keys.version(pid)))
    audit_len = r.xlen(keys.AUDIT)
    again = client.post("/v1/assay-results", json=batch, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert int(r.get(keys.version(pid))) == version and r.xlen(keys.AUDIT) == audit_len
    other = client.post("/v1/assay-results", json=batch[:1], headers=headers)
    assert other.status_code == 422 and other.get_json()["errors"][0]["field"] == "Idempotency-Key"
    # The same JSON formatted otherwise is the same request.
    reformatted = orjson.dumps(batch, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    same = client.post(
        "/v1/assay-results", data=reformatted, content_type="application/json", headers=headers
    )
    assert same.status_code == 202 and same.headers["Idempotent-Replayed"] == "true"


def test_idempotency_key_on_events_and_refused_requests(client, r, pid):
    register(client, pid)
    events = [
        {"type": "add_on_started", "date": "2024-02-01"},
        {"type": "add_on_stopped", "date": "2024-05-01"},
    ]
    headers = {"Idempotency-Key": f"events-{pid}"}
    first = client.post(f"/v1/patients/{pid}/events", json=events, headers=headers)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    audit_len = r.xlen(keys.AUDIT)
    again = client.post(f"/v1/patients/{pid}/events", json=events, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json() and r.xlen(keys.AUDIT) == audit_len
    other = client.post(f"/v1/patients/{pid}/events", json=events[:1], headers=headers)
    assert other.status_code == 422 and other.get_json()["type"].endswith("/idempotency-key-reused")
    assert r.hlen(keys.events(pid)) == 2
    # A refused request stores nothing under its key: the corrected one may use it.
    retry_key = {"Idempotency-Key": f"fixed-{pid}"}
    bad = client.post(
        "/v1/assay-results", json=[result(pid, f"{pid}-K1", control_copies=0)], headers=retry_key
    )
    assert bad.status_code == 422
    good = client.post("/v1/assay-results", json=[result(pid, f"{pid}-K1")], headers=retry_key)
    assert good.status_code == 202 and "Idempotent-Replayed" not in good.headers


def test_idempotency_key_in_use_is_409(client, r, pid):
    """Two requests with one key at once: the second is told to retry (409) until the first has its
    answer, so it can neither store twice nor slip a different body in beside the first."""
    register(client, pid)
    key, body = f"busy-{pid}", [result(pid, f"{pid}-B1")]
    assert client.post("/v1/assay-results", json=body, headers={"Idempotency-Key": key}).status_code == 202
    # Back to the moment the first request was being handled: its key reserved, no answer yet.
    held = orjson.loads(r.get(keys.idempotency("tests", key)))
    r.set(
        keys.idempotency("tests", key), orjson.dumps({"request_hash": held["request_hash"], "status": None})
    )
    busy = client.post("/v1/assay-results", json=body, headers={"Idempotency-Key": key})
    assert busy.status_code == 409 and busy.mimetype == PROBLEM and busy.headers["Retry-After"] == "1"
    assert busy.get_json()["type"].endswith("/idempotency-key-in-use")
    assert busy.get_json()["errors"][0]["field"] == "Idempotency-Key"
    other = client.post(
        "/v1/assay-results", json=[result(pid, f"{pid}-B2")], headers={"Idempotency-Key": key}
    )
    assert other.status_code == 422 and not r.hexists(keys.results(pid), f"{pid}-B2")


# --- dead letters and the ops view ----------------------------------------------------------------


def test_failed_task_goes_to_dead_letters_and_ops_can_retry(client, r, pid):
    register(client, pid)
    wait_status(client, pid, lambda d: d["data_version"] >= 1)
    good = result(pid, f"{pid}-G", status="final", conversion_factor=1.0, is_percent=None, lab=None,
                  assay=None, transcript=None)  # fmt: skip
    broken = {**good, "control_gene": "HPRT1"}  # bypasses the API: what a bad migration could leave
    r.hset(keys.results(pid), good["result_id"], orjson.dumps(broken))
    r.incr(keys.version(pid))
    r.zadd(keys.DIRTY_PATIENTS, {pid: store.now_ms() - 60_000})  # the sweeper will pick it up
    ops = bearer("ops:read")

    def listed():
        rows = client.get("/v1/ops/dead-letters", headers=ops).get_json()["dead_letters"]
        return next((row for row in rows if row["id"] == pid), None)

    row = wait_for(listed, 20, what="the dead letter")
    assert (
        row["kind"] == "patient" and "ValueError" in row["error"] and row["task"] == "cml.recompute_patient"
    )
    assert r.zscore(keys.DIRTY_PATIENTS, pid) is None  # out of the sweeper's way
    # The stored status does not look current: pending, with the reason (it reflects version 1 only).
    for doc in (
        client.get(f"/v1/patients/{pid}/status").get_json(),
        orjson.loads(store.read_timeline(r, pid)),
    ):
        assert doc["pending"] is True and doc["pending_reason"] == "recompute-failed"
    report = client.get("/v1/ops/queues", headers=ops).get_json()
    assert report["failed"]["patient"] >= 1
    r.hset(keys.results(pid), good["result_id"], orjson.dumps(good))  # the data is repaired
    retry = client.post(f"/v1/ops/dead-letters/patient/{pid}/retry", headers=ops)
    assert retry.status_code == 202
    doc = wait_status(client, pid, lambda d: d["results_count"] == 1)
    assert doc["response_level"] == "MMR"
    assert "pending_reason" not in doc
    assert listed() is None
    assert client.post(f"/v1/ops/dead-letters/patient/{pid}/retry", headers=ops).status_code == 404
    audit = client.get("/v1/ops/audit?count=20", headers=ops).get_json()["entries"]
    assert any(e.get("item_id") == pid and e["outcomes"] == ["requeued"] for e in audit)


def test_ops_queues_report(client, pid):
    register(client, pid)
    client.post("/v1/assay-results", json=result(pid))
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    report = client.get("/v1/ops/queues", headers=bearer("ops:read")).get_json()
    assert {q["queue"] for q in report["queues"]} == {"patients", "cohorts"}
    for q in report["queues"]:
        assert q["depth"] >= 0 and q["in_flight"] >= 0
    assert report["workers_alive"] >= 1
    assert all(w["last_heartbeat_ms"] > 0 for w in report["workers"])
    lag = report["recompute_lag_ms"]
    assert lag["samples"] >= 1 and 0 <= lag["p50"] <= lag["p99"]
    assert set(report["backlog"]) == {"patient", "cohort"}


def test_ops_queues_report_depth_age_and_in_flight(tmp_path, monkeypatch):
    """On a Redis of its own: work waits with no worker (depth, age of the oldest message), then a
    worker holds a debounced cohort refresh (in flight) until its countdown."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    client = create_app(load_settings()).test_client()
    worker = Worker(server.url, "ops", tmp_path, concurrency=1, env={"COHORT_DEBOUNCE_S": "60"})
    try:
        for pid in ("Q-1", "Q-2"):
            assert client.put(f"/v1/patients/{pid}", json={"cohorts": ["QC"]}).status_code == 201
        time.sleep(1.0)

        def report() -> dict:
            return {q["queue"]: q for q in client.get("/v1/ops/queues").get_json()["queues"]}

        waiting = report()
        assert waiting["patients"]["depth"] == 2 and waiting["patients"]["oldest_age_s"] >= 1.0
        assert waiting["patients"]["in_flight"] == 0 and waiting["cohorts"]["depth"] == 0
        assert client.get("/v1/ops/queues").get_json()["backlog"]["patient"]["dirty"] == 2
        worker.start()

        # The recomputes are done and one refresh of QC is held by the worker, waiting out its debounce.
        # The first recompute's refresh can be held while the second patient is still being computed
        # (its message already off the queue): wait for both, not for the first sign of either.
        def settled() -> bool:
            doc = client.get("/v1/ops/queues").get_json()
            queues = {q["queue"]: q for q in doc["queues"]}
            return (
                queues["cohorts"]["in_flight"] == 1
                and queues["patients"]["depth"] == 0
                and doc["backlog"]["patient"]["dirty"] == 0
            )

        wait_for(settled, 30, what="a refresh held in flight, every recompute done")
        done = client.get("/v1/ops/queues").get_json()
        assert done["queues"][0]["oldest_age_s"] is None and done["backlog"]["patient"]["dirty"] == 0
        assert [w["worker"].split("@")[0] for w in done["workers"]] == ["ops"] and done["workers_alive"] == 1
    finally:
        worker.stop()
        server.stop()


def test_metrics_in_prometheus_format(client, pid):
    register(client, pid)
    client.post("/v1/assay-results", json=result(pid))
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    resp = client.get("/metrics", headers=bearer("ops:read"))
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert 'cml_http_requests_total{method="POST",route="/v1/assay-results",status="202"}' in text
    assert (
        'cml_http_request_seconds_bucket{le="0.001",method="POST",route="/v1/assay-results",status="202"}'
        in text
    )
    assert 'cml_tasks_total{outcome="done",task="cml.recompute_patient"}' in text
    assert 'cml_task_seconds_count{outcome="done",task="cml.recompute_patient"}' in text
    assert 'cml_queue_depth{queue="patients"}' in text


def test_readyz_fails_without_workers_or_redis(tmp_path, monkeypatch):
    server = RedisServer(tmp_path / "lonely")
    server.start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url)
        client = create_app(load_settings()).test_client()
        resp = client.get("/readyz")
        assert resp.status_code == 503 and resp.mimetype == PROBLEM
        checks = resp.get_json()["checks"]
        assert checks["workers"]["ok"] is False
        assert checks["queues"] == {"ok": False, "without_consumer": ["patients", "cohorts"]}
        server.kill9()
        resp = client.get("/readyz")
        assert resp.status_code == 503 and resp.get_json()["checks"]["redis"]["ok"] is False
        assert resp.get_json()["checks"]["queues"]["ok"] is False
        down = client.get("/v1/patients/P-1/status")
        assert down.status_code == 503 and down.mimetype == PROBLEM and down.headers["Retry-After"]
    finally:
        server.stop()


def test_redis_outage_mid_task_is_retried_not_dead_lettered(client, r, redis_url, monkeypatch, pid):
    """A task that loses Redis mid-way leaves its patient dirty for the sweeper; only a failure of
    the data itself is parked as a dead letter (a parked patient would never converge)."""
    import redis as redis_lib

    from services.worker.instrument import instrumented

    monkeypatch.setenv("REDIS_URL", redis_url)
    register(client, pid)
    wait_status(client, pid, lambda d: d["data_version"] >= 1)

    @instrumented("patient", "cml.test_task")
    def loses_redis(item_id: str) -> str:
        raise redis_lib.exceptions.ConnectionError("Connection closed by server.")

    @instrumented("patient", "cml.test_task")
    def bad_data(item_id: str) -> str:
        raise ValueError("unknown control gene")

    r.zadd(keys.DIRTY_PATIENTS, {pid: store.now_ms()})
    assert loses_redis(pid) == "transient"
    assert r.zscore(keys.DIRTY_PATIENTS, pid) is not None and not r.hexists(keys.DEAD["patient"], pid)
    assert bad_data(pid) == "failed"
    assert r.zscore(keys.DIRTY_PATIENTS, pid) is None and r.hexists(keys.DEAD["patient"], pid)
    r.hdel(keys.DEAD["patient"], pid)


def test_workers_silent_for_a_day_are_forgotten(r):
    r.zadd(keys.WORKERS, {"gone@old-host": store.now_ms() - work.FORGET_WORKER_AFTER_MS - 1000})
    r.hset(keys.WORKER_QUEUES, "gone@old-host", b'["patients"]')
    r.zadd(keys.WORKERS, {"quiet@host": store.now_ms() - 3_600_000})
    work.heartbeat(r, "test@host", ["patients", "cohorts", "patients"])
    listed = {w.decode() for w in r.zrange(keys.WORKERS, 0, -1)}
    assert "gone@old-host" not in listed and {"quiet@host", "test@host"} <= listed
    assert not r.hexists(keys.WORKER_QUEUES, "gone@old-host")  # forgotten with its heartbeat
    assert work.worker_queues(r, ["test@host", "quiet@host"]) == {
        "test@host": ["cohorts", "patients"],
        "quiet@host": None,
    }
    r.zrem(keys.WORKERS, "quiet@host", "test@host")
    r.hdel(keys.WORKER_QUEUES, "test@host")


def test_consumers_per_routed_queue():
    by_worker = {"b@h": ["patients"], "a@h": ["cohorts", "patients", "extra"], "old@h": None}
    # A worker of the release before queues were recorded counts as consuming every queue (it was
    # started with -Q patients,cohorts); a queue nothing routes to is not reported.
    assert work.consumers(by_worker) == {"patients": ["a@h", "b@h", "old@h"], "cohorts": ["a@h", "old@h"]}
    assert work.consumers({"b@h": ["patients"]}) == {"patients": ["b@h"], "cohorts": []}
    assert work.consumers({}) == {"patients": [], "cohorts": []}


def test_audit_retention_is_checked_and_a_long_one_trims_nothing(monkeypatch, r):
    for bad in ("-1", "inf", "nan", "40000"):
        monkeypatch.setenv("AUDIT_RETENTION_DAYS", bad)
        with pytest.raises(ValueError, match="AUDIT_RETENTION_DAYS"):
            load_settings()
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", "36500")
    assert load_settings().audit_retention_days == 36500
    before = r.xlen(keys.AUDIT)
    assert work.trim_audit(r, 36500) == 0 and r.xlen(keys.AUDIT) == before  # a MINID before 1970: 0


def test_idempotency_keys_of_two_callers_never_meet():
    assert keys.idempotency("a", "b:c") != keys.idempotency("a:b", "c")


def test_a_stored_write_answers_202_even_if_its_answer_cannot_be_remembered(client, r, pid, monkeypatch):
    import redis as redis_lib

    from services.api import idempotency

    register(client, pid)

    def down(*args, **kwargs):
        raise redis_lib.exceptions.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(idempotency.store, "remember_response", down)
    body = [result(pid, f"{pid}-M1")]
    resp = client.post("/v1/assay-results", json=body, headers={"Idempotency-Key": f"mem-{pid}"})
    assert resp.status_code == 202 and r.hexists(keys.results(pid), f"{pid}-M1")


def test_two_requests_in_one_app_context_each_read_their_own_body(app, r, pid):
    client = app.test_client()
    register(client, pid)
    with app.app_context():  # a script or test may hold one around several requests
        for rid in (f"{pid}-C1", f"{pid}-C2"):
            assert client.post("/v1/assay-results", json=result(pid, rid)).status_code == 202
    assert r.hexists(keys.results(pid), f"{pid}-C1") and r.hexists(keys.results(pid), f"{pid}-C2")


def test_an_unexpected_error_logs_the_stacks_it_was_raised_from(app, caplog, monkeypatch, pid):
    from services.api import patients

    inner, outer = "inner-" + pid, "outer-" + pid  # built at run time: not in the stack's source lines

    def fails(*args, **kwargs):
        try:
            raise LookupError(inner)
        except LookupError as exc:
            raise RuntimeError(outer) from exc

    monkeypatch.setattr(patients.store, "register_patient", fails)
    caplog.set_level(logging.ERROR)
    assert app.test_client().put(f"/v1/patients/{pid}", json={"cohorts": []}).status_code == 500
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "LookupError:" in text and "RuntimeError:" in text
    assert inner not in text and outer not in text
