"""Actions a clinician must not miss, loss of MMR's current state, and same-day discordant results.

Sources: clinical-rules.md s.10 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, TFR section: restart
within 4 weeks of a loss of MMR; 3-month > 10% confirmed within 1-3 months), s.9 (mutation analysis on
failure, considered on warning), s.1 and s.10 (Cross 2015, Leukemia 2015;29:999-1003, sample adequacy: a
repeat sample), s.3 (loss of MMR). Months = days / 30.4375 (s.6): 1 month = 30.4375 days, 3 months =
91.3125 days.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.clinical.status import patient_status
from tests.clinical.helpers import day, event, registration, result, undetectable

STOP = 2000
IN_MR4 = [result(f"d{d}", d, is_percent=0.005) for d in (1000, 1300, 1600, 1900)]
TFR_STOP = [event("stop", "tki_stopped", STOP, reason="treatment_free_remission")]


def _status(results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return patient_status(registration(**reg), results, events or [])


def _actions(s: dict, code: str) -> list[dict]:
    return [a for a in s["actions"] if a["code"] == code]


# ---- resume_tki (ELN 2020 TFR section: restart within 4 weeks of a loss of MMR) ----


@pytest.mark.parametrize(
    ("offset", "is_percent", "due"), [(1, 0.5, True), (60, 0.1001, True), (60, 0.1, False)]
)
def test_resume_tki_on_a_loss_of_mmr_off_tki(offset: int, is_percent: float, due: bool) -> None:
    """s.10: > 0.1% after the stop calls for a restart within 4 weeks (28 days) of that sample; exactly
    0.1% is still MMR (s.1, bounds inclusive)."""
    s = _status([*IN_MR4, result("loss", STOP + offset, is_percent=is_percent)], TFR_STOP)
    actions = _actions(s, "resume_tki")
    if not due:
        assert actions == []
        return
    [action] = actions
    assert action["since"] == day(STOP + offset)
    assert action["due_by"] == day(STOP + offset + 28)
    assert action["result_id"] == "loss"
    assert "ELN 2020" in action["source"] and "4 weeks" in action["source"]


def test_resume_tki_not_for_the_sample_of_the_stop_day() -> None:
    """therapy.on_tki_on: the stop day's sample was still taken on TKI."""
    s = _status([*IN_MR4, result("loss", STOP, is_percent=0.5)], TFR_STOP)
    assert _actions(s, "resume_tki") == []


def test_resume_tki_cites_the_first_loss_since_the_stop() -> None:
    results = [*IN_MR4, result("l1", STOP + 60, is_percent=0.2), result("l2", STOP + 90, is_percent=0.4)]
    [action] = _actions(_status(results, TFR_STOP), "resume_tki")
    assert action["result_id"] == "l1" and action["due_by"] == day(STOP + 88)


def test_resume_tki_closed_by_the_restart() -> None:
    events = [*TFR_STOP, event("restart", "tki_changed", STOP + 70, tki="imatinib", dose_mg=400)]
    s = _status([*IN_MR4, result("loss", STOP + 60, is_percent=0.5)], events)
    assert s["on_tki"] is True and _actions(s, "resume_tki") == []


def test_resume_tki_not_for_an_undetectable_result_of_poor_sensitivity() -> None:
    """s.1: undetectable in 500 ABL1 copies shows IS <= 0.2%, never a measured loss."""
    s = _status([*IN_MR4, undetectable("u", STOP + 30, control_copies=500)], TFR_STOP)
    assert _actions(s, "resume_tki") == []


@pytest.mark.parametrize("kind", ["death", "lost_to_follow_up"])
def test_no_action_once_the_patient_is_not_followed(kind: str) -> None:
    """actions.py: no action after a death, nor while lost to follow-up with nothing since."""
    results = [*IN_MR4, result("loss", STOP + 60, is_percent=0.5)]
    s = _status(results, [*TFR_STOP, event("x", kind, STOP + 70)])
    assert s["actions"] == []


def test_lost_to_follow_up_then_seen_again_is_followed() -> None:
    events = [*TFR_STOP, event("x", "lost_to_follow_up", STOP + 30)]
    s = _status([*IN_MR4, result("loss", STOP + 60, is_percent=0.5)], events)
    assert [a["code"] for a in s["actions"]] == ["resume_tki"]


