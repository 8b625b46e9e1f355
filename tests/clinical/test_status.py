"""patient_status: exclusion of entered-in-error, determinism, loss of MMR, summary keys."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from shared.clinical.status import patient_status
from tests.clinical.helpers import PATIENT, day, event, registration, result, undetectable


def _history() -> list[dict[str, Any]]:
    return [
        result("r1", 90, is_percent=8.0),
        result("r2", 180, is_percent=0.5),
        result("r3", 365, is_percent=0.08),  # MMR
        result("r4", 540, is_percent=0.008),  # MR4
        undetectable("r5", 720, control_copies=40_000),  # MR4.5 band
        result("r6", 900, is_percent=0.02),  # back to MMR
    ]


def _status(results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return patient_status(registration(**reg), results, events or [])


# ---- basic document ----


def test_latest_and_best() -> None:
    s = _status(_history())
    assert s["patient_id"] == PATIENT
    assert s["results_count"] == 6 and s["results_withdrawn"] == 0
    assert s["response_level"] == "MMR" and s["is_percent"] == pytest.approx(0.02)
    assert s["latest_result"]["result_id"] == "r6"
    assert s["best_level"] == "MR4.5" and s["best_level_on"] == day(720)
    assert s["first_reached"] == {"MMR": day(365), "MR4": day(540), "MR4.5": day(720), "MR5": None}


def test_latest_result_fields() -> None:
    latest = _status(_history())["latest_result"]
    for key in (
        "result_id",
        "collected_at",
        "level",
        "is_percent",
        "mr_value",
        "detectable",
        "sensitivity_percent",
        "adequate",
        "reason",
    ):
        assert key in latest
    assert latest["detectable"] is True and latest["adequate"] is True


def test_first_reached_counts_deeper_levels() -> None:
    # A first result in MR5 means MMR, MR4 and MR4.5 were all first reached on that day too.
    s = _status([result("a", 100, is_percent=0.0005)])
    assert set(s["first_reached"].values()) == {day(100)}


def test_assessed_on_is_latest_result_or_event() -> None:
    assert _status(_history())["assessed_on"] == day(900)
    s = _status(_history(), [event("e1", "tki_changed", 1000, dose_mg=300)])
    assert s["assessed_on"] == day(1000)
    assert s["months_from_tki_start"] == pytest.approx(1000 / 30.4375)
    assert s["months_from_enrollment"] == pytest.approx(1000 / 30.4375)


def test_assessed_on_falls_back_to_registration_dates() -> None:
    s = _status([], enrolled_on=day(10), tki_started_on=day(3))
    assert s["assessed_on"] == day(10)
    assert s["results_count"] == 0 and s["response_level"] is None and s["latest_result"] is None
    assert s["months_from_enrollment"] == 0.0
    s = _status([], enrolled_on=None, tki_started_on=None)
    assert s["assessed_on"] is None and s["months_from_tki_start"] is None


def test_missing_tki_start_gives_no_milestones_with_reason() -> None:
    s = _status(_history(), tki_started_on=None)
    assert s["milestones"] == [] and "tki_started_on" in s["milestones_reason"]
    assert s["eln_assessment"] is None
    assert s["months_from_tki_start"] is None


def test_eln_assessment_is_most_recent_milestone() -> None:
    # 6 months > 10% is failure; by 12 months in MMR: ELN reports the current time point (optimal).
    results = [result("a", 183, is_percent=20.0), result("b", 365, is_percent=0.05)]
    s = _status(results)
    assert [m["assessment"] for m in s["milestones"]][1:3] == ["failure", "optimal"]
    assert s["eln_assessment"] == "optimal" and s["eln_assessment_milestone"] == "12m"


def test_events_sorted_and_on_tki() -> None:
    events = [
        event("e2", "tki_changed", 800, tki="imatinib", reason="restart after TFR"),
        event("e1", "tki_stopped", 600),
    ]
    s = _status(_history(), events)
    assert [(e["type"], e["date"]) for e in s["events"]] == [
        ("tki_stopped", day(600)),
        ("tki_changed", day(800)),
    ]
    assert s["on_tki"] is True
    stopped = _status(_history(), [event("e1", "tki_stopped", 600)])
    assert stopped["on_tki"] is False
    assert stopped["tfr_eligibility"]["tki_stopped"] == day(600)
    assert "under way" in stopped["tfr_eligibility"]["note"]


# ---- entered-in-error and corrections ----


def test_entered_in_error_excluded_everywhere() -> None:
    withdrawn = result("bad", 1200, is_percent=25.0, status="entered-in-error")
    s = _status([*_history(), withdrawn])
    assert s == {**_status(_history()), "results_withdrawn": 1}
    assert s["assessed_on"] == day(900)  # its date does not move the assessment date


def test_entered_in_error_deep_result_does_not_count_as_reached() -> None:
    deep = undetectable("bad", 400, control_copies=150_000, status="entered-in-error")
    s = _status([result("a", 300, is_percent=0.5), deep])
    assert s["first_reached"]["MR5"] is None and s["best_level"] == "MR2"


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_amended_and_corrected_results_count(status: str) -> None:
    s = _status([result("a", 300, is_percent=0.05, status=status)])
    assert s["results_count"] == 1 and s["response_level"] == "MMR"


def test_uses_the_version_it_is_given() -> None:
    original = result("a", 365, is_percent=0.5)
    amended = result("a", 365, is_percent=0.05, status="amended")
    assert _status([original])["milestones"][2]["assessment"] == "warning"
    assert _status([amended])["milestones"][2]["assessment"] == "optimal"


# ---- determinism ----


def test_idempotent_and_order_independent() -> None:
    results = _history()
    events = [event("e2", "tki_changed", 500, dose_mg=300), event("e1", "add_on_started", 500, note="pio")]
    first = _status(results, events)
    assert _status(results, events) == first
    rng = random.Random(7)
    for _ in range(5):
        shuffled_r, shuffled_e = results[:], events[:]
        rng.shuffle(shuffled_r)
        rng.shuffle(shuffled_e)
        assert _status(shuffled_r, shuffled_e) == first


def test_inputs_not_mutated() -> None:
    results, events = _history(), [event("e1", "tki_changed", 500, dose_mg=300)]
    before = json.dumps([results, events], sort_keys=True)
    _status(results, events)
    assert json.dumps([results, events], sort_keys=True) == before


def _json_types_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_types_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_types_only(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_output_is_json_ready() -> None:
    s = _status(_history(), [event("e1", "tki_stopped", 1000)])
    assert _json_types_only(s)
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_datetime_collected_at_uses_date_as_written() -> None:
    late = result("a", 365, is_percent=0.05, collected_at=day(365) + "T23:30:00-05:00")
    s = _status([late])
    assert s["assessed_on"] == day(365)
    assert s["latest_result"]["collected_at"] == day(365) + "T23:30:00-05:00"


# ---- loss of MMR (ELN 2020 single; ELN 2013 confirmed) ----


def _loss(values: list[float]) -> dict[str, Any]:
    results = [result(f"r{i:02d}", 400 + 90 * i, is_percent=v) for i, v in enumerate(values)]
    return _status(results)["loss_of_mmr"]


def test_no_loss_without_mmr_first() -> None:
    assert _loss([0.5, 2.0, 5.0])["lost"] is False


def test_exactly_0_1_after_mmr_is_not_a_loss() -> None:
    assert _loss([0.05, 0.1])["lost"] is False


def test_single_loss() -> None:
    loss = _loss([0.05, 0.1000001])
    assert loss["lost"] is True and loss["first_lost_on"] == day(490)
    assert loss["confirmed"] is False and loss["current"] is True


def test_loss_then_regained_is_not_current() -> None:
    loss = _loss([0.05, 0.2, 0.05])
    assert loss["lost"] is True and loss["current"] is False and loss["confirmed"] is False


def test_confirmed_loss_two_consecutive_one_at_least_one_percent() -> None:
    loss = _loss([0.05, 0.2, 1.0])
    assert loss["confirmed"] is True and loss["confirmed_on"] == day(580)
    assert loss["first_lost_on"] == day(490)


def test_two_consecutive_losses_both_below_one_percent_not_confirmed() -> None:
    assert _loss([0.05, 0.2, 0.9999999])["confirmed"] is False


def test_non_consecutive_losses_not_confirmed() -> None:
    assert _loss([0.05, 0.2, 0.05, 1.5])["confirmed"] is False


def test_undetectable_with_poor_sensitivity_is_not_a_loss() -> None:
    results = [result("a", 400, is_percent=0.05), undetectable("b", 500, control_copies=500)]
    loss = _status(results)["loss_of_mmr"]
    assert loss["lost"] is False and loss["current"] is False


# ---- never MR4+ from insufficient sensitivity, end to end ----


def test_undetectable_insufficient_never_reaches_mr4() -> None:
    s = _status([undetectable("a", 400, control_copies=9_999)])
    # Shows IS <= 0.010001%: MMR at best (Cross 2015), and that is what it proves: the current level.
    assert s["latest_result"]["level"] == "MMR" and s["latest_result"]["sensitivity_limited"] is True
    assert s["response_level"] == "MMR" and s["response_level_on"] == day(400)
    assert s["first_reached"]["MR4"] is None and s["first_reached"]["MMR"] == day(400)


@pytest.mark.parametrize(("copies", "level_from"), [(9_999, 400), (10_000, 500)])
def test_a_small_sample_never_shows_a_worsening(copies: int, level_from: int) -> None:
    # A patient in MR4 whose latest sample is undetectable in too few ABL1 copies is still in MR4 as far as
    # anything shows: the small sample is reported (latest_result), not taken as a fall to MMR.
    results = [result("a", 400, is_percent=0.005), undetectable("b", 500, control_copies=copies)]
    s = _status(results)
    assert s["latest_result"]["result_id"] == "b"
    assert s["response_level"] == "MR4" and s["response_level_on"] == day(level_from)


def test_a_small_sample_shows_an_improvement() -> None:
    # 0.5% (a loss of MMR), then undetectable in 5,000 ABL1: IS <= 0.02%, back in MMR, which it proves.
    results = [result("a", 100, is_percent=0.05), result("b", 200, is_percent=0.5)]
    small = undetectable("c", 300, control_copies=5_000)
    before, after = _status(results), _status([*results, small])
    assert before["response_level"] == "MR2" and before["loss_of_mmr"]["current"] is True
    assert after["response_level"] == "MMR" and after["response_level_on"] == day(300)
    assert after["loss_of_mmr"]["current"] is False and after["loss_of_mmr"]["lost"] is True
    assert after["actim_eligible"]["criteria"]["in_mmr"]["met"] is True
    assert after["eln_assessment"] == "optimal"  # the same sample decides "any time after 12 months"


def test_only_small_samples_show_what_they_prove() -> None:
    s = _status([undetectable(f"u{d}", d, control_copies=5_000) for d in (91, 183, 365, 730, 1095)])
    assert s["response_level"] == "MMR" and s["best_level"] == "MMR"
    assert s["actim_eligible"]["criteria"]["in_mmr"]["met"] is True
    assert s["actim_eligible"]["criteria"]["not_in_mr4_5"]["met"] is None  # cannot tell
    assert s["tfr_eligibility"]["minimal"]["criteria"]["dmr_over_2_years"]["met"] is False


def test_small_sample_after_a_loss_leaves_the_loss_current() -> None:
    results = [
        result("a", 100, is_percent=0.05),
        result("b", 200, is_percent=0.5),
        undetectable("c", 300, control_copies=50),
        result("d", 400, is_percent=2.0),
    ]
    loss = _status(results[:3])["loss_of_mmr"]
    assert loss["lost"] is True and loss["current"] is True and loss["confirmed"] is False
    s = _status(results)
    assert s["response_level"] == "MR1"
    # Consecutive over the results that show the response: b (0.5%) then d (2%) confirm the loss.
    assert s["loss_of_mmr"]["confirmed"] is True and s["loss_of_mmr"]["confirmed_on"] == day(400)
    assert _status([*results[:3], undetectable("e", 400)])["loss_of_mmr"]["current"] is False


@pytest.mark.parametrize("before", [0.008, 0.002, 0.0005])  # MR4, MR4.5, MR5
def test_a_measured_result_in_a_small_sample_cannot_place_a_deep_level(before: float) -> None:
    # 1 copy in 20,000 GUSB: IS 0.005%, capped at MMR (Cross 2015: the sample cannot assess MR4 or deeper,
    # one copy is all it saw). It neither lowers a deeper patient to MMR nor to MR4: the level stays, and
    # what a deeper patient or a shallower one gets from the same sample never depends on the order.
    deep = result("a", 400, is_percent=before)
    small = result("b", 500, bcr_abl1_copies=1, control_gene="GUSB", control_copies=20_000)
    s = _status([deep, small])
    assert s["latest_result"]["sensitivity_limited"] is True and s["latest_result"]["level"] == "MMR"
    assert s["response_level"] == _status([deep])["response_level"] and s["response_level_on"] == day(400)
    assert s["actim_eligible"]["criteria"]["not_in_mr4_5"]["met"] is None  # cannot assess MR4.5
    assert s["actim_eligible"]["criteria"]["in_mmr"]["met"] is True
    # After a shallower level it shows the improvement it can: MMR.
    assert _status([result("a", 400, is_percent=0.5), small])["response_level"] == "MMR"


def test_a_sample_that_cannot_tell_mmr_leaves_a_loss_as_it_was() -> None:
    base = [result("a", 100, is_percent=0.05), result("b", 200, is_percent=2.0)]
    unclear = undetectable("c", 300, control_copies=800)  # IS <= 0.125%: MMR or not, it cannot tell
    s = _status([*base, unclear, result("d", 400, is_percent=1.5)])
    assert s["loss_of_mmr"]["confirmed"] is True and s["loss_of_mmr"]["confirmed_on"] == day(400)
    s = _status([*base, undetectable("c", 300, control_copies=500)])
    assert s["response_level"] == "MR2"  # IS <= 0.2%: better than the 2% before, shown
    assert s["loss_of_mmr"]["current"] is True  # and still not shown to be back in MMR
    assert s["actim_eligible"]["criteria"]["in_mmr"]["met"] is None


def test_an_undetectable_result_that_proves_no_level_sets_none() -> None:
    s = _status([undetectable("a", 90, control_copies=5)])  # IS <= 20%
    assert s["latest_result"]["level"] == "NONE" and s["response_level"] is None


def test_same_day_results_in_the_order_of_their_instants() -> None:
    # 23:30 at +02:00 is 21:30 UTC: before 22:00 UTC, whatever the strings say.
    early = result("z-early", 400, is_percent=0.5, collected_at=day(400) + "T23:30:00+02:00")
    late = result("a-late", 400, is_percent=0.05, collected_at=day(400) + "T22:00:00Z")
    for order in ([early, late], [late, early]):
        s = _status(order)
        assert s["latest_result"]["result_id"] == "a-late" and s["response_level"] == "MMR"
    dated = result("m-date", 400, is_percent=5.0)  # a date only: before the timed results of its day
    assert _status([late, dated])["latest_result"]["result_id"] == "a-late"


def test_a_relapse_off_tki_is_a_loss_of_mmr_not_a_treatment_failure() -> None:
    # Six years in MR4.5, TKI stopped on day 2250 (treatment-free remission), 2% on day 2300.
    results = [result(f"d{d}", d, is_percent=0.002) for d in range(400, 2250, 180)]
    results.append(result("relapse", 2300, is_percent=2.0))
    stop = [event("e1", "tki_stopped", 2250)]
    s = _status(results, stop)
    assert s["on_tki"] is False and s["response_level"] == "MR1"
    assert s["loss_of_mmr"]["lost"] is True and s["loss_of_mmr"]["first_lost_on"] == day(2300)
    after = {m["milestone"]: m for m in s["milestones"]}["after_12m"]
    # The milestones judge therapy and leave the relapse out; the assessment now is ELN 2020's table
    # note: "loss of MMR indicates failure after TFR" (clinical-rules.md s.9).
    assert after["result_id"] != "relapse" and after["assessment"] == "optimal"
    assert s["eln_assessment"] == "failure" and s["eln_assessment_basis"]["kind"] == "tfr_loss_of_mmr"
    assert s["eln_assessment_basis"]["result_id"] == "relapse"
    assert s["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]["met"] is True
    # Restarted on day 2320: a result > 1% on TKI again is a failure once more.
    restarted = [*stop, event("e2", "tki_changed", 2320, tki="imatinib", dose_mg=400)]
    again = _status([*results, result("on", 2400, is_percent=2.0)], restarted)
    assert again["eln_assessment"] == "failure"
    assert again["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]["met"] is False
    # The restart day's own sample was taken before the TKI was back.
    same_day = _status([*results, result("r", 2320, is_percent=2.0)], restarted)
    assert {m["milestone"]: m for m in same_day["milestones"]}["after_12m"]["result_id"] != "r"
