"""Bodies at the edges of JSON and of the assays: every case a 4xx problem naming what is wrong, or the
same stored content whatever the spelling of a number; nothing stored by a refused request."""

from __future__ import annotations

import orjson
import pytest

from shared import keys
from shared.result_codec import decode_result
from tests.support import register, result

PROBLEM = "application/problem+json"
JSON = "application/json"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [33, 255, 300, 1000])
@pytest.mark.parametrize("with_key", [False, True], ids=["plain", "idempotency-key"])
def test_a_deeply_nested_body_is_4xx_whatever_the_headers(client, pid, depth, with_key):
    headers = {"Idempotency-Key": f"deep-{pid}-{depth}"} if with_key else {}
    for path in ("/v1/assay-results", f"/v1/patients/{pid}/events"):
        resp = client.post(path, data=nested(depth), content_type=JSON, headers=headers)
        assert resp.status_code == 400 and resp.mimetype == PROBLEM, resp.get_data()
        assert "nested" in resp.get_json()["detail"]


def test_a_shallow_body_still_reaches_validation(client, pid):
    resp = client.post("/v1/assay-results", data=nested(32), content_type=JSON)
    assert resp.status_code == 422


def test_duplicate_keys_are_refused_naming_the_key(client, r, pid):
    register(client, pid)
    other = f"{pid}-other"
    register(client, other)
    one = orjson.dumps(result(pid, f"{pid}-R1"))
    twice = one[:-1] + b', "patient_id": "' + other.encode() + b'"}'
    for body in (twice, b"[" + twice + b"]"):
        resp = client.post(
            "/v1/assay-results", data=body, content_type=JSON, headers={"Idempotency-Key": f"dup-{pid}"}
        )
        assert resp.status_code == 400 and resp.mimetype == PROBLEM
        doc = resp.get_json()
        assert "patient_id" in doc["detail"] and doc["errors"][0]["field"] == "patient_id"
    assert r.hlen(keys.results(pid)) == 0 and r.hlen(keys.results(other)) == 0
    resp = client.put(f"/v1/patients/{pid}", data=b'{"cohorts": [], "cohorts": ["X"]}', content_type=JSON)
    assert resp.status_code == 400 and "cohorts" in resp.get_json()["detail"]
    # Nested objects too; the same key in two objects is no duplicate.
    resp = client.put(
        "/v1/cohorts/EDGE-DUP", data=b'{"description": "a", "description": "b"}', content_type=JSON
    )
    assert resp.status_code == 400


def test_negative_zero_is_stored_as_zero(client, r, pid):
    register(client, pid)
    rid = f"{pid}-Z"
    body = orjson.dumps(result(pid, rid, bcr_abl1_copies=0)).replace(
        b'"bcr_abl1_copies":0', b'"bcr_abl1_copies":-0.0'
    )
    assert b"-0.0" in body
    first = client.post("/v1/assay-results", data=body, content_type=JSON)
    assert first.status_code == 202
    stored = decode_result(r.hget(keys.results(pid), rid), pid)  # as the canonical JSON reads: 0.0
    assert orjson.dumps(stored["bcr_abl1_copies"]) == b"0.0"
    again = client.post("/v1/assay-results", json=result(pid, rid, bcr_abl1_copies=0))
    assert again.status_code == 202, again.get_json()
    assert again.get_json()["accepted"][0]["outcome"] == "unchanged"


def test_one_number_two_spellings_is_one_request(client, r, pid):
    register(client, pid)
    headers = {"Idempotency-Key": f"num-{pid}"}
    spelled = orjson.dumps(result(pid, f"{pid}-N", control_copies=100000))
    assert b'"control_copies":100000,' in spelled
    first = client.post("/v1/assay-results", data=spelled, content_type=JSON, headers=headers)
    assert first.status_code == 202
    for other in (b'"control_copies":100000.0,', b'"control_copies":1e5,', b'"control_copies":1.00000E+5,'):
        body = spelled.replace(b'"control_copies":100000,', other)
        again = client.post("/v1/assay-results", data=body, content_type=JSON, headers=headers)
        assert again.status_code == 202, again.get_json()
        assert again.headers["Idempotent-Replayed"] == "true"


