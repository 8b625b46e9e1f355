"""Cohorts kept live: the ACTIM figure out of posted results, coalesced refreshes under a burst,
definition changes recomputed at once, membership changes, not-evaluable patients."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import numpy as np
import pytest

from shared import keys, stats
from shared.clinical.timeline import DAYS_PER_MONTH
from shared.config import load_settings
from tests.cohort_loader import wait_cohort
from tests.procs import wait_for

ENROLLED = date(2022, 3, 7)


def day(months: float) -> str:
    return (ENROLLED + timedelta(days=round(months * DAYS_PER_MONTH))).isoformat()


def res(pid: str, months: float, copies: float) -> dict:
    return {"result_id": f"{pid}-{months}", "patient_id": pid, "collected_at": day(months),
            "control_gene": "ABL1", "control_copies": 100000, "bcr_abl1_copies": copies}  # fmt: skip


def register(client, pid: str, cohorts: list[str]) -> None:
    body = {"cohorts": cohorts, "enrolled_on": ENROLLED.isoformat(), "tki": "imatinib",
            "tki_started_on": "2018-01-15", "dose_mg": 400}  # fmt: skip
    assert client.put(f"/v1/patients/{pid}", json=body).status_code in (200, 201)


@pytest.fixture
def cohort() -> str:
    return f"C-{uuid.uuid4().hex[:8]}"


def test_actim_figure_from_posted_results(client, r, cohort):
    """ACTIM (clinical-rules.md section 5): 24 patients in MMR not MR4.5; 13 reach MR4.5 at distinct
    months before 12, one leaves follow-up at month 7, ten stay in MMR past month 12:
    56% (95% CI 37-76%) at 12 months by 1 - Kaplan-Meier with a log(-log) CI."""
    responders = [1, 2, 3, 4, 5, 6, 7.5, 8, 8.5, 9, 9.5, 10, 11]
    batch = []
    for i in range(24):
        pid = f"{cohort}-{i:02d}"
        register(client, pid, [cohort])
        batch.append(res(pid, 0, 40))  # baseline: 0.04%, in MMR, not in MR4.5
        if i < len(responders):
            batch.append(res(pid, responders[i], 2))  # 0.002%: MR4.5
        elif i == len(responders):
            batch.append(res(pid, 7, 30))  # last assay at month 7
        else:
            batch += [res(pid, m, 30) for m in (3, 6, 9, 13)]
    assert client.post("/v1/assay-results", json=batch).status_code == 202
    doc = wait_cohort(client, r, cohort)
    assert doc["n"] == 24 and doc["n_evaluable"] == 24
    assert doc["outcomes"] == {"endpoint": 13, "competing": 0, "censored": 11}
    i12 = doc["horizons_months"].index(12.0)
    km = doc["one_minus_km"]
    assert [round(100 * km[k][i12]) for k in ("estimate", "lower", "upper")] == [56, 37, 76]
    assert km["n_at_risk"][i12] == 10
    # No competing events: Aalen-Johansen equals 1 - KM.
    assert abs(doc["aalen_johansen"]["estimate"][i12] - km["estimate"][i12]) < 1e-12


def test_burst_coalesces_refreshes_and_reflects_the_last_state(client, r, cohort):
    """10,000 results for one cohort's 100 patients: a handful of refreshes, not 10,000."""
    patients = [f"{cohort}-{i:03d}" for i in range(100)]
    for pid in patients:
        register(client, pid, [cohort])
    started = time.monotonic()
    for visit in range(100):
        months = visit * 0.25
        # Patients with an even index reach MR4.5 at visit 50; the others stay in MMR.
        batch = [
            res(pid, months, 2 if (visit >= 50 and i % 2 == 0) else 40) for i, pid in enumerate(patients)
        ]
        assert client.post("/v1/assay-results", json=batch).status_code == 202
    # The members' statuses change until the last recompute: that is how long the cohort keeps moving.
    wait_for(lambda: r.zcard(keys.DIRTY_PATIENTS) == 0, 120, interval=0.05, what="recomputes to finish")
    burst_s = time.monotonic() - started
    doc = wait_cohort(client, r, cohort, timeout=120)
    assert doc["n_evaluable"] == 100
    assert doc["outcomes"]["endpoint"] == 50
    assert doc["last_follow_up_days"] == (date.fromisoformat(day(99 * 0.25)) - ENROLLED).days
    refreshes = int(r.get(keys.cohort_refreshes(cohort)))
    print(f"refreshes for 10,000 results in {burst_s:.1f} s: {refreshes}")
    # Coalesced: at most one refresh per debounce interval while the burst lasts, plus the last one
    # (and one for a refresh that finds the lock taken), whatever the number of results.
    assert 1 <= refreshes <= burst_s / load_settings().cohort_debounce_s + 3, (refreshes, burst_s)


