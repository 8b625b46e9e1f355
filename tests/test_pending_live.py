"""Statistics, status and timeline say honestly what they reflect (README, "What pending means"): with
the real API, redis-server and Celery worker, no answer says ``pending: false`` without every write
acknowledged before it.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from shared import keys, store
from tests.cohort_loader import wait_cohort

pytestmark = pytest.mark.slow  # about 20 s: 4,000 recomputes on the session's worker

ENROLLED = "2023-01-10"
N = 2000
BATCH = 1000  # the API's most results in one post (MAX_BATCH)
VOLATILE = ("computed_at",)


def figures(doc: dict) -> dict:
    """A statistics answer without what changes from one refresh of the same data to the next."""
    return {k: v for k, v in doc.items() if k not in VOLATILE and k != "pending"}


def register_all(client, pids: list[str], cohort_id: str) -> None:
    for pid in pids:
        body = {"cohorts": [cohort_id], "enrolled_on": ENROLLED, "tki": "imatinib",
                "tki_started_on": "2019-06-01", "dose_mg": 400}  # fmt: skip
        assert client.put(f"/v1/patients/{pid}", json=body).status_code == 201


def results_for(pids: list[str], offset: int) -> list[dict]:
    # Every other patient reaches MR4.5 (0.002%) at its first assay; the others are in MMR (0.04%).
    return [
        {"result_id": f"{pid}-r1", "patient_id": pid, "collected_at": "2023-07-10", "control_gene": "ABL1",
         "control_copies": 100000, "bcr_abl1_copies": 2 if (offset + i) % 2 == 0 else 40}
        for i, pid in enumerate(pids)
    ]  # fmt: skip


def test_no_acknowledged_write_hides_behind_pending_false(client, r):
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    pids = [f"{cohort}-{i:04d}" for i in range(N)]
    started = time.monotonic()
    register_all(client, pids, cohort)
    before = wait_cohort(client, r, cohort, timeout=90)
    assert before["pending"] is False and before["n"] == N and before["n_evaluable"] == 0
    registered_s = time.monotonic() - started

    stats_url = f"/v1/cohorts/{cohort}/statistics"
    watched = pids[-1]  # the last patient of the last batch: its recompute is queued behind all others
    answers: list[dict] = []  # every statistics answer after the last 202, in order
    other_horizons: list[dict] = []
    patient_answers: list[tuple[dict, dict]] = []

    first = client.post("/v1/assay-results", json=results_for(pids[:BATCH], 0))
    assert first.status_code == 202
    after_first = client.get(stats_url).get_json()
    # (Refreshes may already have stored some of the batch's records: still pending, rightly.)
    assert after_first["pending"] is True, "a write acknowledged, its figures not in the statistics yet"
    second = client.post("/v1/assay-results", json=results_for(pids[BATCH:], BATCH))
    assert second.status_code == 202
    version = next(t["data_version"] for t in second.get_json()["tasks"] if t["patient_id"] == watched)

    def settled() -> bool:
        # Independent of the flag under test: every recompute stored, the statistics of the cohort's
        # current version and no refresh due.
        return (
            r.zcard(keys.DIRTY_PATIENTS) == 0
            and r.zscore(keys.DIRTY_COHORTS, cohort) is None
            and answers[-1]["data_version"] == int(r.get(keys.cohort_version(cohort)))
        )

    deadline = time.monotonic() + 120
    while True:
        answers.append(client.get(stats_url).get_json())
        status = client.get(f"/v1/patients/{watched}/status").get_json()
        timeline = client.get(f"/v1/patients/{watched}/results").get_json()
        patient_answers.append((status, timeline))
        if len(answers) % 5 == 0:
            other_horizons.append(client.get(f"{stats_url}?horizons=6,12").get_json())
            other_horizons.append(client.get(f"/v1/cohorts/{cohort}/curve").get_json())
        if settled():
            break
        assert time.monotonic() < deadline, "statistics did not settle within 120 s"
        time.sleep(0.02)
    settle_s = time.monotonic() - started - registered_s
    final = client.get(stats_url).get_json()

    # The final answer reflects both batches, and says so.
    assert final["pending"] is False
    assert final["n"] == N and final["n_evaluable"] == N
    assert final["outcomes"] == {"endpoint": N // 2, "competing": 0, "censored": N // 2}
    # Right after the 202 the answer was pending; every answer saying false is the final one.
    assert answers[0]["pending"] is True
    honest = [a for a in answers if a["pending"] is False]
    assert honest, "the settled statistics say pending: false"
    for a in honest:
        assert figures(a) == figures(final), (a["data_version"], final["data_version"])
    # Other horizons and the JSON curve carry the stored document's flag.
    for doc in other_horizons:
        assert doc["pending"] is True or doc["data_version"] == final["data_version"], doc["data_version"]

    # The watched patient: pending from the 202 until its recompute of that write was stored.
    assert patient_answers[0][0]["pending"] is True and patient_answers[0][1]["pending"] is True
    for status, timeline in patient_answers:
        for doc in (status, timeline):
            assert doc["pending"] == (doc["data_version"] < version), (doc["pending"], doc["data_version"])
    assert patient_answers[-1][0]["data_version"] == version
    assert [x["result_id"] for x in patient_answers[-1][1]["results"]] == [f"{watched}-r1"]
    # The stored bytes are what the read path returns: one GET, the flag inside.
    assert orjson.loads(r.get(keys.cohort_stats(cohort)))["pending"] is False
    assert r.scard(keys.cohort_awaiting(cohort)) == 0
    versions = sorted({a["data_version"] for a in answers if a["pending"]})
    print(
        f"registered {N} in {registered_s:.1f} s; {len(answers)} statistics reads until settled in "
        f"{settle_s:.1f} s: {len(honest)} pending: false, the others pending at versions {versions}"
    )


def test_reads_stay_one_get_of_the_stored_bytes(app, client, r, pid, monkeypatch):
    """The flag lives in the stored bytes: status and statistics are still one Redis GET each
    (bench/read_path.py), pending or not, and the timeline one script (stored classifications and
    results). Every command the API's client sends is recorded."""
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    register_all(client, [pid], cohort)
    assert client.post("/v1/assay-results", json=results_for([pid], 0)).status_code == 202
    wait_cohort(client, r, cohort)
    api_redis = app.extensions["cml"].redis
    sent: list[tuple] = []
    send = api_redis.execute_command

    def recording(*args, **options):
        sent.append(args)
        return send(*args, **options)

    monkeypatch.setattr(api_redis, "execute_command", recording)
    for url, key in ((f"/v1/patients/{pid}/status", keys.status(pid)),
                     (f"/v1/patients/{pid}/results", keys.timeline(pid)),
                     (f"/v1/cohorts/{cohort}/statistics", keys.cohort_stats(cohort))):  # fmt: skip
        for flag in (b"", b"pending"):
            if flag:  # as a write leaves it
                r.setrange(key, 0, store.PENDING_TRUE)
            sent.clear()
            resp = client.get(url)
            assert resp.status_code == 200 and resp.get_json()["pending"] is bool(flag)
            if key == keys.timeline(pid):
                # Built on read from the stored classifications and results: one script, one round trip.
                assert len(sent) == 1 and sent[0][0] == "EVAL" and sent[0][3:5] == (key, keys.results(pid))
                assert resp.get_data() == store.read_timeline(r, pid)
                continue
            assert sent == [("GET", key)], sent
            assert resp.get_data() == r.get(key)
