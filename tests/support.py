"""Helpers for API tests: register a patient, build a result, wait for a status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

from tests.conftest import FULL_KEY
from tests.procs import wait_for


def wait_status(client, patient_id: str, predicate, timeout: float = 15.0) -> dict:
    """Poll GET status until ``predicate(doc)`` holds."""

    def check():
        resp = client.get(f"/v1/patients/{patient_id}/status")
        doc = resp.get_json()
        return doc if resp.status_code == 200 and not doc.get("pending") and predicate(doc) else None

    return wait_for(check, timeout, interval=0.05, what=f"status of {patient_id}")


def register(client, patient_id: str, **fields) -> dict:
    body = {"cohorts": ["ACTIM"], "enrolled_on": "2023-01-10", "tki": "imatinib",
            "tki_started_on": "2019-06-01", "dose_mg": 400, **fields}  # fmt: skip
    resp = client.put(f"/v1/patients/{patient_id}", json=body)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def result(patient_id: str, result_id: str | None = None, **fields) -> dict:
    return {
        "result_id": result_id or f"R-{uuid.uuid4().hex[:12]}",
        "patient_id": patient_id,
        "collected_at": "2024-03-01",
        "control_gene": "ABL1",
        "control_copies": 100000,
        "bcr_abl1_copies": 50,
        **fields,
    }


def http(method: str, url: str, body: object | None = None) -> tuple[int, dict]:
    """A JSON request over real HTTP with the tests' full key: (status, parsed body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {FULL_KEY}"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
