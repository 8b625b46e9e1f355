"""The cohort definitions (shared/cohorts.py): who is evaluable, event times, competing events,
censoring, cut-off. Pure functions; each case derives its expectation from the written rule."""

from __future__ import annotations

from shared.cohorts import (
    CENSORED,
    COMPETING,
    DEFAULT_DEFINITION,
    ENDPOINT,
    at_risk_on,
    at_risk_table,
    cohort_data,
    compare,
    curve,
    follow_up_record,
    outcome,
)

REG = {"patient_id": "P", "cohorts": ["C"], "enrolled_on": "2024-01-01"}


def res(rid: str, when: str, copies: float, control: float = 100000) -> dict:
    return {"result_id": rid, "patient_id": "P", "collected_at": when, "control_gene": "ABL1",
            "control_copies": control, "bcr_abl1_copies": copies, "status": "final"}  # fmt: skip


def ev(kind: str, when: str) -> dict:
    return {"type": kind, "date": when}


def out(results, events=(), reg=REG, **defn):
    return outcome(follow_up_record(reg, results, list(events)), {**DEFAULT_DEFINITION, **defn})


def test_event_time_is_first_result_at_endpoint_or_deeper():
    results = [res("a", "2024-01-01", 50), res("b", "2024-03-01", 1), res("c", "2024-05-01", 3.2)]
    # 1 copy = 0.001% = MR5: deeper than MR4.5 counts; 31 days Jan + 29 Feb = 60 days.
    assert out(results) == (60.0, ENDPOINT)
    assert out(results, endpoint="MR5") == (60.0, ENDPOINT)
    assert out(results, endpoint="MMR") == (0.0, ENDPOINT)


def test_exactly_the_threshold_reaches_mr4_5():
    assert out([res("a", "2024-01-01", 50), res("b", "2024-01-11", 3.2)]) == (10.0, ENDPOINT)
    assert out([res("a", "2024-01-01", 50), res("b", "2024-01-11", 3.2001)])[1] == CENSORED


def test_results_before_enrolment_do_not_count():
    results = [res("pre", "2023-12-01", 1), res("a", "2024-02-01", 50)]
    assert out(results) == (31.0, CENSORED)


def test_censored_at_last_assay_since_enrolment():
    assert out([res("a", "2024-01-01", 50), res("b", "2024-04-10", 40)]) == (100.0, CENSORED)


def test_competing_event_before_endpoint_counts():
    results = [res("a", "2024-01-01", 50), res("b", "2024-06-01", 1)]
    assert out(results, [ev("tki_stopped", "2024-03-01")]) == (60.0, COMPETING)
    # After the endpoint it does not matter; on the same day the observed endpoint wins.
    assert out(results, [ev("death", "2024-07-01")]) == (152.0, ENDPOINT)
    assert out(results, [ev("death", "2024-06-01")]) == (152.0, ENDPOINT)


def test_competing_event_after_last_assay_still_counts():
    assert out([res("a", "2024-01-01", 50)], [ev("death", "2024-02-01")]) == (31.0, COMPETING)


def test_censoring_event_ends_follow_up_first():
    results = [res("a", "2024-01-01", 50), res("b", "2024-06-01", 1)]
    assert out(results, [ev("lost_to_follow_up", "2024-02-01")]) == (31.0, CENSORED)
    assert out(results, [ev("lost_to_follow_up", "2024-02-01"), ev("death", "2024-03-01")]) == (
        31.0,
        CENSORED,
    )


def test_definition_chooses_competing_and_censoring_events():
    results = [res("a", "2024-01-01", 50), res("b", "2024-03-01", 50)]
    events = [ev("progression", "2024-02-01")]
    assert out(results, events) == (31.0, COMPETING)
    assert out(results, events, competing_events=[], censoring_events=["progression"]) == (31.0, CENSORED)
    assert out(results, events, competing_events=[], censoring_events=[]) == (60.0, CENSORED)


def test_data_cutoff():
    results = [res("a", "2024-01-01", 50), res("b", "2024-06-01", 1)]
    assert out(results, data_cutoff="2024-03-01") == (60.0, CENSORED)
    assert out(results, data_cutoff="2024-06-01") == (152.0, ENDPOINT)
    assert out(results, [ev("death", "2024-04-01")], data_cutoff="2024-03-01") == (60.0, CENSORED)


def test_data_cutoff_before_any_follow_up_is_not_evaluable():
    results = [res("a", "2024-02-01", 50), res("b", "2024-06-01", 1)]
    # The first result since enrolment comes after the cut-off: nothing observed by then.
    assert out(results, data_cutoff="2024-01-31") is None
    assert out(results, data_cutoff="2024-02-01") == (31.0, CENSORED)
    # Enrolled after the cut-off: not followed at all by then (not a censoring at day 0).
    assert out(results, data_cutoff="2023-12-31") is None
    records = {"late": follow_up_record({**REG, "enrolled_on": "2024-05-01"}, results, [])}
    data = cohort_data(records, {**DEFAULT_DEFINITION, "data_cutoff": "2024-04-30"})
    assert data.not_evaluable == ["late"] and data.time_days.size == 0
    # A record kept before first_assay existed skips that check (until its recompute): never dropped.
    legacy = {k: v for k, v in follow_up_record(REG, results, []).items() if k != "first_assay"}
    assert outcome(legacy, {**DEFAULT_DEFINITION, "data_cutoff": "2024-06-01"}) == (152.0, ENDPOINT)
    assert outcome(legacy, {**DEFAULT_DEFINITION, "data_cutoff": "2024-01-31"}) == (30.0, CENSORED)