def test_definition_change_is_recomputed(client, r, cohort):
    for i, copies in enumerate([40, 8, 2]):  # MMR, MR4, MR4.5 at month 3
        pid = f"{cohort}-{i}"
        register(client, pid, [cohort])
        client.post("/v1/assay-results", json=[res(pid, 0, 40), res(pid, 3, copies)])
    doc = wait_cohort(client, r, cohort)
    assert doc["definition"]["endpoint"] == "MR4.5" and doc["outcomes"]["endpoint"] == 1
    put = client.put(f"/v1/cohorts/{cohort}", json={"endpoint": "MR4", "description": "MR4 by month 3"})
    assert put.status_code == 201 and put.get_json()["outcome"] == "created"
    doc = wait_cohort(client, r, cohort)
    assert doc["definition"]["endpoint"] == "MR4" and doc["outcomes"]["endpoint"] == 2
    assert doc["definition"]["description"] == "MR4 by month 3"
    bad = client.put(f"/v1/cohorts/{cohort}", json={"endpoint": "MR3.5"})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["pointer"] == "/endpoint"


def test_leaving_a_cohort_and_not_evaluable_patients(client, r, cohort):
    register(client, f"{cohort}-a", [cohort])
    register(client, f"{cohort}-b", [cohort])
    register(client, f"{cohort}-none", [cohort])  # no result since enrolment
    client.post("/v1/assay-results", json=[res(f"{cohort}-a", 1, 40), res(f"{cohort}-b", 2, 2)])
    doc = wait_cohort(client, r, cohort)
    assert doc["n"] == 3 and doc["n_evaluable"] == 2
    assert doc["not_evaluable"] == {"count": 1, "patients": [f"{cohort}-none"]}
    register(client, f"{cohort}-b", ["elsewhere"])
    doc = wait_cohort(client, r, cohort)
    assert doc["n"] == 2 and doc["n_evaluable"] == 1 and doc["outcomes"]["endpoint"] == 0


def test_events_and_cut_off_through_the_api(client, r, cohort):
    """Competing and censoring events as posted, and a definition that changes their roles and adds a
    data cut-off: each patient's time and status follow the written rules (README, Cohort statistics)."""
    a, b, c, d, e = (f"{cohort}-{x}" for x in "abcde")
    for pid in (a, b, c, d, e):
        register(client, pid, [cohort])
    results = [res(pid, 0, 40) for pid in (a, b, c, d)]
    results += [res(a, 6, 2), res(b, 6, 2), res(c, 4, 40), res(d, 9, 40), res(e, 10, 40)]
    assert client.post("/v1/assay-results", json=results).status_code == 202
    events = {b: ("progression", 3), c: ("lost_to_follow_up", 2)}
    for pid, (kind, months) in events.items():
        resp = client.post(f"/v1/patients/{pid}/events", json={"type": kind, "date": day(months)})
        assert resp.status_code == 202

    def days(months: float) -> float:
        return float((date.fromisoformat(day(months)) - ENROLLED).days)

    horizons = "2.5,5,7"
    defaults = {
        "endpoint": "MR4.5",
        "competing_events": ["progression"],
        "censoring_events": ["lost_to_follow_up"],
    }
    cases = [
        # progression competes (b at 3), lost_to_follow_up censors (c at 2), d and e at their last assay.
        (defaults, [6, 3, 2, 9, 10], [1, 2, 0, 0, 0], []),
        # progression now censors b at 3; d is censored at the cut-off (its last assay is after it);
        # e's only result comes after the cut-off: not evaluable.
        (
            {**defaults, "competing_events": [], "censoring_events": ["progression", "lost_to_follow_up"],
             "data_cutoff": day(8)},
            [6, 3, 2, 8], [1, 0, 0, 0], [e],
        ),
    ]  # fmt: skip
    for definition, times, statuses, not_evaluable in cases:
        assert client.put(f"/v1/cohorts/{cohort}", json=definition).status_code in (200, 201)
        doc = wait_cohort(client, r, cohort)
        assert doc["definition"]["data_cutoff"] == definition.get("data_cutoff")
        t, s = np.array([days(m) for m in times]), np.array(statuses)
        assert doc["n"] == 5 and doc["n_evaluable"] == len(t)
        assert doc["not_evaluable"]["patients"] == not_evaluable
        counts = {"endpoint": int((s == 1).sum()), "competing": int((s == 2).sum())}
        assert doc["outcomes"] == {**counts, "censored": int((s == 0).sum())}
        assert doc["last_follow_up_days"] == t.max()
        got = client.get(f"/v1/cohorts/{cohort}/statistics?horizons={horizons}").get_json()
        months = np.array([float(h) for h in horizons.split(",")]) * DAYS_PER_MONTH
        aj = stats.cumulative_incidence(t, s, months).at_horizons.as_dict()
        km = stats.one_minus_km(t, s == 1, months).as_dict()
        assert got["aalen_johansen"]["estimate"] == aj["estimate"]
        assert got["aalen_johansen"]["n_at_risk"] == aj["n_at_risk"]
        assert got["one_minus_km"]["estimate"] == km["estimate"]
