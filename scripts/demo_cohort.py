"""Load a small demo cohort through the public API (stdlib only): python scripts/demo_cohort.py URL KEY."""

from __future__ import annotations

import json
import random
import sys
import urllib.request
from datetime import date, timedelta


def call(base: str, method: str, path: str, body: object, headers: dict | None = None) -> dict:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def demo_patients(n: int = 12, seed: int = 7) -> list[tuple[str, dict, list[dict]]]:
    """Patients on imatinib >= 2 years, in MMR at enrolment; some deepen to MR4.5 over a year."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        pid = f"DEMO-{i:03d}"
        enrolled = date(2024, 1, 8) + timedelta(days=7 * i)
        reg = {
            "cohorts": ["DEMO"],
            "enrolled_on": enrolled.isoformat(),
            "tki": "imatinib",
            "tki_started_on": (enrolled - timedelta(days=900 + 30 * i)).isoformat(),
            "dose_mg": 400,
        }
        copies = rng.choice([60, 40, 25, 15])  # per 100,000 ABL1: MMR, not MR4.5
        results = []
        for visit in range(5):
            when = enrolled + timedelta(days=91 * visit)
            results.append(
                {
                    "result_id": f"{pid}-V{visit}",
                    "patient_id": pid,
                    "collected_at": when.isoformat(),
                    "control_gene": "ABL1",
                    "control_copies": rng.randint(60000, 140000),
                    "bcr_abl1_copies": copies,
                    "lab": "DEMO-LAB",
                }
            )
            copies = max(0, copies - rng.choice([0, 5, 10, 20]))
        out.append((pid, reg, results))
    return out


def main(base: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    for pid, reg, results in demo_patients():
        call(base, "PUT", f"/v1/patients/{pid}", reg, headers)
        call(base, "POST", "/v1/assay-results", results, headers)
    print(f"loaded {len(demo_patients())} demo patients in cohort DEMO")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
