"""Cohort statistics through the API, against a real Redis and worker, matched to R's figures."""

from __future__ import annotations

import io
import json
import re
import uuid

import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared import cohorts, plots, stats
from tests.cohort_loader import load_cohort, read_csv, wait_cohort
from tests.procs import ROOT

REF = ROOT / "tests" / "reference"


def assert_close(actual, expected, tol, what):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if e is None:
            assert a is None, f"{what}[{i}]: expected null, got {a}"
        else:
            assert a is not None and abs(a - e) <= tol, f"{what}[{i}]: {a} != {e}"


def assert_matches_r(doc: dict, ref: dict) -> None:
    assert doc["n"] == ref["n"] and doc["n_evaluable"] == ref["n"]
    assert doc["horizons_months"] == [float(h) for h in ref["horizons_months"]]
    km, aj = doc["one_minus_km"], doc["aalen_johansen"]
    for name, tol in (("estimate", 1e-9), ("lower", 1e-6), ("upper", 1e-6)):
        assert_close(km[name], ref["one_minus_km"][name], tol, f"1-KM {name}")
    assert km["n_at_risk"] == ref["one_minus_km"]["n_at_risk"]
    for name, tol in (("estimate", 1e-9), ("variance", 1e-9), ("lower", 1e-6), ("upper", 1e-6)):
        assert_close(aj[name], ref["aalen_johansen"][name], tol, f"AJ {name}")
    assert aj["n_at_risk"] == ref["one_minus_km"]["n_at_risk"]  # the same risk set for both estimators


@pytest.fixture(scope="module")
def loaded(app, worker, redis_url):
    """Every reference CSV loaded through the API: one cohort per group and one for __all__."""
    import redis

    client, r = app.test_client(), redis.Redis.from_url(redis_url)
    run = uuid.uuid4().hex[:6]
    names = {}
    for name in ("small", "random500", "two_groups"):
        rows = read_csv(REF / f"{name}.csv")
        base = f"{name}-{run}"
        load_cohort(client, rows, base, lambda row, base=base: [f"{base}-all", f"{base}-{row['group']}"])
        names[name] = base
    for base in names.values():
        wait_cohort(client, r, f"{base}-all", timeout=120)
    return client, r, names


def library_figures(rows: list[dict]) -> tuple[dict, dict]:
    """1 - KM at the default horizons and the median, by the library on the CSV's own times."""
    t = np.array([row["time_days"] for row in rows], dtype=float)
    event = np.array([row["status"] == 1 for row in rows])
    horizons = np.array(cohorts.DEFAULT_HORIZONS_MONTHS) * cohorts.DAYS_PER_MONTH
    return stats.one_minus_km(t, event, horizons).as_dict(), stats.median_time(t, event).as_dict()


@pytest.mark.parametrize("name", ["small", "random500", "two_groups"])
def test_reference_cohorts_match_r_through_the_api(loaded, name):
    client, r, names = loaded
    ref = json.loads((REF / f"{name}.json").read_text())
    rows = read_csv(REF / f"{name}.csv")
    for group, expected in ref.items():
        if group == "tests":
            continue
        cohort_id = f"{names[name]}-{'all' if group == '__all__' else group}"
        doc = wait_cohort(client, r, cohort_id)
        assert_matches_r(doc, expected)
        # What R's file does not hold: the Greenwood variance, the median, the current levels.
        members = [row for row in rows if group in ("__all__", row["group"])]
        km, median = library_figures(members)
        assert_close(doc["one_minus_km"]["variance"], km["variance"], 1e-12, "1-KM variance")
        assert doc["median_time_to_endpoint"]["median_days"] == median["median"]
        for bound in ("lower", "upper"):
            assert doc["median_time_to_endpoint"][f"{bound}_days"] == median[bound]
        reached = sum(row["status"] == 1 for row in members)
        assert doc["counts_by_level"]["MR4.5"] == reached
        assert doc["counts_by_level"]["MMR"] == len(members) - reached


