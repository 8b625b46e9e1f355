"""The worklist (GET /v1/patients): filters by cohort, level, action and overdue, cursor pages, served
from the indexes the worker keeps as it stores a status (real Redis, real Celery worker)."""

from __future__ import annotations

import uuid

from tests.conftest import SCOPED_KEYS
from tests.support import register, result, wait_status


def _setup(client) -> tuple[str, dict[str, str]]:
    cohort = f"WL-{uuid.uuid4().hex[:8]}"
    ids = {name: f"{cohort}-{name}" for name in ("mmr", "mr2", "tfr", "small")}
    base = {"cohorts": [cohort], "tki_started_on": "2020-01-01", "enrolled_on": "2020-01-01"}
    for pid in ids.values():
        register(client, pid, **base)
    results = [
        # In MMR: next sample due 6 months after 2024-03-01 (ELN 2020: every 3 to 6 months in MMR).
        result(ids["mmr"], collected_at="2024-03-01", bcr_abl1_copies=50),  # 0.05%
        # Not in MMR: due 3 months after 2024-03-01.
        result(ids["mr2"], collected_at="2024-03-01", bcr_abl1_copies=500),  # 0.5%
        # Off TKI since 2024-01-01, then 0.5%: resume the TKI within 4 weeks.
        result(ids["tfr"], collected_at="2024-02-01", bcr_abl1_copies=500),
        # Undetectable in 5,000 ABL1: cannot assess MR4, repeat the sample (Cross 2015).
        result(ids["small"], collected_at="2024-03-01", bcr_abl1_copies=0, control_copies=5000),
    ]
    resp = client.post(
        f"/v1/patients/{ids['tfr']}/events", json={"type": "tki_stopped", "date": "2024-01-01"}
    )
    assert resp.status_code == 202, resp.get_json()
    assert client.post("/v1/assay-results", json=results).status_code == 202
    for pid in ids.values():
        wait_status(client, pid, lambda d: d["results_count"] == 1 and "actions" in d)
    return cohort, ids


def _ids(client, query: str) -> list[str]:
    resp = client.get(f"/v1/patients?{query}")
    assert resp.status_code == 200, resp.get_json()
    return [p["patient_id"] for p in resp.get_json()["patients"]]


def test_worklist_filters_pages_and_follows_the_status(client, r) -> None:
    cohort, ids = _setup(client)
    everyone = client.get(f"/v1/patients?cohort={cohort}&as_of=2024-04-01").get_json()
    rows = {p["patient_id"]: p for p in everyone["patients"]}
    assert list(rows) == sorted(ids.values())
    assert rows[ids["mmr"]]["response_level"] == "MMR"
    assert rows[ids["mmr"]]["next_sample_due"] == "2024-08-30"  # + floor(6 x 30.4375) = 182 days
    assert rows[ids["mr2"]]["next_sample_due"] == "2024-05-31"  # + floor(3 x 30.4375) = 91 days
    assert rows[ids["tfr"]]["next_sample_due"] == "2024-03-02"  # off TKI, month 1: + 30 days
    assert [a["code"] for a in rows[ids["tfr"]]["actions"]] == ["resume_tki", "sample_overdue"]
    assert rows[ids["tfr"]]["overdue"] is True
    assert "repeat_sample" in [a["code"] for a in rows[ids["small"]]["actions"]]

    assert _ids(client, f"cohort={cohort}&action=resume_tki") == [ids["tfr"]]
    assert _ids(client, f"cohort={cohort}&action=repeat_sample") == [ids["small"]]
    assert _ids(client, f"cohort={cohort}&level=MR2") == sorted([ids["mr2"], ids["tfr"]])
    assert _ids(client, f"cohort={cohort}&level=MMR") == sorted([ids["mmr"], ids["small"]])
    # Overdue is "due strictly before as_of": the MR2 patient is due on 2024-05-31.
    assert ids["mr2"] not in _ids(client, f"cohort={cohort}&overdue=true&as_of=2024-05-31")
    assert ids["mr2"] in _ids(client, f"cohort={cohort}&overdue=true&as_of=2024-06-01")
    assert _ids(client, f"cohort={cohort}&action=sample_overdue&as_of=2024-04-01") == [ids["tfr"]]
    assert _ids(client, f"cohort={cohort}&overdue=true&level=MMR&as_of=2025-01-01") == sorted(
        [ids["mmr"], ids["small"]]
    )

    # Cursor pages: one patient a page, every patient once, in order, then no cursor.
    seen, cursor = [], None
    for _ in range(10):
        page = client.get(f"/v1/patients?cohort={cohort}&limit=1" + (f"&cursor={cursor}" if cursor else ""))
        body = page.get_json()
        seen += [p["patient_id"] for p in body["patients"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids.values())

    # Served from the indexes: a status document gone from Redis does not change the worklist.
    r.delete(f"cml:p:{{{ids['small']}}}:status")
    assert _ids(client, f"cohort={cohort}&action=repeat_sample") == [ids["small"]]

    # The indexes follow the status: an adequate sample closes "repeat", a restart closes "resume".
    client.post(
        "/v1/assay-results", json=[result(ids["small"], collected_at="2024-04-01", bcr_abl1_copies=0)]
    )
    client.post(f"/v1/patients/{ids['tfr']}/events",
                json={"type": "tki_changed", "date": "2024-02-10", "tki": "Glivec"})  # fmt: skip
    wait_status(client, ids["small"], lambda d: d["results_count"] == 2)
    wait_status(client, ids["tfr"], lambda d: d["on_tki"])
    assert _ids(client, f"cohort={cohort}&action=repeat_sample") == []
    assert _ids(client, f"cohort={cohort}&action=resume_tki") == []
    assert _ids(client, f"cohort={cohort}&level=MR5") == [ids["small"]]  # 100,000 ABL1: the MR5 band


def test_worklist_refuses_bad_queries(client) -> None:
    cohort, _ = f"WL-{uuid.uuid4().hex[:8]}", None
    register(client, f"{cohort}-x", cohorts=[cohort])
    for query, field in [
        ("level=MR3", "level"),
        ("action=call_patient", "action"),
        ("overdue=yes", "overdue"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("as_of=2024-13-01", "as_of"),
        ("cursor=%25%25", "cursor"),
    ]:
        resp = client.get(f"/v1/patients?{query}")
        assert resp.status_code == 422, query
        assert resp.get_json()["errors"][0]["pointer"] == f"/{field}"
    assert client.get("/v1/patients?cohort=NO-SUCH-COHORT").status_code == 404
    writer = {"Authorization": "Bearer " + next(k for k, s in SCOPED_KEYS.items() if s == ["results:write"])}
    assert client.get("/v1/patients", headers=writer).status_code == 403
    reader = {"Authorization": "Bearer " + next(k for k, s in SCOPED_KEYS.items() if s == ["status:read"])}
    assert client.get(f"/v1/patients?cohort={cohort}", headers=reader).status_code == 200
