"""Issue 12's configuration and its replica-acknowledged writes, without a failover: the sentinel list
is parsed (and refused clearly), every Redis client comes from one function, and with WRITE_REPLICAS=1
on a Redis that has no replica each door refuses to acknowledge (WAIT confirms 0 after the timeout),
saying the write is stored on the primary only; the retry of the same content is a no-op."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time

import orjson
import pytest
import redis

from services.api import create_app
from shared import keys, store
from shared.config import load_settings
from shared.queue import make_celery, same_redis
from tests.procs import RedisServer, SentinelSet, stop_process
from tests.support import register, result
from tests.test_openapi import COHORT, EVENTS, PATIENT, RESULTS, Exchanges, openapi, spec  # noqa: F401 - fixtures


def test_sentinel_list_and_master_are_parsed(monkeypatch):
    monkeypatch.setenv("REDIS_SENTINELS", " s1:26379, s2:26380 ,[::1]:26381,")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "cml")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss")
    s = load_settings()
    assert s.redis_sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert s.redis_sentinel_master == "cml" and s.sentinel
    # One broker URL per sentinel, as kombu's Sentinel transport takes them; the password escaped.
    assert (
        s.broker_url == "sentinel://:p%40ss@s1:26379;sentinel://:p%40ss@s2:26380;sentinel://:p%40ss@::1:26381"
    )
    assert same_redis(s), "the write's script enqueues when the broker is the sentinels' primary too"
    assert s.result_backend == "", "results are ignored: no result backend under Sentinel"
    app = make_celery(s, request_path=True)
    options = app.conf.broker_transport_options
    assert options["master_name"] == "cml" and options["sentinel_kwargs"]["socket_timeout"] <= 1.0


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REDIS_SENTINELS", "s1", "'s1' is not host:port"),
        ("REDIS_SENTINELS", "s1:abc", "'s1:abc' is not host:port"),
        ("REDIS_SENTINELS", "s1:26379,:26380", "':26380' is not host:port"),
        ("REDIS_SENTINELS", "s1:70000", "'s1:70000' is not host:port"),
        ("WRITE_REPLICAS", "-1", "WRITE_REPLICAS must be a whole number >= 0"),
        ("WRITE_REPLICAS", "one", "WRITE_REPLICAS must be a whole number >= 0"),
        ("WRITE_REPLICA_TIMEOUT_MS", "1.5", "WRITE_REPLICA_TIMEOUT_MS must be a whole number"),
    ],
)
def test_bad_values_are_refused_naming_them(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        load_settings()


def test_replicas_without_a_timeout_are_refused(monkeypatch):
    # WAIT n 0 would block until a replica answers: a request could hang for ever.
    monkeypatch.setenv("WRITE_REPLICAS", "1")
    monkeypatch.setenv("WRITE_REPLICA_TIMEOUT_MS", "0")
    with pytest.raises(ValueError, match="WRITE_REPLICA_TIMEOUT_MS must be > 0"):
        load_settings()


def test_defaults_keep_the_single_redis(monkeypatch):
    for name in ("REDIS_SENTINELS", "WRITE_REPLICAS", "REDIS_READ_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert not s.sentinel and s.write_replicas == 0 and s.broker_url == s.redis_url and same_redis(s)


def test_redis_password_reaches_the_default_broker_and_backend(monkeypatch):
    """Without sentinels the broker and result backend default to REDIS_URL: REDIS_PASSWORD goes into
    them (escaped), unless the URL carries credentials of its own or CELERY_* names another."""
    for name in ("REDIS_SENTINELS", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss:w/rd")
    s = load_settings()
    assert s.broker_url == s.result_backend == "redis://:p%40ss%3Aw%2Frd@redis:6379/0"
    assert same_redis(s), "the broker is still the data store: the write's script enqueues"
    assert make_celery(s).connection_for_write().as_uri(include_password=True) == s.broker_url
    monkeypatch.setenv("REDIS_URL", "redis://:own@redis:6379/0")
    s = load_settings()
    assert s.broker_url == s.result_backend == "redis://:own@redis:6379/0"
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://broker:6379/1")
    assert load_settings().broker_url == "redis://broker:6379/1"
    monkeypatch.delenv("REDIS_PASSWORD")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.delenv("CELERY_BROKER_URL")
    assert load_settings().broker_url == "redis://redis:6379/0"


def test_every_client_follows_the_sentinels(tmp_path, monkeypatch):
    """The store, the rate limiter's client and the worker's all come from connect_from_settings: with
    sentinels set they reach the primary the sentinels name, whatever REDIS_URL says."""
    ha = SentinelSet(tmp_path, replicas=1)
    try:
        ha.start()
        for name, value in ha.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing there: must not be used
        settings = load_settings()
        for client in (
            store.connect_from_settings(settings),
            store.connect_from_settings(settings, for_requests=True),
        ):
            client.set("cml:test:ha", "1")
        assert ha_primary_value(ha) == b"1"
        from services.worker import redis_client as worker_redis

        monkeypatch.setattr(worker_redis, "_client", None)
        assert worker_redis.redis_client().get("cml:test:ha") == b"1"
        # WAIT on the write's own connection: the replica confirms it.
        r = store.connect_from_settings(settings, for_requests=True)
        with store.replicated(r, store.Replication(1, 1000)) as w:
            w.set("cml:test:ha", "2")
    finally:
        ha.stop()


def ha_primary_value(ha: SentinelSet) -> bytes | None:
    return redis.Redis(port=ha.master_port()).get("cml:test:ha")


@pytest.fixture
def lone_primary(tmp_path, monkeypatch):
    """A Redis with no replica, and the API asking for one: WAIT 1 confirms 0 after the timeout."""
    server = RedisServer(tmp_path / "redis", appendfsync="always")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.setenv("WRITE_REPLICAS", "1")
    monkeypatch.setenv("WRITE_REPLICA_TIMEOUT_MS", "200")
    yield server
    server.stop()


def test_unreplicated_write_is_503_and_its_retry_a_no_op(lone_primary):
    r = store.connect(lone_primary.url)
    plain = create_app(dataclasses.replace(load_settings(), write_replicas=0))
    register(plain.test_client(), "HA-1")
    client = create_app(load_settings()).test_client()
    item = result("HA-1", "HA-R1")
    started = time.monotonic()
    resp = client.post("/v1/assay-results", json=item)
    assert time.monotonic() - started < 2, "bounded by WRITE_REPLICA_TIMEOUT_MS, not the socket timeout"
    assert resp.status_code == 503 and resp.mimetype == "application/problem+json"
    assert resp.headers["Retry-After"] == "1"
    body = resp.get_json()
    assert body["type"] == "/problems/not-replicated"
    assert "stored on the primary but not yet replicated" in body["detail"]
    assert body["replicas_required"] == 1 and body["replicas_confirmed"] == 0
    # Stored whole on the primary (one script): the result with its version bump and dirty mark.
    assert r.hexists(keys.RESULT_INDEX, "HA-R1") and r.hlen(keys.results("HA-1")) == 1
    version = int(r.get(keys.version("HA-1")))
    assert r.zscore(keys.DIRTY_PATIENTS, "HA-1") is not None
    # The retry of the same content changes nothing (still unconfirmed: 503 again, nothing written).
    again = client.post("/v1/assay-results", json=item)
    assert again.status_code == 503
    assert int(r.get(keys.version("HA-1"))) == version and r.hlen(keys.results("HA-1")) == 1
    # Once replication is not required (or a replica confirms), the same retry is answered unchanged.
    ok = plain.test_client().post("/v1/assay-results", json=item)
    assert ok.status_code == 202 and ok.get_json()["accepted"][0]["outcome"] == "unchanged"
    assert int(r.get(keys.version("HA-1"))) == version


def test_registrations_and_events_wait_too(lone_primary):
    client = create_app(load_settings()).test_client()
    resp = client.put("/v1/patients/HA-2", json={"cohorts": ["HA"], "enrolled_on": "2024-01-01"})
    assert resp.status_code == 503 and resp.get_json()["type"] == "/problems/not-replicated"
    resp = client.post("/v1/patients/HA-2/events", json={"type": "death", "date": "2024-06-01"})
    assert resp.status_code == 503 and resp.get_json()["type"] == "/problems/not-replicated"


HL7 = (
    "MSH|^~\\&|LAB|HOSP|CML|HOSP|20240301090000||ORU^R01|MSG-HA-1|P|2.5.1\r"
    "PID|1||HA-3^^^HOSP^MR\r"
    "OBR|1|ORD1|HA-H1^LAB|BCRABL^BCR-ABL1 qPCR^L|||20240301083000+0100\r"
    "OBX|1|NM|BCRABL1-COPIES^BCR-ABL1 copies^L||50|{copies}|||||F\r"
    "OBX|2|NM|ABL1-COPIES^ABL1 copies^L||100000|{copies}|||||F\r"
)


def test_hl7v2_answers_ar_saying_stored_not_replicated(lone_primary):
    plain = create_app(dataclasses.replace(load_settings(), write_replicas=0))
    register(plain.test_client(), "HA-3")
    client = create_app(load_settings()).test_client()
    resp = client.post("/v1/hl7v2", data=HL7.encode(), content_type="x-application/hl7-v2+er7")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 503 and resp.headers["Retry-After"], text
    assert "MSA|AR|MSG-HA-1" in text and "stored on the primary but not yet replicated" in text
    r = store.connect(lone_primary.url)
    assert r.hexists(keys.RESULT_INDEX, "HA-H1")
    # Not remembered as answered: the engine's re-send is handled again (and stores nothing new).
    version = int(r.get(keys.version("HA-3")))
    again = plain.test_client().post("/v1/hl7v2", data=HL7.encode(), content_type="x-application/hl7-v2+er7")
    assert "MSA|AA|MSG-HA-1" in again.get_data(as_text=True)
    assert int(r.get(keys.version("HA-3"))) == version


def test_fhir_answers_an_operation_outcome_503(lone_primary):
    plain = create_app(dataclasses.replace(load_settings(), write_replicas=0))
    register(plain.test_client(), "HA-4")
    client = create_app(load_settings()).test_client()
    observation = {
        "resourceType": "Observation", "status": "final", "identifier": [{"value": "HA-F1"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "69380-4"}]},
        "subject": {"reference": "Patient/HA-4"}, "effectiveDateTime": "2024-07-02",
        "valueQuantity": {"value": 0.05, "unit": "%"},
        "component": [
            {"code": {"coding": [{"system": "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr",
                                  "code": "ABL1-COPIES"}]}, "valueQuantity": {"value": 100000}},
            {"code": {"coding": [{"system": "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr",
                                  "code": "BCRABL1-COPIES"}]}, "valueQuantity": {"value": 50}}],
    }  # fmt: skip
    resp = client.post(
        "/fhir/Observation", data=orjson.dumps(observation), content_type="application/fhir+json"
    )
    body = resp.get_json()
    assert resp.status_code == 503 and resp.headers["Retry-After"], body
    assert body["resourceType"] == "OperationOutcome"
    assert "not yet replicated" in orjson.dumps(body).decode()


def test_not_replicated_answers_conform_to_the_spec(lone_primary, request):
    """Every JSON write documents this 503 (StoreUnavailable): its problem document validates (with
    tests/test_openapi.py's validator and fixtures)."""
    validator, document = request.getfixturevalue("openapi"), request.getfixturevalue("spec")
    plain = create_app(dataclasses.replace(load_settings(), write_replicas=0))
    register(plain.test_client(), "HA-5")
    call = Exchanges(create_app(load_settings()).test_client(), validator, document)
    answers = [
        call("POST", RESULTS, RESULTS, 503, json=result("HA-5", "HA-O1")),
        call(
            "POST", RESULTS, RESULTS, 503, json=result("HA-5", "HA-O2"), headers={"Idempotency-Key": "k-ha"}
        ),
        call("PUT", "/v1/patients/HA-5", PATIENT, 503, json={"cohorts": ["HA"], "enrolled_on": "2024-01-01"}),
        call("POST", "/v1/patients/HA-5/events", EVENTS, 503, json={"type": "death", "date": "2024-06-01"}),
        call("PUT", "/v1/cohorts/HA", COHORT, 503, json={"endpoint": "MR4"}),
    ]
    for resp in answers:
        assert resp.get_json()["type"] == "/problems/not-replicated" and int(resp.headers["Retry-After"]) > 0


def test_hot_reads_use_the_read_replica_and_fall_back_to_the_primary(tmp_path, monkeypatch):
    primary = RedisServer(tmp_path / "primary")
    primary.extra = ["--repl-diskless-sync-delay", "0"]
    primary.start()
    replica = RedisServer(tmp_path / "replica", replicaof=primary.port)
    replica.extra = ["--replica-serve-stale-data", "no"]
    try:
        replica.start()
        monkeypatch.setenv("REDIS_URL", primary.url)
        monkeypatch.setenv("REDIS_READ_URL", replica.url)
        monkeypatch.setenv("WRITE_REPLICAS", "1")  # the one replica: a 202 is readable there at once
        client = create_app(load_settings()).test_client()
        register(client, "HA-6")
        stats = redis.Redis(port=replica.port)

        def gets() -> int:
            return int(stats.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

        before = gets()
        resp = client.get("/v1/patients/HA-6/status")
        assert resp.status_code == 200 and resp.get_json()["patient_id"] == "HA-6"
        assert gets() == before + 1, "the status was read from the replica"
        assert client.get("/v1/patients/HA-6/results").status_code == 200
        replica.kill9()  # the replica gone: the primary answers, no 503
        resp = client.get("/v1/patients/HA-6/status")
        assert resp.status_code == 200 and resp.get_json()["patient_id"] == "HA-6"
        assert client.get("/v1/patients/HA-6/results").status_code == 200
    finally:
        replica.stop()
        primary.stop()


def test_a_failed_read_replica_is_skipped_for_a_while(tmp_path, monkeypatch):
    """A stalled read replica (SIGSTOP) costs one GET its read timeout; the next GETs go to the primary at
    once, without touching the replica, until the back-off ends; then the replica is read again."""
    primary = RedisServer(tmp_path / "primary")
    primary.extra = ["--repl-diskless-sync-delay", "0"]
    primary.start()
    replica = RedisServer(tmp_path / "replica", replicaof=primary.port)
    try:
        replica.start()
        monkeypatch.setenv("REDIS_URL", primary.url)
        monkeypatch.setenv("REDIS_READ_URL", replica.url)
        monkeypatch.setattr(store, "REPLICA_BACKOFF_S", 3.0)
        client = create_app(load_settings()).test_client()
        register(client, "HA-10")
        stats = redis.Redis(port=replica.port)

        def gets() -> int:
            return int(stats.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

        assert client.get("/v1/patients/HA-10/status").status_code == 200
        before = gets()
        replica.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        assert client.get("/v1/patients/HA-10/status").status_code == 200  # the primary, after a timeout
        assert time.monotonic() - started < 2
        started = time.monotonic()
        for _ in range(5):
            assert client.get("/v1/patients/HA-10/status").status_code == 200
            assert client.get("/v1/patients/HA-10/results").status_code == 200
        assert time.monotonic() - started < 0.5, "the replica is skipped, not waited for, on each read"
        replica.proc.send_signal(signal.SIGCONT)
        # The stalled GET may still run once the replica resumes; the skipped reads never reached it.
        time.sleep(0.3)
        resumed = gets()
        assert resumed <= before + 1, "only the first read tried the replica"
        time.sleep(3.0)
        assert client.get("/v1/patients/HA-10/status").status_code == 200
        assert gets() == resumed + 1, "after the back-off the replica is read again"
    finally:
        if replica.proc:
            replica.proc.send_signal(signal.SIGCONT)
        replica.stop()
        primary.stop()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REDIS_READ_FROM_REPLICAS": "1"}, "needs REDIS_SENTINELS"),
        ({"REDIS_READ_FROM_REPLICAS": "yes", "REDIS_SENTINELS": "s1:26379"}, "must be 0 or 1"),
        ({"REDIS_READ_FROM_REPLICAS": "1", "REDIS_SENTINELS": "s1:26379", "REDIS_READ_URL": "redis://r"},
         "not both"),
    ],
)  # fmt: skip
def test_read_from_replicas_is_refused_when_it_cannot_apply(monkeypatch, env, says):
    for name in ("REDIS_SENTINELS", "REDIS_READ_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=says):
        load_settings()


def test_hot_reads_from_the_sentinels_replicas(tmp_path, monkeypatch):
    """REDIS_READ_FROM_REPLICAS=1 under Sentinel: the status and timeline GETs read from the replicas the
    sentinels list (Sentinel.slave_for), and from the primary once no replica answers."""
    ha = SentinelSet(tmp_path, replicas=2)
    try:
        ha.start()
        for name, value in ha.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("REDIS_READ_FROM_REPLICAS", "1")
        monkeypatch.setenv("WRITE_REPLICAS", "2")  # every replica has each 202 write: readable at once
        settings = load_settings()
        assert settings.redis_read_from_replicas
        client = create_app(settings).test_client()
        register(client, "HA-11")
        nodes = [redis.Redis(port=s.port) for s in (ha.primary, *ha.replicas)]

        def gets() -> list[int]:
            return [int(n.info("commandstats").get("cmdstat_get", {}).get("calls", 0)) for n in nodes]

        before = gets()
        for _ in range(4):
            resp = client.get("/v1/patients/HA-11/status")
            assert resp.status_code == 200 and resp.get_json()["patient_id"] == "HA-11"
        after = gets()
        assert after[0] == before[0], "no status read went to the primary"
        assert sum(after[1:]) - sum(before[1:]) == 4, (before, after)
        assert client.get("/v1/patients/HA-11/results").status_code == 200
        for replica in ha.replicas:  # no replica left: the primary answers, no 503
            replica.kill9()
        resp = client.get("/v1/patients/HA-11/status")
        assert resp.status_code == 200 and resp.get_json()["patient_id"] == "HA-11"
        assert client.get("/v1/patients/HA-11/results").status_code == 200
    finally:
        ha.stop()


def test_mllp_answers_ar_saying_stored_not_replicated(lone_primary, tmp_path):
    """The MLLP listener, as a process: the same ACK as HTTP (AR, the ERR saying stored, not replicated)."""
    from tests.interop.hl7_messages import copies, oru
    from tests.test_mllp import exchange, msa
    from tests.test_mllp import start as start_mllp

    plain = create_app(dataclasses.replace(load_settings(), write_replicas=0))
    register(plain.test_client(), "HA-7")
    server = start_mllp(lone_primary.url, tmp_path, WRITE_REPLICAS="1", WRITE_REPLICA_TIMEOUT_MS="200")
    try:
        with server.connect() as sock:
            ack = exchange(sock, oru("HA-7", "HA-M1", copies(), control="HA-M1").encode())
        assert msa(ack) == "MSA|AR|HA-M1" and "stored on the primary but not yet replicated" in ack, ack
        assert store.connect(lone_primary.url).hexists(keys.RESULT_INDEX, "HA-M1")
    finally:
        stop_process(server.proc)


# --- review fixes: WAIT on the writing connection, a demotion during WAIT, a dead sentinel ----------


@pytest.fixture
def stalled_replica(tmp_path, monkeypatch):
    """A primary and its replica, in sync (the replica has acknowledged the primary's offset), then the
    replica SIGSTOPped: still connected, confirming nothing new. WRITE_REPLICAS=1 on the primary."""
    primary = RedisServer(tmp_path / "primary", appendfsync="always")
    primary.extra = ["--repl-diskless-sync-delay", "0"]
    primary.start()
    replica = RedisServer(tmp_path / "replica", replicaof=primary.port)
    try:
        replica.start()
        r = redis.Redis(port=primary.port)
        monkeypatch.setenv("REDIS_URL", primary.url)
        register(create_app(dataclasses.replace(load_settings(), write_replicas=0)).test_client(), "HA-8")

        def acked() -> bool:  # the replica has confirmed everything written so far
            info = r.info("replication")
            return info.get("slave0", {}).get("offset") == info["master_repl_offset"]

        from tests.procs import wait_for

        wait_for(acked, 10, what="the replica to acknowledge the primary's offset")
        replica.proc.send_signal(signal.SIGSTOP)
        monkeypatch.setenv("WRITE_REPLICAS", "1")
        yield primary, replica
    finally:
        if replica.proc:
            replica.proc.send_signal(signal.SIGCONT)
        replica.stop()
        primary.stop()


def test_wait_runs_on_the_writing_connection(stalled_replica):
    """WAIT 1 on a connection that wrote nothing since the replica stopped returns 1 at once (the
    replica acknowledged every earlier offset); on the connection that wrote it waits for the new
    offset, which the stopped replica never confirms: NotReplicated, and through the API 503
    not-replicated, not a 202."""
    primary, _ = stalled_replica
    assert redis.Redis(port=primary.port).wait(1, 200) == 1, "a fresh connection's WAIT counts the replica"
    # The store's own: the pool holds idle connections opened before the write (their WAIT would count
    # the replica); the write takes one of them, and its WAIT must run on that one.
    r = store.connect_for_requests(primary.url)
    idle = [r.connection_pool.get_connection() for _ in range(2)]
    for conn in idle:
        r.connection_pool.release(conn)
    with pytest.raises(store.NotReplicated), store.replicated(r, store.Replication(1, 300)) as w:
        w.set("cml:test:ha", "1")
    client = create_app(dataclasses.replace(load_settings(), write_replica_timeout_ms=300)).test_client()
    resp = client.post("/v1/assay-results", json=result("HA-8", "HA-W1"))
    body = resp.get_json()
    assert resp.status_code == 503 and body["type"] == "/problems/not-replicated", body
    assert body["replicas_confirmed"] == 0


def test_primary_demoted_during_wait_is_503_not_500(stalled_replica, tmp_path):
    """REPLICAOF (what a failover does to the old primary) while a write's WAIT blocks: Redis answers the
    WAIT "UNBLOCKED ... (master -> replica?)". The write's outcome is unknown: 503 store-unavailable
    with Retry-After, never a 500. A write sent once the primary is a replica is refused READONLY: 503."""
    primary, _ = stalled_replica
    other = RedisServer(tmp_path / "other")
    other.start()
    try:
        client = create_app(dataclasses.replace(load_settings(), write_replica_timeout_ms=3000)).test_client()
        demote = threading.Timer(
            0.5, lambda: redis.Redis(port=primary.port).replicaof("127.0.0.1", other.port)
        )
        demote.start()
        started = time.monotonic()
        resp = client.post("/v1/assay-results", json=result("HA-8", "HA-D1"))
        demote.join()
        assert time.monotonic() - started < 2.5, "the demotion ends the WAIT, not its 3 s timeout"
        body = resp.get_json()
        assert resp.status_code == 503 and resp.headers["Retry-After"], body
        assert body["type"] == "/problems/store-unavailable", body
        # A write sent to the demoted primary is refused READONLY: 503 too.
        resp = client.post("/v1/assay-results", json=result("HA-8", "HA-D2"))
        assert resp.status_code == 503 and resp.get_json()["type"] == "/problems/store-unavailable"
        # WAIT sent to an instance already a replica: "ERR WAIT cannot be used with replica instances",
        # which the store raises as a connection error (outcome unknown), not a plain ResponseError.
        r = store.connect_for_requests(primary.url)
        with (
            pytest.raises(redis.exceptions.ConnectionError, match="primary demoted during WAIT"),
            store.replicated(r, store.Replication(1, 300)) as w,
        ):
            w.get("cml:test:ha")
    finally:
        other.stop()


def test_a_dead_sentinel_listed_first_costs_no_retries(tmp_path, monkeypatch):
    """A refused sentinel first in REDIS_SENTINELS: the API's first write, and the worker's broker
    connection, go on to the next sentinel at once (no retry with back-off of the dead one)."""
    from tests.procs import free_port

    ha = SentinelSet(tmp_path, replicas=1)
    try:
        ha.start()
        for name, value in ha.env.items():
            monkeypatch.setenv(name, value)
        dead = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()},"
        monkeypatch.setenv("REDIS_SENTINELS", dead + ha.env["REDIS_SENTINELS"])
        settings = load_settings()
        client = create_app(settings).test_client()
        started = time.monotonic()
        status = client.put("/v1/patients/HA-9", json={"cohorts": ["HA"], "enrolled_on": "2024-01-01"})
        assert status.status_code == 201, status.get_json()
        assert time.monotonic() - started < 2, f"first write took {time.monotonic() - started:.1f} s"
        # The worker's side: kombu's Sentinel transport asks the same sentinels.
        app = make_celery(settings)
        started = time.monotonic()
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            conn.default_channel.client.ping()
        assert time.monotonic() - started < 2, f"the broker took {time.monotonic() - started:.1f} s"
    finally:
        ha.stop()