def test_gray_and_logrank_match_r_through_compare(loaded):
    client, _, names = loaded
    ref = json.loads((REF / "two_groups.json").read_text())["tests"]
    base = names["two_groups"]
    resp = client.get(f"/v1/cohorts/compare?a={base}-A&b={base}-B")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert abs(doc["logrank"]["statistic"] - ref["logrank_chisq"]) <= 1e-6
    assert abs(doc["logrank"]["p_value"] - ref["logrank_p"]) <= 1e-6
    assert abs(doc["gray"]["statistic"] - ref["gray_stat"]) <= 1e-6
    assert abs(doc["gray"]["p_value"] - ref["gray_p"]) <= 1e-6
    assert doc["overlap"] == 0 and doc["warnings"] == []
    a_ref = json.loads((REF / "two_groups.json").read_text())["A"]
    assert_close(doc["a"]["aalen_johansen"]["estimate"], a_ref["aalen_johansen"]["estimate"], 1e-9, "AJ a")


def test_custom_horizons_and_null_beyond_follow_up(loaded):
    client, _, names = loaded
    cohort_id = f"{names['small']}-all"
    doc = client.get(f"/v1/cohorts/{cohort_id}/statistics?horizons=1,12,600").get_json()
    rows = read_csv(REF / "small.csv")
    t = np.array([row["time_days"] for row in rows], dtype=float)
    s = np.array([row["status"] for row in rows])
    expected = stats.cumulative_incidence(t, s, np.array([1, 12, 600]) * cohorts.DAYS_PER_MONTH).at_horizons
    assert doc["horizons_months"] == [1.0, 12.0, 600.0]
    assert_close(doc["aalen_johansen"]["estimate"], expected.estimate, 1e-12, "AJ at custom horizons")
    assert doc["aalen_johansen"]["estimate"][2] is None  # beyond the last follow-up: null, not carried
    assert doc["one_minus_km"]["estimate"][2] is None
    bad = client.get(f"/v1/cohorts/{cohort_id}/statistics?horizons=abc")
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "horizons"


def test_curve_json_png_svg(loaded):
    client, _, names = loaded
    cohort_id = f"{names['small']}-all"
    curve = client.get(f"/v1/cohorts/{cohort_id}/curve").get_json()
    assert curve["time_days"] == sorted(curve["time_days"]) and curve["time_days"]
    assert len(curve["aalen_johansen"]["estimate"]) == len(curve["time_days"])
    assert curve["one_minus_km"]["estimate"][-1] >= curve["aalen_johansen"]["estimate"][-1]
    png = client.get(f"/v1/cohorts/{cohort_id}/curve", headers={"Accept": "image/png"})
    assert png.mimetype == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = (plt.imread(io.BytesIO(png.data))[..., :3] * 255).round().astype(int).reshape(-1, 3)
    for _, colour in plots.STYLES.values():  # both estimators drawn
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        assert (np.abs(pixels - rgb).sum(axis=1) <= 6).sum() > 100, colour
    svg = client.get(f"/v1/cohorts/{cohort_id}/curve", headers={"Accept": "image/svg+xml"})
    assert svg.mimetype == "image/svg+xml" and b"<svg" in svg.data[:2000]
    text = svg.get_data(as_text=True)
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", text)
    for label, colour in plots.STYLES.values():
        assert label in labels and colour in text
    assert text.count(f"fill-opacity: {plots.CI_ALPHA}") == 2  # a CI band for each estimator
    # Numbers at risk under the axis, at each x tick (months), from the reference times.
    times = np.array([row["time_days"] for row in read_csv(REF / "small.csv")], dtype=float)
    ticks = [float(t) for t in labels[: labels.index("Months from enrolment")]]
    at_risk = labels[labels.index("At risk") - len(ticks) : labels.index("At risk")]
    assert at_risk == [str(int((times >= t * cohorts.DAYS_PER_MONTH).sum())) for t in ticks]
    assert at_risk[0] == "10"


def test_cohort_list_and_unknown(loaded):
    client, _, names = loaded
    listed = {c["cohort_id"]: c for c in client.get("/v1/cohorts").get_json()["cohorts"]}
    entry = listed[f"{names['small']}-all"]
    assert entry["n"] == 10 and entry["computed_at"] and entry["definition"]["endpoint"] == "MR4.5"
    assert client.get("/v1/cohorts/nope-none/statistics").status_code == 404
    assert client.get("/v1/cohorts/compare?a=nope-none&b=x").status_code == 404
    assert client.get("/v1/cohorts/compare?a=x").status_code == 422
