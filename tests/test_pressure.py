"""Redis under pressure, on processes the tests start: at ``maxmemory`` with ``noeviction`` (every
write refused with OOM), and stalled (SIGSTOP: alive but not answering). Bounded: each test waits
seconds, not minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from services.api import create_app
from shared import keys, store
from shared.config import load_settings
from tests.conftest import FULL_KEY
from tests.procs import ROOT, Worker, wait_for
from tests.support import result

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"


def register_all(client, patients: list[str]) -> None:
    for pid in patients:
        resp = client.put(f"/v1/patients/{pid}", json={"cohorts": ["M"], "enrolled_on": "2023-01-01"})
        assert resp.status_code == 201, resp.get_data()


def assert_store_unavailable(resp) -> dict:
    assert resp.status_code == 503, resp.get_data()
    assert resp.mimetype == PROBLEM and resp.headers.get("Retry-After")
    doc = resp.get_json()
    assert doc["type"] == "/problems/store-unavailable"
    # Honest: the outcome is unknown and a retry is safe; never "nothing was stored".
    assert "nothing was stored" not in doc["detail"] and "unknown" in doc["detail"]
    return doc


def test_out_of_memory_is_503_and_the_worker_rides_it_out(own_redis, tmp_path):
    client = create_app(load_settings()).test_client()
    r = store.connect(own_redis.url)
    patients = [f"OM-{i}" for i in range(4)]
    register_all(client, patients)
    worker = Worker(own_redis.url, "oom", tmp_path, concurrency=2)
    worker.start()
    # The worker paused while work is published, then Redis full: it meets OOM recording the delivery
    # (its BRPOP already took the message), in the task's writes and on the acknowledgement.
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        resp = client.post("/v1/assay-results", json=[result(pid, f"OM-R-{pid}") for pid in patients])
        assert resp.status_code == 202
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", 1)  # below what is used: every write command is refused
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
    try:
        doc = assert_store_unavailable(client.post("/v1/assay-results", json=result("OM-0", "OM-late")))
        assert doc["reason"] == "out of memory"
        assert_store_unavailable(client.put("/v1/patients/OM-new", json={"enrolled_on": "2023-01-01"}))
        wait_for(lambda: "OutOfMemoryError" in worker.log.read_text(), 20, what="the worker to meet OOM")
        time.sleep(4)
        assert worker.proc.poll() is None, worker.log.read_text()[-4000:]
    finally:
        r.config_set("maxmemory", 0)
    try:
        worker.wait_ready(30)

        def converged() -> bool:
            if r.zcard(keys.DIRTY_PATIENTS):
                return False
            return all(
                (raw := r.get(keys.status(pid))) is not None and orjson.loads(raw)["results_count"] == 1
                for pid in patients
            )

        wait_for(converged, 30, interval=0.2, what="statuses to catch up after the episode")
        # Out of memory is transient: nothing was parked as a dead letter.
        assert r.hlen(keys.DEAD["patient"]) == 0
        assert "Unrecoverable error" not in worker.log.read_text()
        assert client.post("/v1/assay-results", json=result("OM-0", "OM-late")).status_code == 202
    finally:
        worker.stop()


def timed(call) -> tuple[float, object]:
    start = time.monotonic()
    resp = call()
    return time.monotonic() - start, resp


def test_a_stalled_redis_is_503_within_2_s_and_healthz_never_waits(own_redis, tmp_path):
    client = create_app(load_settings()).test_client()
    register_all(client, ["ST-0"])
    assert client.post("/v1/assay-results", json=result("ST-0", "ST-R0")).status_code == 202
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        elapsed, resp = timed(lambda: client.get("/healthz"))
        assert resp.status_code == 200 and elapsed < 0.5
        calls = {
            "write": lambda: client.post("/v1/assay-results", json=result("ST-0", "ST-R1")),
            "register": lambda: client.put("/v1/patients/ST-1", json={"enrolled_on": "2023-01-01"}),
            "read": lambda: client.get("/v1/patients/ST-0/status"),
        }
        for name, call in calls.items():
            elapsed, resp = timed(call)
            assert elapsed < 2.0, (name, elapsed)
            doc = assert_store_unavailable(resp)
            assert doc["reason"] == "timeout", (name, doc)
        elapsed, resp = timed(lambda: client.get("/readyz"))
        assert resp.status_code == 503 and elapsed < 2.0
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    # The stalled write may have landed as Redis resumed: the retry the 503 invited is safe either way.
    resp = client.post("/v1/assay-results", json=result("ST-0", "ST-R1"))
    assert resp.status_code == 202
    assert resp.get_json()["accepted"][0]["outcome"] in ("created", "unchanged")


# An API process that dies in the middle of a request holding an Idempotency-Key: the store call hangs
# (as in a stall), and the test kills the process with SIGKILL there.
_DIES_MID_REQUEST = """
import sys, time
from services.api import create_app
from shared import store
from tests.support import result