OUT_OF_RANGE = {
    "subnormal copies": ({"bcr_abl1_copies": 1e-320}, "bcr_abl1_copies", "from 0.001 to 1e+09"),
    "subnormal IS%": ({"bcr_abl1_copies": None, "is_percent": 1e-320}, "is_percent", "from 1e-06 to 10000"),
    "IS% computed above 1e4": (
        {"bcr_abl1_copies": 1e8, "control_copies": 10, "conversion_factor": 1},
        "bcr_abl1_copies",
        "from 0 to 10000",
    ),
    "IS% above 1e4 by the conversion factor": (
        {"bcr_abl1_copies": 1000, "control_copies": 100, "conversion_factor": 500},
        "bcr_abl1_copies",
        "from 0 to 10000",
    ),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE), ids=list(OUT_OF_RANGE))
def test_values_no_assay_produces_are_refused_with_the_range(client, r, pid, case):
    register(client, pid)
    change, field, documented = OUT_OF_RANGE[case]
    resp = client.post("/v1/assay-results", json=[result(pid), {**result(pid), **change}])
    assert resp.status_code == 422, resp.get_json()
    errors = resp.get_json()["errors"]
    assert errors[0]["pointer"] == f"/1/{field}" and documented in errors[0]["detail"], errors
    assert r.hlen(keys.results(pid)) == 0


def test_values_at_the_edges_of_the_range_are_accepted(client, pid):
    register(client, pid)
    edge = [
        result(pid, bcr_abl1_copies=0.001),
        result(pid, bcr_abl1_copies=None, is_percent=1e-6),
        result(pid, bcr_abl1_copies=1e5, control_copies=1000, conversion_factor=1),  # IS% exactly 1e4
    ]
    resp = client.post("/v1/assay-results", json=edge)
    assert resp.status_code == 202, resp.get_json()


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\n"])
def test_free_text_refuses_control_characters(client, r, pid, char):
    register(client, pid)
    resp = client.post("/v1/assay-results", json=result(pid, lab=f"Lab{char}One"))
    assert resp.status_code == 422
    assert resp.get_json()["errors"][0]["pointer"] == "/lab" and "control" in resp.get_json()["detail"]
    resp = client.post(
        f"/v1/patients/{pid}/events", json={"type": "death", "date": "2024-01-01", "note": f"a{char}b"}
    )
    if char == "\n":  # a note may span lines
        assert resp.status_code == 202
    else:
        assert resp.status_code == 422 and resp.get_json()["errors"][0]["pointer"] == "/note"
    resp = client.put("/v1/cohorts/EDGE-TEXT", json={"description": f"x{char}\x01"})
    assert resp.status_code == 422
    assert r.hlen(keys.results(pid)) == 0


def test_route_words_are_reserved_as_cohort_ids(client, r, pid):
    resp = client.put("/v1/cohorts/compare", json={"description": "not a cohort"})
    assert resp.status_code == 422 and resp.mimetype == PROBLEM
    assert resp.get_json()["errors"][0]["pointer"] == "/cohort_id"
    assert not r.exists(keys.cohort_definition("compare"))
    assert "compare" not in [c["cohort_id"] for c in client.get("/v1/cohorts").get_json()["cohorts"]]
    resp = client.put(f"/v1/patients/{pid}", json={"cohorts": ["ACTIM", "compare"]})
    assert resp.status_code == 422 and resp.get_json()["errors"][0]["pointer"] == "/cohorts/1"


def test_405_says_allow(client):
    resp = client.delete("/v1/cohorts")
    assert resp.status_code == 405 and resp.mimetype == PROBLEM
    assert "GET" in resp.headers["Allow"]
    resp = client.get("/v1/assay-results")
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"]
