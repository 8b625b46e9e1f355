"""Our figures against tests/stats/data/*.extra.json (tests/stats/data/reference_extra.R): many
horizons (including exact event times, 0 and the last time), the KM variance, the median and its
CI, cmprsk's whole cinc curve, survdiff's df and p, and edge cohorts reference.R cannot handle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.stats import cumulative_incidence, gray_test, logrank, median_time, one_minus_km

from .refdata import TOL_CI, TOL_EST, assert_close, columns, extra_pairs, load_cohort, load_json

PAIRS = extra_pairs()
IDS = [js.name for _, js in PAIRS]


def test_extra_references_present() -> None:
    names = {js.name for _, js in PAIRS}
    assert {"heavy_ties.extra.json", "edge_no_events.extra.json", "two_groups.extra.json"} <= names


@pytest.mark.parametrize(("csv_path", "json_path"), PAIRS, ids=IDS)
def test_km_variance_ci_and_median(csv_path: Path, json_path: Path) -> None:
    cohort, ref = load_cohort(csv_path), load_json(json_path)
    for g in cohort.groups:
        t, status, _ = columns(cohort.subset(g))
        ours = one_minus_km(t, status == 1, ref["horizons_days"])
        rk = ref[g]["one_minus_km"]
        assert_close(ours.estimate, rk["estimate"], TOL_EST, f"{g} 1-KM estimate")
        assert_close(ours.variance, rk["variance"], TOL_EST, f"{g} 1-KM variance")
        assert_close(ours.lower, rk["lower"], TOL_CI, f"{g} 1-KM lower")
        assert_close(ours.upper, rk["upper"], TOL_CI, f"{g} 1-KM upper")
        assert ours.n_at_risk == rk["n_at_risk"]
        med = median_time(t, status == 1)
        rm = ref[g]["median"]
        assert_close([med.median, med.lower, med.upper], [rm["median"], rm["lower"], rm["upper"]], 0.0, g)


@pytest.mark.parametrize(("csv_path", "json_path"), PAIRS, ids=IDS)
def test_cuminc_at_horizons_and_whole_curve(csv_path: Path, json_path: Path) -> None:
    cohort, ref = load_cohort(csv_path), load_json(json_path)
    for g in cohort.groups:
        t, status, _ = columns(cohort.subset(g))
        ours = cumulative_incidence(t, status, ref["horizons_days"])
        r = ref[g]
        if "aalen_johansen" not in r:
            # No cause-1 event (cuminc has no "1 1" curve, or stops): F is 0 up to the last time.
            beyond = np.asarray(ref["horizons_days"]) > t.max()
            assert ours.at_horizons.estimate == [None if b else 0.0 for b in beyond]
            assert ours.curve.time_days == []
            continue
        ra, h = r["aalen_johansen"], ours.at_horizons
        assert_close(h.estimate, ra["estimate"], TOL_EST, f"{g} AJ estimate")
        assert_close(h.variance, ra["variance"], TOL_EST, f"{g} AJ variance")
        assert_close(h.lower, ra["lower"], TOL_CI, f"{g} AJ lower")
        assert_close(h.upper, ra["upper"], TOL_CI, f"{g} AJ upper")
        # cinc's x is (0, t1, t1, t2, t2, ..., last time); est and var jump at the second of each pair.
        x, est, var = (np.asarray(r["cinc"][k], dtype=float) for k in ("time", "est", "var"))
        assert_close(ours.curve.time_days, list(x[1:-1:2]), 0.0, f"{g} curve times")
        assert_close(ours.curve.estimate, list(est[2::2]), TOL_EST, f"{g} curve estimate")
        assert_close(ours.curve.variance, list(var[2::2]), TOL_EST, f"{g} curve variance")
        assert ours.curve.last_time_days == x[-1]


TEST_PAIRS = [(c, j) for c, j in PAIRS if "tests" in load_json(j)]


@pytest.mark.parametrize(("csv_path", "json_path"), TEST_PAIRS, ids=[j.name for _, j in TEST_PAIRS])
def test_logrank_df_and_gray(csv_path: Path, json_path: Path) -> None:
    cohort, ref = load_cohort(csv_path), load_json(json_path)["tests"]
    t, status, group = columns(cohort.frame)
    lr = logrank(t, status == 1, group)
    if ref["logrank_df"] < 1:  # survdiff: chisq 0 "on -1 df", p NaN; here: not testable
        assert (lr.statistic, lr.p_value, lr.df) == (None, None, 0)
    else:
        assert lr.df == ref["logrank_df"]
        assert lr.statistic == pytest.approx(ref["logrank_chisq"], abs=TOL_CI)
        assert lr.p_value == pytest.approx(ref["logrank_p"], abs=TOL_CI)
    gt = gray_test(t, status, group)
    if "gray_stat" in ref:
        assert gt.df == ref["gray_df"]
        assert gt.statistic == pytest.approx(ref["gray_stat"], abs=TOL_CI)
        assert gt.p_value == pytest.approx(ref["gray_p"], abs=TOL_CI)
    else:  # cuminc stops or has no test row without a cause-1 event
        assert gt.statistic is None and gt.p_value is None