# ---- repeat_sample (Cross 2015: a result too insensitive to decide a deep level or a milestone) ----


@pytest.mark.parametrize(
    ("latest", "repeat"),
    [
        (undetectable("u", 1950, control_copies=9_999), True),
        (undetectable("u", 1950, control_copies=10_000), False),
        (undetectable("u", 1950, control_gene="GUSB", control_copies=23_999), True),
        (undetectable("u", 1950, control_gene="GUSB", control_copies=24_000), False),
        (undetectable("u", 1950, control_gene="BCR", control_copies=500_000), True),
        # detectable in the MR4 range in an inadequate sample: capped at MMR (Cross 2015)
        (result("u", 1950, is_percent=0.005, control_copies=5_000), True),
        # detectable at 0.05% in the same small sample: the measurement decides MMR
        (result("u", 1950, is_percent=0.05, control_copies=5_000), False),
    ],
)
def test_repeat_sample_on_a_sensitivity_limited_latest_result(latest: dict, repeat: bool) -> None:
    """s.1 bands: MR4 needs >= 10,000 ABL1 / 24,000 GUSB; BCR has no bands."""
    actions = _actions(_status([*IN_MR4, latest]), "repeat_sample")
    assert len(actions) == int(repeat)
    if repeat:
        assert actions[0]["result_id"] == "u" and actions[0]["since"] == day(1950)
        assert "Cross 2015" in actions[0]["source"]


def test_repeat_sample_only_for_the_latest_result() -> None:
    results = [*IN_MR4[:2], undetectable("u", 1400, control_copies=500), *IN_MR4[2:]]
    assert _actions(_status(results), "repeat_sample") == []


# ---- confirm_3_month_result (ELN 2020: > 10% at 3 months is a failure only if confirmed in 1-3 months) ----


@pytest.mark.parametrize(("is_percent", "due"), [(10.0, False), (10.01, True)])
def test_confirm_3_month_result_above_10_percent(is_percent: float, due: bool) -> None:
    s = _status([result("m3", 91, is_percent=is_percent)])
    actions = _actions(s, "confirm_3_month_result")
    assert len(actions) == int(due)
    if due:
        assert actions[0]["result_id"] == "m3"
        assert actions[0]["due_by"] == day(91 + 91)  # 3 months = 91.3125 days: a sample on day +91 counts
        assert "1-3 months" in actions[0]["source"]


def test_confirm_3_month_due_from_is_the_first_day_a_sample_counts() -> None:
    [action] = _actions(_status([result("m3", 91, is_percent=20.0)]), "confirm_3_month_result")
    assert action["due_from"] == day(91 + 31)


@pytest.mark.parametrize(
    ("gap", "open_", "assessment"),
    [
        (10, True, "warning"),
        (30, True, "warning"),
        (31, False, "failure"),
        (91, False, "failure"),
        (92, False, "warning"),
    ],
)
def test_confirm_3_month_closed_by_a_sample_at_least_a_month_later(
    gap: int, open_: bool, assessment: str
) -> None:
    """ELN 2020: the confirming sample is taken 1-3 months (30.4375-91.3125 days) after the 3-month one."""
    s = _status([result("m3", 91, is_percent=20.0), result("c", 91 + gap, is_percent=30.0)])
    assert bool(_actions(s, "confirm_3_month_result")) is open_
    assert s["milestones"][0]["assessment"] == assessment


def test_confirm_3_month_not_for_a_result_outside_the_3_month_window() -> None:
    """The 3-month milestone is the result closest to 91.3125 days within +-30.4375 (milestones.py)."""
    s = _status([result("early", 60, is_percent=40.0)])
    assert _actions(s, "confirm_3_month_result") == []


# ---- mutation_analysis (ELN 2020: on failure, considered on warning; look-back 3 months) ----

WARNING_6M = [result("m3", 91, is_percent=8.0), result("m6", 183, is_percent=5.0)]
FAILURE_6M = [result("m3", 91, is_percent=8.0), result("m6", 183, is_percent=15.0)]


