"""Our figures against R's (survival 3.5, cmprsk 2.2-11) for every reference cohort, as made by
tests/reference/reference.R: tests/reference/*.csv and tests/stats/data/*.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.stats import cumulative_incidence, gray_test, logrank, one_minus_km

from .refdata import (
    DAYS_PER_MONTH,
    TOL_CI,
    TOL_EST,
    assert_close,
    columns,
    load_cohort,
    load_json,
    reference_pairs,
)

PAIRS = reference_pairs()
IDS = [js.name for _, js in PAIRS]


def test_every_reference_cohort_is_checked() -> None:
    names = {js.stem for _, js in PAIRS}
    assert {"small", "random500", "two_groups", "heavy_ties"} <= names


@pytest.mark.parametrize(("csv_path", "json_path"), PAIRS, ids=IDS)
def test_one_minus_km_matches_survfit(csv_path: Path, json_path: Path) -> None:
    cohort, ref = load_cohort(csv_path), load_json(json_path)
    for g in cohort.groups:
        r = ref[g]
        t, status, _ = columns(cohort.subset(g))
        ours = one_minus_km(t, status == 1, np.asarray(r["horizons_months"]) * DAYS_PER_MONTH)
        rk = r["one_minus_km"]
        assert_close(ours.estimate, rk["estimate"], TOL_EST, f"{g} 1-KM estimate")
        assert_close(ours.lower, rk["lower"], TOL_CI, f"{g} 1-KM lower")
        assert_close(ours.upper, rk["upper"], TOL_CI, f"{g} 1-KM upper")
        assert ours.n_at_risk == rk["n_at_risk"], f"{g} n at risk"


@pytest.mark.parametrize(("csv_path", "json_path"), PAIRS, ids=IDS)
def test_cumulative_incidence_matches_cuminc(csv_path: Path, json_path: Path) -> None:
    cohort, ref = load_cohort(csv_path), load_json(json_path)
    for g in cohort.groups:
        r = ref[g]
        t, status, _ = columns(cohort.subset(g))
        ours = cumulative_incidence(t, status, np.asarray(r["horizons_months"]) * DAYS_PER_MONTH).at_horizons
        ra = r["aalen_johansen"]
        assert_close(ours.estimate, ra["estimate"], TOL_EST, f"{g} AJ estimate")
        assert_close(ours.variance, ra["variance"], TOL_EST, f"{g} AJ variance")
        assert_close(ours.lower, ra["lower"], TOL_CI, f"{g} AJ lower")
        assert_close(ours.upper, ra["upper"], TOL_CI, f"{g} AJ upper")


TEST_PAIRS = [(c, j) for c, j in PAIRS if "tests" in load_json(j)]


@pytest.mark.parametrize(("csv_path", "json_path"), TEST_PAIRS, ids=[j.name for _, j in TEST_PAIRS])
def test_logrank_and_gray_match_r(csv_path: Path, json_path: Path) -> None:
    cohort, ref = load_cohort(csv_path), load_json(json_path)["tests"]
    t, status, group = columns(cohort.frame)
    lr = logrank(t, status == 1, group)
    gt = gray_test(t, status, group)
    assert lr.statistic == pytest.approx(ref["logrank_chisq"], abs=TOL_CI)
    assert lr.p_value == pytest.approx(ref["logrank_p"], abs=TOL_CI)
    assert gt.statistic == pytest.approx(ref["gray_stat"], abs=TOL_CI)
    assert gt.p_value == pytest.approx(ref["gray_p"], abs=TOL_CI)
    assert lr.df == gt.df == cohort.frame["group"].nunique() - 1
