"""Bad input: each case is a 4xx application/problem+json naming the field, and nothing is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import keys
from tests.support import register, result

PROBLEM = "application/problem+json"
TOMORROW_PLUS = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()

CASES = {
    "wrong type for copies": ({"bcr_abl1_copies": "12"}, "bcr_abl1_copies"),
    "negative copies": ({"bcr_abl1_copies": -1}, "bcr_abl1_copies"),
    "boolean copies": ({"control_copies": True}, "control_copies"),
    "zero control copies": ({"control_copies": 0}, "control_copies"),
    "negative control copies": ({"control_copies": -5}, "control_copies"),
    "unknown control gene": ({"control_gene": "HPRT1"}, "control_gene"),
    "collected in the future": ({"collected_at": TOMORROW_PLUS}, "collected_at"),
    "collected before 1990": ({"collected_at": "1989-12-31"}, "collected_at"),
    "not a date": ({"collected_at": "2024-02-30"}, "collected_at"),
    "both measurements": ({"is_percent": 0.1}, "is_percent"),
    "no measurement": ({"bcr_abl1_copies": None}, "bcr_abl1_copies"),
    "unknown field": ({"bcr_abl1": 3}, "bcr_abl1"),
    "unknown status": ({"status": "preliminary"}, "status"),
    "zero conversion factor": ({"conversion_factor": 0}, "conversion_factor"),
    # Out of any assay's range: accepted, they would overflow the scoring and park the patient.
    "control copies below one": ({"control_copies": 1e-300, "bcr_abl1_copies": 1e9}, "control_copies"),
    "copies beyond any reaction": ({"bcr_abl1_copies": 1e20}, "bcr_abl1_copies"),
    "control copies beyond any reaction": ({"control_copies": 1e12}, "control_copies"),
    "IS% beyond any patient": ({"bcr_abl1_copies": None, "is_percent": 1e5}, "is_percent"),
    "vanishing conversion factor": ({"conversion_factor": 1e-320}, "conversion_factor"),
    "huge conversion factor": ({"conversion_factor": 1e6}, "conversion_factor"),
    "unicode result id": ({"result_id": "R-ñ-1"}, "result_id"),
    "very long result id": ({"result_id": "R" * 65}, "result_id"),
    "id with newline": ({"result_id": "R-1\n"}, "result_id"),
    "unknown patient": ({"patient_id": "P-never-registered"}, "patient_id"),
}


def written(r, pid: str) -> tuple:
    return r.hlen(keys.results(pid)), r.xlen(keys.AUDIT), r.hlen(keys.RESULT_INDEX)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_result_is_refused_naming_the_field(client, r, pid, case):
    register(client, pid)
    change, field = CASES[case]
    bad = {**result(pid), **change}
    for body, pointer in ((bad, f"/{field}"), ([result(pid), result(pid), bad], f"/2/{field}")):
        before = written(r, pid)
        resp = client.post("/v1/assay-results", json=body)
        assert 400 <= resp.status_code < 500, resp.get_json()
        assert resp.mimetype == PROBLEM
        problem = resp.get_json()
        assert problem["status"] == resp.status_code and problem["title"] and problem["detail"]
        assert pointer in [e["pointer"] for e in problem["errors"]], problem
        assert written(r, pid) == before


def test_malformed_json(client, r, pid):
    register(client, pid)
    before = written(r, pid)
    resp = client.post("/v1/assay-results", data=b'{"result_id": ', content_type="application/json")
    assert resp.status_code == 400 and resp.mimetype == PROBLEM
    assert "JSON" in resp.get_json()["detail"]
    assert written(r, pid) == before


def test_not_json(client):
    resp = client.post(
        "/v1/assay-results", data=b"result_id=1", content_type="application/x-www-form-urlencoded"
    )
    assert resp.status_code == 415 and resp.mimetype == PROBLEM


def test_oversized_batch(client, r, pid):
    register(client, pid)
    before = written(r, pid)
    resp = client.post("/v1/assay-results", json=[result(pid) for _ in range(1001)])
    assert resp.status_code == 413 and resp.mimetype == PROBLEM
    assert resp.get_json()["errors"] == [
        {
            "pointer": "/1000",
            "field": "",
            "detail": "a batch holds at most 1000 results (MAX_BATCH); got 1001",
        }
    ]
    assert written(r, pid) == before


def test_oversized_body(client):
    resp = client.post(
        "/v1/assay-results", data=b"[" + b" " * (3 * 1024 * 1024) + b"]", content_type="application/json"
    )
    assert resp.status_code == 413 and resp.mimetype == PROBLEM


def test_duplicate_ids_in_one_batch(client, r, pid):
    register(client, pid)
    before = written(r, pid)
    resp = client.post(
        "/v1/assay-results", json=[result(pid, "R-dup"), result(pid, "R-x"), result(pid, "R-dup")]
    )
    assert resp.status_code == 422
    assert resp.get_json()["errors"] == [
        {"pointer": "/2/result_id", "field": "result_id", "detail": "repeats item 0 of this batch"}
    ]
    assert written(r, pid) == before


def test_bad_registration_and_events(client, r, pid):
    resp = client.put(f"/v1/patients/{pid}", json={"cohorts": ["bad id!"], "enrolled_on": "2024-13-01"})
    assert resp.status_code == 422
    pointers = {e["pointer"] for e in resp.get_json()["errors"]}
    assert {"/cohorts/0", "/enrolled_on"} <= pointers
    assert not r.exists(keys.registration(pid))
    assert client.put("/v1/patients/" + "P" * 65, json={}).status_code == 422
    register(client, pid)
    resp = client.post(
        f"/v1/patients/{pid}/events", json=[{"type": "death", "date": "2024-01-01"}, {"type": "x"}]
    )
    assert resp.status_code == 422
    assert {"/1/type", "/1/date"} <= {e["pointer"] for e in resp.get_json()["errors"]}
    assert r.hlen(keys.events(pid)) == 0