@pytest.mark.parametrize(("results", "priority"), [(WARNING_6M, "consider"), (FAILURE_6M, "recommended")])
def test_mutation_analysis_on_warning_or_failure(results: list, priority: str) -> None:
    s = _status(results)
    [action] = _actions(s, "mutation_analysis")
    assert action["priority"] == priority and action["since"] == day(183)
    assert "ELN 2020" in action["source"]


def test_no_mutation_analysis_when_optimal() -> None:
    s = _status([result("m3", 91, is_percent=8.0), result("m6", 183, is_percent=0.5)])
    assert s["eln_assessment"] == "optimal" and _actions(s, "mutation_analysis") == []


@pytest.mark.parametrize(("analysed_on", "done"), [(91, False), (92, True), (183, True), (250, True)])
def test_mutation_analysis_look_back_is_3_months(analysed_on: int, done: bool) -> None:
    """actions.py: an analysis from 3 months (91.3125 days) before the onset on counts: 183 - 92 = 91 days
    is within, 183 - 91 = 92 days is not."""
    s = _status(FAILURE_6M, [event("ma", "mutation_analysis", analysed_on)])
    assert bool(_actions(s, "mutation_analysis")) is not done


def test_no_mutation_analysis_when_the_failure_is_the_mutation() -> None:
    s = _status(IN_MR4, [event("m", "resistance_mutation", 1950, mutation="T315I")])
    assert s["eln_assessment"] == "failure" and _actions(s, "mutation_analysis") == []


@pytest.mark.parametrize(
    ("kind", "extra"), [("progression", {"phase": "blast"}), ("high_risk_aca", {"karyotype": "+8"})]
)
def test_mutation_analysis_recommended_on_progression_and_aca(kind: str, extra: dict) -> None:
    """s.9: mutation analysis is recommended on failure and progression."""
    [action] = _actions(_status(IN_MR4, [event("f", kind, 1950, **extra)]), "mutation_analysis")
    assert action["priority"] == "recommended" and action["since"] == day(1950)
    done = _status(IN_MR4, [event("f", kind, 1950, **extra), event("ma", "mutation_analysis", 1960)])
    assert _actions(done, "mutation_analysis") == []


def test_mutation_analysis_onset_is_the_start_of_a_persistent_warning() -> None:
    results = [
        result("r12", 365, is_percent=0.5),
        result("r18", 548, is_percent=0.5),
        result("r24", 730, is_percent=0.5),
    ]
    s = _status(results, [event("ma", "mutation_analysis", 370)])
    assert s["eln_assessment"] == "warning"
    assert _actions(s, "mutation_analysis") == []


# ---- same-day results that disagree on the level (README "Same-day results") ----


def test_same_day_results_of_one_level_are_not_flagged() -> None:
    results = [*IN_MR4, result("a", 1950, is_percent=0.05), result("b", 1950, is_percent=0.09)]
    s = _status(results)
    assert s["same_day_discordant"] == [] and _actions(s, "review_same_day_results") == []


def test_same_day_results_of_different_levels_are_flagged_with_the_one_used() -> None:
    results = [*IN_MR4, result("a", 1950, is_percent=0.05), result("b", 1950, is_percent=0.5)]
    s = _status(results)
    [flag] = s["same_day_discordant"]
    assert flag["date"] == day(1950) and flag["result_ids"] == ["a", "b"]
    assert flag["levels"] == ["MMR", "MR2"] and flag["used"] == "b"
    assert s["is_percent_result_id"] == "b" and s["response_level"] == "MR2"
    [action] = _actions(s, "review_same_day_results")
    assert action["result_ids"] == ["a", "b"] and "README" in action["source"]


def test_same_day_order_by_time_of_collection_then_id() -> None:
    results = [
        *IN_MR4,
        result("a", 1950, is_percent=0.5, collected_at=day(1950) + "T14:00:00Z"),
        result("b", 1950, is_percent=0.05, collected_at=day(1950) + "T08:00:00Z"),
    ]
    flag = _status(results)["same_day_discordant"][0]
    assert flag["result_ids"] == ["b", "a"] and flag["used"] == "a"


def test_an_earlier_discordant_day_is_listed_but_asks_no_review() -> None:
    results = [*IN_MR4, result("a", 1950, is_percent=0.05), result("b", 1950, is_percent=0.5)]
    s = _status([*results, result("c", 2050, is_percent=0.05)])
    assert [f["date"] for f in s["same_day_discordant"]] == [day(1950)]
    assert _actions(s, "review_same_day_results") == []


