"""Turn a cohort CSV (patient_id, group, time_days, status) into registrations, results and events
that produce exactly those times through the service's own rules, and post them through the API."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

from tests.procs import wait_for

ENROLLED = date(2015, 1, 5)
MMR_COPIES = 50.0  # per 100,000 ABL1: 0.05% IS, MMR but not MR4.5
MR45_COPIES = 2.0  # per 100,000 ABL1: 0.002% IS, MR4.5


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return [
            {**row, "time_days": int(float(row["time_days"])), "status": int(row["status"])}
            for row in csv.DictReader(f)
        ]


def _result(pid: str, rid: str, day: int, copies: float) -> dict:
    when = (ENROLLED + timedelta(days=day)).isoformat()
    return {"result_id": rid, "patient_id": pid, "collected_at": when, "control_gene": "ABL1",
            "control_copies": 100000, "bcr_abl1_copies": copies}  # fmt: skip


def patient_payloads(row: dict, prefix: str) -> tuple[str, list[dict], list[dict]]:
    """(patient id, results, events): status 1 = MR4.5 at time; 0 = last assay (MMR) at time;
    2 = death at time. Every patient has an MMR result on the day of enrolment (evaluable)."""
    pid = f"{prefix}-{row['patient_id']}"
    t, status = row["time_days"], row["status"]
    results = [_result(pid, f"{pid}-base", 0, MMR_COPIES)]
    events = []
    if status == 1:
        results.append(_result(pid, f"{pid}-end", t, MR45_COPIES))
    elif status == 0 and t > 0:
        results.append(_result(pid, f"{pid}-last", t, MMR_COPIES))
    elif status == 2:
        events.append({"type": "death", "date": (ENROLLED + timedelta(days=t)).isoformat()})
    return pid, results, events


def load_cohort(client, rows: list[dict], prefix: str, cohorts_of) -> list[str]:
    """Register every row's patient in ``cohorts_of(row)`` and post its data; returns patient ids."""
    pids, batch = [], []
    for row in rows:
        pid, results, events = patient_payloads(row, prefix)
        body = {"cohorts": cohorts_of(row), "enrolled_on": ENROLLED.isoformat(), "tki": "imatinib"}
        assert client.put(f"/v1/patients/{pid}", json=body).status_code == 201
        if events:
            assert client.post(f"/v1/patients/{pid}/events", json=events).status_code == 202
        batch += results
        pids.append(pid)
        if len(batch) >= 500:
            assert client.post("/v1/assay-results", json=batch).status_code == 202
            batch = []
    if batch:
        assert client.post("/v1/assay-results", json=batch).status_code == 202
    return pids


def wait_cohort(client, r, cohort_id: str, timeout: float = 60.0) -> dict:
    """Wait until nothing is dirty and the stored statistics reflect the cohort's data version; they
    must then say so (``pending: false``: no member awaits a recompute)."""

    def settled():
        if r.zcard("cml:dirty:patients") or r.zscore("cml:dirty:cohorts", cohort_id) is not None:
            return None
        resp = client.get(f"/v1/cohorts/{cohort_id}/statistics")
        if resp.status_code != 200:
            return None
        doc = resp.get_json()
        version = int(r.get(f"cml:cohort:{{{cohort_id}}}:version") or 0)
        return doc if doc["data_version"] == version and doc["pending"] is False else None

    return wait_for(settled, timeout, interval=0.1, what=f"cohort {cohort_id} statistics")