def test_not_evaluable_without_results_since_enrolment_or_enrolment():
    assert out([res("pre", "2023-12-01", 50)]) is None
    assert out([res("a", "2024-02-01", 50)], reg={**REG, "enrolled_on": None}) is None
    records = {
        "P1": follow_up_record(REG, [res("a", "2024-02-01", 50)], []),
        "P2": follow_up_record(REG, [], []),
    }
    data = cohort_data(records, DEFAULT_DEFINITION)
    assert data.patients == ["P1"] and data.not_evaluable == ["P2"]
    assert data.levels["MMR"] == 1 and data.levels["no_result"] == 1


def test_withdrawn_results_do_not_reach_the_endpoint():
    withdrawn = {**res("b", "2024-02-01", 1), "status": "entered-in-error"}
    assert out([res("a", "2024-01-01", 50), withdrawn]) == (0.0, CENSORED)


def test_undetectable_with_too_few_control_copies_is_not_mr4_5():
    # Undetectable in 20,000 ABL1 shows MR4 at best (Cross 2015): no MR4.5 endpoint.
    results = [res("a", "2024-01-01", 50), res("b", "2024-02-01", 0, control=20000)]
    assert out(results) == (31.0, CENSORED)
    assert out(results, endpoint="MR4") == (31.0, ENDPOINT)
    results[1] = res("b", "2024-02-01", 0, control=32000)
    assert out(results) == (31.0, ENDPOINT)


def test_compare_warns_where_the_tests_premises_fail():
    records = {p: follow_up_record(REG, [res("a", "2024-01-01", 50), res("b", d, 1)], []) for p, d in
               (("P1", "2024-02-01"), ("P2", "2024-03-01"), ("P3", "2024-04-01"))}  # fmt: skip
    a = cohort_data({k: records[k] for k in ("P1", "P2")}, DEFAULT_DEFINITION)
    b = cohort_data({k: records[k] for k in ("P2", "P3")}, DEFAULT_DEFINITION)
    c = cohort_data({"P3": records["P3"]}, DEFAULT_DEFINITION)
    assert compare(a, c, [1], ("MR4.5", "MR4.5"))["warnings"] == []
    both = compare(a, b, [1], ("MR4.5", "MR4"))
    assert both["overlap"] == 1 and len(both["warnings"]) == 2
    assert "different endpoints (MR4.5, MR4)" in both["warnings"][0] and "1 patients" in both["warnings"][1]


def test_numbers_at_risk_under_the_axis():
    """At each tick (every 3 months over two years of follow-up) the patients whose follow-up reaches it:
    the endpoint and censoring both end it; the curve document carries the row."""
    dates = {"P1": "2024-02-01", "P2": "2024-05-01", "P3": "2024-09-01"}  # ~1, 4 and 8 months
    records = {p: follow_up_record(REG, [res("a", "2024-01-01", 50), res("b", d, 1 if p != "P3" else 50)], [])
               for p, d in dates.items()}  # fmt: skip
    data = cohort_data(records, DEFAULT_DEFINITION)
    assert at_risk_table(data) == {"months": [0.0, 3.0, 6.0], "n_at_risk": [3, 2, 1]}
    assert curve(data)["at_risk"] == at_risk_table(data)
    assert at_risk_table(cohort_data({}, DEFAULT_DEFINITION)) == {"months": [], "n_at_risk": []}


def test_compared_numbers_at_risk_share_one_grid():
    """Two cohorts compared: one row of ticks for both (the coarser step, the longer follow-up's, to the
    longer follow-up), so the rows line up under the plot; beyond a cohort's last time, 0 at risk."""
    short = {
        p: follow_up_record(REG, [res("a", "2024-01-01", 50), res("b", d, 50)], [])
        for p, d in (("S1", "2024-02-01"), ("S2", "2024-09-01"))
    }  # ~1 and 8 months: step 3
    long = {
        p: follow_up_record(REG, [res("a", "2024-01-01", 50), res("b", d, 50)], [])
        for p, d in (("L1", "2024-08-01"), ("L2", "2026-07-15"))
    }  # ~7 and 30 months: step 6
    a, b = cohort_data(short, DEFAULT_DEFINITION), cohort_data(long, DEFAULT_DEFINITION)
    assert at_risk_table(a)["months"] == [0.0, 3.0, 6.0]  # alone, each cohort has its own step
    assert at_risk_table(b)["months"] == [0.0, 6.0, 12.0, 18.0, 24.0, 30.0]
    grid = {"months": [0.0, 6.0, 12.0, 18.0, 24.0, 30.0], "a": [2, 1, 0, 0, 0, 0], "b": [2, 2, 1, 1, 1, 1]}
    assert compare(a, b, [1], ("MR4.5", "MR4.5"))["at_risk"] == grid
    assert compare(b, a, [1], ("MR4.5", "MR4.5"))["at_risk"] == {**grid, "a": grid["b"], "b": grid["a"]}
    assert at_risk_on(a, [0.0, 3.0, 6.0]) == at_risk_table(a)["n_at_risk"]
    empty = cohort_data({}, DEFAULT_DEFINITION)
    assert compare(empty, empty, [1], ("MR4.5", "MR4.5"))["at_risk"] == {"months": [], "a": [], "b": []}