def test_same_day_flag_names_the_result_the_status_uses() -> None:
    results = [*IN_MR4, result("a", 1950, is_percent=0.005), undetectable("b", 1950, control_copies=5_000)]
    s = _status(results)
    assert s["same_day_discordant"][0]["used"] == s["is_percent_result_id"]


def test_readme_states_the_same_day_rule() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Same-day results" in readme


# ---- loss_of_mmr: ever_lost, current, regained_on (s.3) ----


def _loss(results: list[dict[str, Any]]) -> dict:
    return _status(results)["loss_of_mmr"]


def test_no_loss_without_mmr() -> None:
    loss = _loss([result("a", 180, is_percent=0.5), result("b", 365, is_percent=2.0)])
    assert loss["ever_lost"] is False and loss["current"] is False and loss["regained_on"] is None


@pytest.mark.parametrize(("value", "lost"), [(0.1, False), (0.1001, True)])
def test_loss_at_the_mmr_bound(value: float, lost: bool) -> None:
    loss = _loss([result("a", 365, is_percent=0.05), result("b", 500, is_percent=value)])
    assert loss["ever_lost"] is lost and loss["lost"] is lost and loss["current"] is lost
    assert loss["first_lost_on"] == (day(500) if lost else None)


def test_loss_then_regained() -> None:
    results = [
        result("a", 365, is_percent=0.05),
        result("b", 500, is_percent=0.3),
        result("c", 600, is_percent=0.08),
        result("d", 700, is_percent=0.02),
    ]
    loss = _loss(results)
    assert loss["ever_lost"] is True and loss["current"] is False and loss["regained_on"] == day(600)


def test_regained_then_lost_again_is_current() -> None:
    results = [
        result("a", 365, is_percent=0.05),
        result("b", 500, is_percent=0.3),
        result("c", 600, is_percent=0.08),
        result("d", 700, is_percent=0.2),
    ]
    loss = _loss(results)
    assert loss["current"] is True and loss["regained_on"] is None and loss["first_lost_on"] == day(500)


def test_regained_on_is_after_the_latest_loss() -> None:
    results = [
        result("a", 365, is_percent=0.05),
        result("b", 500, is_percent=0.3),
        result("c", 600, is_percent=0.08),
        result("d", 700, is_percent=0.2),
        undetectable("e", 800, control_copies=50_000),
    ]
    loss = _loss(results)
    assert loss["current"] is False and loss["regained_on"] == day(800)


@pytest.mark.parametrize(("copies", "regained"), [(500, False), (1_000, True)])
def test_an_undetectable_result_regains_mmr_only_if_its_sensitivity_tells(
    copies: int, regained: bool
) -> None:
    """s.1: undetectable in 500 ABL1 shows IS <= 0.2% (cannot tell MMR); in 1,000 IS <= 0.1% (MMR)."""
    results = [
        result("a", 365, is_percent=0.05),
        result("b", 500, is_percent=0.3),
        undetectable("c", 600, copies),
    ]
    loss = _loss(results)
    assert loss["current"] is not regained
    assert loss["regained_on"] == (day(600) if regained else None)


def test_is_percent_names_its_result() -> None:
    """Issue s.4: the status names the result its top-level is_percent comes from."""
    s = _status([result("a", 365, is_percent=0.05), result("b", 500, is_percent=0.3)])
    assert s["is_percent_result_id"] == "b" and s["is_percent"] == pytest.approx(0.3)
    assert s["response_level_on"] == day(500)


def test_is_percent_result_skips_a_small_sample_that_shows_no_change() -> None:
    """scored.level_setting: a sensitivity-limited result never shows a worsening, so the level (and its
    is_percent) stays with the last result that set it."""
    s = _status([result("a", 365, is_percent=0.005), undetectable("b", 500, control_copies=5_000)])
    assert s["latest_result"]["result_id"] == "b"
    assert s["is_percent_result_id"] == "a" and s["response_level"] == "MR4"


def test_no_result_no_is_percent_result() -> None:
    s = _status([])
    assert s["is_percent_result_id"] is None and s["is_percent"] is None
