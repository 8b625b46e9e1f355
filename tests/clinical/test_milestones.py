"""ELN 2020 milestones (clinical-rules.md s.2) and the window rule (+-1 month, closest, ties later)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.clinical.milestones import assess_milestones, current_assessment, failures_after_12m
from shared.clinical.scored import score_results
from tests.clinical.helpers import START, day, result, undetectable

MONTH = 30.4375
# Milestone day offsets from TKI start, nearest whole day to months x 30.4375.
DAY_3M, DAY_6M, DAY_12M = 91, 183, 365
EPS = Decimal("0.0000001")


def _assess(results: list[dict[str, Any]], assessed_offset: int) -> dict[str, dict[str, Any]]:
    scored, _ = score_results(results)
    out = assess_milestones(START, scored, START + timedelta(days=assessed_offset))
    return {m["milestone"]: m for m in out}


def _above(bound: str) -> float:
    return float(Decimal(bound) + EPS)


def _below(bound: str) -> float:
    return float(Decimal(bound) - EPS)


def test_four_milestones_in_order_with_due_dates() -> None:
    scored, _ = score_results([])
    out = assess_milestones(START, scored, START + timedelta(days=1000))
    assert [m["milestone"] for m in out] == ["3m", "6m", "12m", "after_12m"]
    assert out[0]["due_on"] == day(round(3 * MONTH))
    assert out[1]["due_on"] == day(round(6 * MONTH))
    assert out[2]["due_on"] == day(round(12 * MONTH))


# ---- thresholds: (milestone, result day, value, expected) ----

THRESHOLD_CASES = [
    ("3m", DAY_3M, _below("10"), "optimal"),
    ("3m", DAY_3M, 10.0, "optimal"),
    ("3m", DAY_3M, _above("10"), "warning"),
    ("6m", DAY_6M, 1.0, "optimal"),
    ("6m", DAY_6M, _above("1"), "warning"),
    ("6m", DAY_6M, _below("1"), "optimal"),
    ("6m", DAY_6M, 10.0, "warning"),
    ("6m", DAY_6M, _above("10"), "failure"),
    ("12m", DAY_12M, 0.1, "optimal"),
    ("12m", DAY_12M, _below("0.1"), "optimal"),
    ("12m", DAY_12M, _above("0.1"), "warning"),
    ("12m", DAY_12M, 1.0, "warning"),
    ("12m", DAY_12M, _above("1"), "failure"),
    ("after_12m", 400, 0.1, "optimal"),
    ("after_12m", 400, _below("0.1"), "optimal"),
    ("after_12m", 400, _above("0.1"), "warning"),
    ("after_12m", 400, 1.0, "warning"),
    ("after_12m", 400, _above("1"), "failure"),
]


@pytest.mark.parametrize(("milestone", "offset", "value", "expected"), THRESHOLD_CASES)
def test_milestone_thresholds(milestone: str, offset: int, value: float, expected: str) -> None:
    m = _assess([result("r", offset, is_percent=value)], assessed_offset=2000)[milestone]
    assert m["assessment"] == expected
    assert m["result_id"] == "r"
    assert m["is_percent"] == pytest.approx(value)
    assert "ELN 2020" in m["reason"]


def test_milestone_uses_exact_arithmetic() -> None:
    # 10,000 copies in 110,000 ABL1 at CF 1.1 is exactly 10% (a naive float product gives 10.000000000000002):
    # optimal at 3 months.
    r = result("r", DAY_3M, bcr_abl1_copies=10_000, control_copies=110_000, conversion_factor=1.1)
    assert 10_000 / 110_000 * 100 * 1.1 > 10
    assert _assess([r], 2000)["3m"]["assessment"] == "optimal"


# ---- 3-month confirmation of > 10% (ELN 2020) ----


@pytest.mark.parametrize(
    ("gap", "expected"),
    [(30, "warning"), (31, "failure"), (60, "failure"), (91, "failure"), (92, "warning")],
)
def test_three_month_failure_needs_confirmation_1_to_3_months_later(gap: int, expected: str) -> None:
    # 1 month = 30.4375 days, 3 months = 91.3125 days: day gaps 31..91 confirm.
    results = [result("a", DAY_3M, is_percent=15.0), result("b", DAY_3M + gap, is_percent=12.0)]
    assert _assess(results, 2000)["3m"]["assessment"] == expected


def test_three_month_confirmation_must_itself_exceed_ten() -> None:
    results = [result("a", DAY_3M, is_percent=15.0), result("b", DAY_3M + 45, is_percent=10.0)]
    assert _assess(results, 2000)["3m"]["assessment"] == "warning"


# ---- window rule ----


@pytest.mark.parametrize(
    ("offset", "in_window"),
    [(60, False), (61, True), (121, True), (122, False)],  # 91.3125 +- 30.4375 = [60.875, 121.75]
)
def test_three_month_window_edges(offset: int, in_window: bool) -> None:
    m = _assess([result("r", offset, is_percent=5.0)], 2000)["3m"]
    assert (m["result_id"] == "r") is in_window
    assert m["assessment"] == ("optimal" if in_window else "no_result_in_window")


@pytest.mark.parametrize(
    ("offset", "in_window"),
    [(334, False), (335, True), (395, True), (396, False)],  # 365.25 +- 30.4375 = [334.8125, 395.6875]
)
def test_twelve_month_window_edges(offset: int, in_window: bool) -> None:
    m = _assess([result("r", offset, is_percent=0.05)], 2000)["12m"]
    assert (m["result_id"] == "r") is in_window


def test_closest_result_wins() -> None:
    # Day 80 is 11.3125 days from 3 months, day 100 is 8.6875: day 100 counts.
    results = [result("early", 80, is_percent=20.0), result("late", 100, is_percent=5.0)]
    m = _assess(results, 2000)["3m"]
    assert m["result_id"] == "late" and m["assessment"] == "optimal"
    results = [result("early", 85, is_percent=20.0), result("late", 100, is_percent=5.0)]
    assert _assess(results, 2000)["3m"]["result_id"] == "early"  # 6.3125 < 8.6875


def test_tie_goes_to_the_later_result() -> None:
    morning = result("z-first", DAY_6M, is_percent=5.0, collected_at=day(DAY_6M) + "T08:00:00")
    evening = result("a-second", DAY_6M, is_percent=0.5, collected_at=day(DAY_6M) + "T18:00:00")
    for order in ([morning, evening], [evening, morning]):
        m = _assess(order, 2000)["6m"]
        assert m["result_id"] == "a-second" and m["assessment"] == "optimal"


def test_tie_on_same_timestamp_broken_by_result_id() -> None:
    results = [result("b", DAY_6M, is_percent=0.5), result("a", DAY_6M, is_percent=5.0)]
    assert _assess(results, 2000)["6m"]["result_id"] == "b"


@pytest.mark.parametrize(
    ("copies", "expected", "no_failure"),
    [(1_000, "optimal", None), (999, "not_assessable", True), (100, "not_assessable", True),
     (99, "not_assessable", False), (50, "not_assessable", False)],
)  # fmt: skip
def test_undetectable_decides_only_what_its_sensitivity_proves(
    copies: int, expected: str, no_failure: bool | None
) -> None:
    # Undetectable in 1,000 ABL1 shows IS <= 0.1%: 12-month optimal. In 500 it shows only IS <= 0.2%: not a
    # failure (> 1%), but optimal or warning cannot be told; in 50 (IS <= 2%) not even that. Never a failure:
    # that needs a measured IS% above 1%.
    m = _assess([undetectable("u", DAY_12M, control_copies=copies)], 2000)["12m"]
    assert m["assessment"] == expected and m["result_id"] == "u"
    assert m["is_percent"] == pytest.approx(100 / copies)
    if expected == "not_assessable":
        assert "repeat" in m["reason"] and ("not > 1% (no failure)" in m["reason"]) is no_failure


def test_the_closest_result_counts_even_when_it_cannot_decide() -> None:
    # 2% eight days before the milestone, then undetectable at IS <= 0.2% on the day: the newer result rules
    # out the failure the older one would give, so the milestone cannot be assessed (never "failure").
    older = result("older", DAY_12M - 20, is_percent=2.0)
    closer = undetectable("small", DAY_12M + 3, control_copies=500)
    m = _assess([older, closer], 2000)["12m"]
    assert m["result_id"] == "small" and m["assessment"] == "not_assessable"
    assert "no failure" in m["reason"]


def test_undetectable_small_sample_is_never_a_failure() -> None:
    # ELN 2020 failure needs IS > 10% (6 months) or > 1% (any time after): a measured value, not a bound.
    ms = _assess(
        [undetectable("m6", DAY_6M, control_copies=5), undetectable("m20", 600, control_copies=50)], 2000
    )
    assert ms["6m"]["assessment"] == "not_assessable"
    assert ms["after_12m"]["assessment"] == "not_assessable"
    scored, _ = score_results([undetectable("m20", 600, control_copies=50)])
    assert failures_after_12m(START, scored) == []
    measured, _ = score_results([result("m20", 600, is_percent=1.01)])
    assert [r.result_id for r in failures_after_12m(START, measured)] == ["m20"]


def test_after_12m_never_reaches_back_past_the_latest_result() -> None:
    # 2% at month 13, then years of small undetectable samples (IS <= 0.2%): not a failure "now".
    results = [result("m13", 396, is_percent=2.0)]
    results += [undetectable(f"m{m}", round(m * MONTH), control_copies=500) for m in (24, 36, 48, 60)]
    scored, _ = score_results(results)
    ms = assess_milestones(START, scored, START + timedelta(days=round(60 * MONTH)))
    after = {m["milestone"]: m for m in ms}["after_12m"]
    assert after["result_id"] == "m60" and after["assessment"] == "not_assessable"
    assert current_assessment(ms)["assessment"] == "not_assessable"  # not the older "failure"


def test_current_assessment_does_not_fall_back_past_an_unassessable_time_point() -> None:
    results = [result("m12", DAY_12M, is_percent=0.05), undetectable("m18", 548, control_copies=900)]
    scored, _ = score_results(results)
    ms = assess_milestones(START, scored, START + timedelta(days=548))
    assert {m["milestone"]: m for m in ms}["12m"]["assessment"] == "optimal"
    assert current_assessment(ms)["milestone"] == "after_12m"
    assert current_assessment(ms)["assessment"] == "not_assessable"


def test_small_undetectable_sample_cannot_confirm_a_three_month_failure() -> None:
    results = [result("m3", DAY_3M, is_percent=20.0), undetectable("m5", DAY_3M + 45, control_copies=5)]
    assert _assess(results, 2000)["3m"]["assessment"] == "warning"


# ---- not yet due / no result / after 12 months ----


def test_not_yet_due_while_window_open() -> None:
    ms = _assess([], assessed_offset=DAY_3M + 30)  # window closes after day 121.75
    assert ms["3m"]["assessment"] == "not_yet_due"
    assert ms["6m"]["assessment"] == "not_yet_due"
    assert ms["after_12m"]["assessment"] == "not_yet_due"


def test_no_result_once_window_closed() -> None:
    ms = _assess([], assessed_offset=122)
    assert ms["3m"]["assessment"] == "no_result_in_window"
    assert ms["6m"]["assessment"] == "not_yet_due"


def test_open_window_with_result_is_assessed() -> None:
    m = _assess([result("r", 80, is_percent=5.0)], assessed_offset=80)["3m"]
    assert m["assessment"] == "optimal" and m["window_closed"] is False


def test_after_12m_uses_latest_result_after_365_25_days() -> None:
    results = [
        result("at12", 365, is_percent=5.0),  # not after 12 months (365 < 365.25)
        result("mid", 500, is_percent=2.0),
        result("last", 700, is_percent=0.05),
    ]
    m = _assess(results, 2000)["after_12m"]
    assert m["result_id"] == "last" and m["assessment"] == "optimal"
    only_day_365 = _assess([result("at12", 365, is_percent=5.0)], 2000)["after_12m"]
    assert only_day_365["assessment"] == "no_result_in_window"
    assert _assess([result("d366", 366, is_percent=5.0)], 2000)["after_12m"]["result_id"] == "d366"


def test_current_assessment_is_most_recent_assessed_milestone() -> None:
    results = [result("a", DAY_6M, is_percent=20.0), result("b", DAY_12M, is_percent=0.05)]
    scored, _ = score_results(results)
    ms = assess_milestones(START, scored, START + timedelta(days=DAY_12M))
    assert [m["assessment"] for m in ms[:3]] == ["no_result_in_window", "failure", "optimal"]
    current = current_assessment(ms)
    assert current is not None and current["milestone"] == "12m" and current["assessment"] == "optimal"


def test_current_assessment_is_the_latest_milestone_come_due() -> None:
    # Optimal at 3 months, then nothing: at day 200 the 6-month window is still open (3m is current);
    # at day 230 it has closed without a result, and that is the current time point.
    results = [result("m3", DAY_3M, is_percent=5.0)]
    scored, _ = score_results(results)
    open_window = assess_milestones(START, scored, START + timedelta(days=200))
    assert current_assessment(open_window)["milestone"] == "3m"
    closed = assess_milestones(START, scored, START + timedelta(days=230))
    assert current_assessment(closed)["milestone"] == "6m"
    assert current_assessment(closed)["assessment"] == "no_result_in_window"
    assert current_assessment(assess_milestones(START, [], START + timedelta(days=30))) is None


def test_after_12_months_without_a_result_is_not_yet_the_current_time_point() -> None:
    # 12-month optimal on day 350; on day 370 nothing has come after 12 months: 12m stands.
    results = [result("m3", DAY_3M, is_percent=5.0), result("m12", 350, is_percent=0.05)]
    scored, _ = score_results(results)
    current = current_assessment(assess_milestones(START, scored, START + timedelta(days=370)))
    assert current["milestone"] == "12m" and current["assessment"] == "optimal"
    later = current_assessment(assess_milestones(START, scored, START + timedelta(days=900)))
    assert later["milestone"] == "12m"  # still the latest time point with a result
