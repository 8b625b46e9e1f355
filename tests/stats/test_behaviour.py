"""Determinism, lifelines comparisons, edge cases, input checks and the ACTIM paper figure."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict

import numpy as np
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test

from shared.stats import (
    DAYS_PER_MONTH,
    cumulative_incidence,
    gray_test,
    logrank,
    median_time,
    one_minus_km,
)

from .data.make_cohorts import actim_months
from .refdata import DATA_DIR, TOL_EST, assert_close, columns, load_cohort, load_json

HORIZONS = np.array([3, 6, 12, 24, 48]) * DAYS_PER_MONTH


@pytest.fixture(scope="module")
def heavy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return columns(load_cohort(DATA_DIR / "heavy_ties.csv").frame)


# --- determinism -------------------------------------------------------------------------------


def test_two_calls_are_bitwise_identical(heavy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    t, status, group = heavy
    for f in (
        lambda: cumulative_incidence(t, status, HORIZONS).as_dict(),
        lambda: one_minus_km(t, status == 1, HORIZONS).as_dict(),
        lambda: gray_test(t, status, group).as_dict(),
        lambda: logrank(t, status == 1, group).as_dict(),
        lambda: median_time(t, status == 1).as_dict(),
    ):
        # json.dumps(float) is repr, the shortest string that round-trips: equal strings, equal bits.
        assert json.dumps(f()) == json.dumps(f())


def test_row_order_does_not_matter(heavy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    t, status, group = heavy
    perm = np.random.default_rng(7).permutation(t.size)
    a = cumulative_incidence(t, status, HORIZONS).at_horizons
    b = cumulative_incidence(t[perm], status[perm], HORIZONS).at_horizons
    assert a == b
    assert gray_test(t, status, group).statistic == pytest.approx(
        gray_test(t[perm], status[perm], group[perm]).statistic, abs=1e-9
    )


# --- lifelines ----------------------------------------------------------------------------------


def _lifelines_aj_at(t: np.ndarray, status: np.ndarray, seed: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifelines warns that it jitters the tied times
        aj = AalenJohansenFitter(seed=seed).fit(t, status, event_of_interest=1)
    cd = aj.cumulative_density_
    idx = np.searchsorted(cd.index.to_numpy(), HORIZONS, side="right") - 1
    return cd.iloc[idx, 0].to_numpy()


def test_heavy_ties_lifelines_aj_is_off_but_ours_matches_r(
    heavy: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    t, status, _ = heavy
    r = load_json(DATA_DIR / "heavy_ties.json")["__all__"]["aalen_johansen"]["estimate"]
    ours = cumulative_incidence(t, status, HORIZONS).at_horizons.estimate
    assert_close(ours, r, TOL_EST, "AJ estimate")
    # lifelines breaks ties at random: off by ~1e-4, and differently for each seed.
    ll0, ll1 = _lifelines_aj_at(t, status, seed=0), _lifelines_aj_at(t, status, seed=1)
    assert np.max(np.abs(ll0 - np.asarray(r))) > 1e-5
    assert np.max(np.abs(ll0 - ll1)) > 1e-6


def test_km_and_logrank_agree_with_lifelines(heavy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    t, status, group = heavy
    event = status == 1
    km = KaplanMeierFitter().fit(t, event)  # exact; its default CI is log(-log), Greenwood
    ours = one_minus_km(t, event, HORIZONS)
    assert_close(ours.estimate, list(1 - km.survival_function_at_times(HORIZONS).to_numpy()), 1e-12, "km")
    a, b, two = group == "A", group == "B", group != "C"
    lr = logrank_test(t[a], t[b], event[a], event[b])
    assert logrank(t[two], event[two], group[two]).statistic == pytest.approx(lr.test_statistic, abs=1e-9)


# --- edge cases ---------------------------------------------------------------------------------


def test_no_events_all_censored() -> None:
    t, status = np.array([30.0, 120, 400]), np.zeros(3, dtype=int)
    km = one_minus_km(t, status == 1, [10, 100, 400, 500])
    assert km.estimate == [0.0, 0.0, 0.0, None]
    assert km.n_at_risk == [3, 2, 1, 0]
    ci = cumulative_incidence(t, status, [10, 100, 400, 500])
    assert ci.at_horizons.estimate == [0.0, 0.0, 0.0, None]
    assert ci.at_horizons.variance == [0.0, 0.0, 0.0, None]
    assert ci.at_horizons.lower == [None] * 4  # log(-log) CI undefined at F = 0, as in R
    assert ci.curve.time_days == [] and ci.curve.last_time_days == 400.0
    assert median_time(t, status == 1).as_dict() == {"median": None, "lower": None, "upper": None}
    g = np.array(["A", "A", "B"])
    assert logrank(t, status == 1, g).statistic is None
    assert gray_test(t, status, g).p_value is None


def test_only_competing_events_give_zero_incidence() -> None:
    t, status = np.array([50.0, 100, 150, 600]), np.array([2, 2, 0, 0])
    ci = cumulative_incidence(t, status, [60, 600, 601]).at_horizons
    assert ci.estimate == [0.0, 0.0, None]
    assert cumulative_incidence(t, status, [60], cause=2).at_horizons.estimate == [0.25]


def test_all_events_on_one_day() -> None:
    t, status = np.full(5, 60.0), np.array([1, 1, 1, 1, 1])
    km = one_minus_km(t, status == 1, [59, 60, 61])
    assert km.estimate == [0.0, 1.0, None]
    assert km.variance == [0.0, None, None]  # R: std.err NaN once S = 0
    assert km.lower == [0.0, None, None]
    ci = cumulative_incidence(t, status, [59, 60, 61])
    assert ci.at_horizons.estimate == [0.0, 1.0, None]
    assert ci.curve.time_days == [60.0] and ci.curve.n_at_risk == [5]


def test_single_patient() -> None:
    ci = cumulative_incidence([50.0], [1], [49, 50, 51]).at_horizons
    assert ci.estimate == [0.0, 1.0, None]
    assert ci.variance == [0.0, 1.0, None]  # cmprsk's cinc gives var 1 here (R: same)
    km = one_minus_km([500.0], [0], [100, 500, 501])
    assert km.estimate == [0.0, 0.0, None] and km.n_at_risk == [1, 1, 0]


def test_arm_without_competing_events_has_aj_equal_to_one_minus_km() -> None:
    frame = load_cohort(DATA_DIR / "edge_no_competing_arm.csv").subset("B")
    t, status, _ = columns(frame)
    assert not np.any(status == 2)
    h = np.array([25.0, 100, 300, 800, 900])
    ci = cumulative_incidence(t, status, h).at_horizons.estimate
    km = one_minus_km(t, status == 1, h).estimate
    assert_close(ci, km, 1e-15, "AJ vs 1-KM")


def test_empty_cohort() -> None:
    km = one_minus_km(np.array([]), np.array([]), [30])
    assert (km.estimate, km.n_at_risk) == ([None], [0])
    ci = cumulative_incidence(np.array([]), np.array([]), [30])
    assert ci.at_horizons.estimate == [None] and ci.curve.last_time_days is None
    assert median_time(np.array([]), np.array([])).median is None


def test_one_group_is_not_testable() -> None:
    t, status = np.array([10.0, 20, 30]), np.array([1, 2, 0])
    assert gray_test(t, status, ["A"] * 3).statistic is None
    assert logrank(t, status == 1, ["A"] * 3).statistic is None


# --- inputs and outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_days", "status"),
    [([-1.0, 2.0], [1, 0]), ([np.nan, 2.0], [1, 0]), ([1.0, 2.0], [1]), ([[1.0, 2.0]], [[1, 0]])],
)
def test_bad_inputs_are_refused(time_days: list, status: list) -> None:
    with pytest.raises(ValueError):
        cumulative_incidence(time_days, status, [1.0])


def test_status_codes_are_not_taken_for_an_event_flag() -> None:
    with pytest.raises(ValueError, match="0/1"):
        one_minus_km([1.0, 2.0], [1, 2], [1.0])


def test_results_are_plain_json(heavy: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    t, status, group = heavy

    def plain(x: object) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or type(x) in (float, int, str, bool)

    for res in (
        cumulative_incidence(t, status, HORIZONS),
        one_minus_km(t, status == 1, HORIZONS),
        gray_test(t, status, group),
        logrank(t, status == 1, group),
        median_time(t, status == 1),
    ):
        assert plain(asdict(res))
        json.dumps(res.as_dict(), allow_nan=False)


def test_competing_cause_can_be_any_nonzero_code() -> None:
    t = np.array([10.0, 20, 30, 40, 50, 60])
    a = cumulative_incidence(t, [1, 2, 1, 3, 0, 1], [45, 60]).at_horizons
    b = cumulative_incidence(t, [1, 2, 1, 2, 0, 1], [45, 60]).at_horizons
    assert a == b


# --- the ACTIM paper check -----------------------------------------------------------------------


def test_actim_one_minus_km_at_12_months_is_56_percent_ci_37_to_76() -> None:
    months, status = actim_months()
    assert len(months) == 24 and sum(status) == 13 and months.count(13) == 10
    days = np.array([round(m * DAYS_PER_MONTH) for m in months], dtype=float)
    res = one_minus_km(days, np.array(status), [12 * DAYS_PER_MONTH])
    assert [round(100 * v) for v in (res.estimate[0], res.lower[0], res.upper[0])] == [56, 37, 76]
    assert res.estimate[0] == pytest.approx(1 - 10 / 17 * 18 / 24, abs=1e-15)  # 19/34
    assert res.n_at_risk == [10]