def hang(*args, **kwargs):
    print("in the view", flush=True)
    time.sleep(120)

store.store_results = hang
client = create_app().test_client()
client.post("/v1/assay-results", json=[result("IK-0", "IK-R0")],
            headers={"Idempotency-Key": "crash-key", "Authorization": "Bearer " + sys.argv[1]})
"""


def test_a_dead_owner_frees_its_idempotency_key_within_seconds(own_redis):
    client = create_app(load_settings()).test_client()
    register_all(client, ["IK-0"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _DIES_MID_REQUEST, FULL_KEY], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"in the view"
    finally:
        proc.kill()
        proc.wait(10)
    killed_at = time.monotonic()
    body, headers = [result("IK-0", "IK-R0")], {"Idempotency-Key": "crash-key"}
    first = client.post("/v1/assay-results", json=body, headers=headers)
    assert first.status_code == 409  # the reservation of the dead request, until its lease lapses
    resp = wait_for(
        lambda: (
            (resp := client.post("/v1/assay-results", json=body, headers=headers)).status_code != 409 and resp
        ),
        8,
        interval=0.25,
        what="the dead owner's key to free",
    )
    freed_after = time.monotonic() - killed_at
    assert resp.status_code == 202 and "Idempotent-Replayed" not in resp.headers, resp.get_data()
    assert freed_after < 7, freed_after
    again = client.post("/v1/assay-results", json=body, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"


def test_memory_is_reported_and_readyz_warns_before_writes_fail(own_redis):
    client = create_app(load_settings()).test_client()
    r = store.connect(own_redis.url)
    report = client.get("/v1/ops/queues").get_json()["redis_memory"]
    assert report["used_bytes"] > 0 and report["max_bytes"] == 0 and report["near_limit"] is False
    used = r.info("memory")["used_memory"]
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", int(used / 0.85))  # 85 % used: near the limit, not at it
    try:
        report = client.get("/v1/ops/queues").get_json()["redis_memory"]
        assert report["max_bytes"] == int(used / 0.85) and report["policy"] == "noeviction"
        assert report["near_limit"] is True and report["used_ratio"] >= 0.8
        checks = client.get("/readyz").get_json()["checks"]  # 503 here: no worker runs in this test
        assert checks["memory"]["ok"] is True and checks["memory"]["near_limit"] is True
        assert "maxmemory" in checks["memory"]["warning"]
        metrics = client.get("/metrics").get_data(as_text=True)
        gauges = dict(line.split(" ") for line in metrics.splitlines() if line.startswith("cml_redis_"))
        assert float(gauges["cml_redis_maxmemory_bytes"]) == int(used / 0.85)
        assert float(gauges["cml_redis_used_memory_bytes"]) > 0
    finally:
        r.config_set("maxmemory", 0)


def test_an_idempotency_record_keeps_a_bounded_answer_for_a_set_time(own_redis):
    """A client that makes a new key on every retry must not cost Redis the whole answer each time."""
    client = create_app(load_settings()).test_client()
    r = store.connect(own_redis.url)
    patients = [f"IR-{i}" for i in range(200)]
    register_all(client, patients)
    batch = [result(patients[j % 200], f"IR-R{j}") for j in range(1000)]
    sizes = []
    for attempt in ("first", "retry-with-a-new-key"):
        resp = client.post("/v1/assay-results", json=batch, headers={"Idempotency-Key": attempt})
        assert resp.status_code == 202
        record = keys.idempotency("tests", attempt)
        sizes.append((len(resp.get_data()), r.memory_usage(record), r.ttl(record)))
        replay = client.post("/v1/assay-results", json=batch, headers={"Idempotency-Key": attempt})
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_data() == resp.get_data()
    for answer_bytes, stored_bytes, ttl in sizes:
        assert stored_bytes < 24_000 and stored_bytes < answer_bytes / 3, sizes
        assert 0 < ttl <= load_settings().idempotency_ttl_s
