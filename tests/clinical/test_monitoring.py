"""When the next sample is due (ELN 2020 monitoring frequency), and durations on therapy that run to the
last date documenting the patient on it.

Sources: clinical-rules.md s.10 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984: on TKI every 3 months
until MMR, then every 3 to 6 months; after stopping, monthly during the first 6 months, every 2 months from
month 7 to 12, then every 3 months), s.8 (time on a drug counts to the last result or therapy event, never
to an event documenting absence), s.4 (TFR durations), s.5 (ACTIM: 2 years = 730.5 days at a stable dose),
s.6 (months = days / 30.4375: 1 month -> 30 whole days, 2 -> 60, 3 -> 91, 6 -> 182).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clinical.status import patient_status
from tests.clinical.helpers import day, event, registration, result, undetectable

STOP = 2000
IN_MR4 = [result(f"d{d}", d, is_percent=0.005) for d in (1000, 1300, 1600, 1900)]
TFR_STOP = [event("stop", "tki_stopped", STOP, reason="treatment_free_remission")]


def _status(results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return patient_status(registration(**reg), results, events or [])


# ---- on TKI: every 3 months until MMR, every 3-6 months in MMR (the service: due by 6) ----


@pytest.mark.parametrize(
    ("latest", "schedule", "months", "days"),
    [
        (result("x", 400, is_percent=0.1001), "on_tki_until_mmr", 3, 91),
        (result("x", 400, is_percent=0.1), "on_tki_in_mmr", 6, 182),
        (result("x", 400, is_percent=0.005), "on_tki_in_mmr", 6, 182),
        (undetectable("x", 400, control_copies=50_000), "on_tki_in_mmr", 6, 182),
        (result("x", 400, is_percent=12.0), "on_tki_until_mmr", 3, 91),
    ],
)
def test_next_sample_on_tki(latest: dict, schedule: str, months: int, days: int) -> None:
    s = _status([latest])
    assert s["next_sample_due"] == day(400 + days)
    assert s["monitoring"]["schedule"] == schedule and s["monitoring"]["interval_months"] == months
    assert "ELN 2020" in s["monitoring"]["source"]


def test_next_sample_on_tki_without_result_counts_from_the_start() -> None:
    s = _status([])
    assert s["next_sample_due"] == day(91) and s["monitoring"]["schedule"] == "on_tki_until_mmr"


def test_no_next_sample_without_result_or_start() -> None:
    assert _status([], tki_started_on=None)["next_sample_due"] is None


def test_a_lost_mmr_on_tki_goes_back_to_3_months() -> None:
    s = _status([result("a", 365, is_percent=0.05), result("b", 500, is_percent=0.3)])
    assert s["monitoring"]["schedule"] == "on_tki_until_mmr" and s["next_sample_due"] == day(591)


# ---- after stopping a TKI: monthly to month 6, every 2 months to month 12, then every 3 months ----


def test_next_sample_after_a_stop_without_sample_since() -> None:
    s = _status(IN_MR4, TFR_STOP)
    assert s["monitoring"]["schedule"] == "after_tki_stop"
    assert s["next_sample_due"] == day(STOP + 30)


@pytest.mark.parametrize(
    ("since_stop", "interval", "days"),
    [
        (30, 1, 30),
        (182, 1, 30),  # 5.98 months: in the first 6 months
        (183, 2, 60),  # 6.01 months: month 7
        (365, 2, 60),  # 11.99 months
        (366, 3, 91),  # 12.02 months
        (1000, 3, 91),
    ],
)
def test_tfr_schedule_boundaries_at_6_and_12_months(since_stop: int, interval: int, days: int) -> None:
    s = _status([*IN_MR4, result("t", STOP + since_stop, is_percent=0.005)], TFR_STOP)
    assert s["monitoring"]["interval_months"] == interval
    assert s["next_sample_due"] == day(STOP + since_stop + days)


def test_after_a_restart_the_on_tki_schedule_applies() -> None:
    events = [*TFR_STOP, event("r", "tki_changed", STOP + 70, tki="imatinib", dose_mg=400)]
    s = _status([*IN_MR4, result("loss", STOP + 60, is_percent=0.5)], events)
    assert s["monitoring"]["schedule"] == "on_tki_until_mmr"
    assert s["next_sample_due"] == day(STOP + 60 + 91)


@pytest.mark.parametrize("kind", ["death", "lost_to_follow_up"])
def test_no_sample_due_when_not_followed(kind: str) -> None:
    s = _status(IN_MR4, [event("x", kind, 1950)])
    assert s["next_sample_due"] is None and s["monitoring"]["schedule"] is None


def test_lost_to_follow_up_then_a_result_is_followed_again() -> None:
    s = _status([*IN_MR4, result("back", 2100, is_percent=0.005)], [event("x", "lost_to_follow_up", 1950)])
    assert s["next_sample_due"] == day(2100 + 182)


def test_lost_to_follow_up_and_a_result_on_the_same_day_is_not_followed() -> None:
    s = _status(IN_MR4, [event("x", "lost_to_follow_up", 1900)])
    assert s["next_sample_due"] is None


# ---- TFR TKI duration runs to the last result or therapy event, never to death or loss (s.8) ----


def _tki_duration(
    results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any
) -> dict:
    return _status(results, events, **reg)["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]


@pytest.mark.parametrize(("last", "met"), [(1826, False), (1827, True)])
def test_tfr_duration_runs_to_the_last_result(last: int, met: bool) -> None:
    """ELN 2020: imatinib > 5 years = 1826.25 days."""
    assert _tki_duration([result("a", last, is_percent=0.005)])["met"] is met


@pytest.mark.parametrize("kind", ["death", "lost_to_follow_up"])
def test_tfr_duration_not_extended_by_an_event_documenting_absence(kind: str) -> None:
    s = _status([result("a", 1826, is_percent=0.005)], [event("x", kind, 2500)])
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is False
    assert s["documented_on"] == day(1826) and s["assessed_on"] == day(2500)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("add_on_started", {}),
        ("add_on_stopped", {}),
        ("tki_changed", {"dose_mg": 300, "reason": "intolerance"}),
    ],
)
def test_tfr_duration_extended_by_a_later_therapy_event(kind: str, extra: dict) -> None:
    s = _status([result("a", 1800, is_percent=0.005)], [event("t", kind, 1827, **extra)])
    assert s["documented_on"] == day(1827)
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is True


@pytest.mark.parametrize(("stop", "met"), [(1826, False), (1827, True)])
def test_tfr_duration_after_a_stop_runs_to_the_stop(stop: int, met: bool) -> None:
    """A TFR under way: the TKI duration is the time up to the stop, whatever follows."""
    results = [result("a", 1800, is_percent=0.005), result("b", 2500, is_percent=0.005)]
    assert _tki_duration(results, [event("s", "tki_stopped", stop)])["met"] is met


@pytest.mark.parametrize(("last", "met"), [(1461, False), (1462, True)])
def test_tfr_duration_second_generation_after_a_switch(last: int, met: bool) -> None:
    """ELN 2020: > 4 years for a second-generation TKI (1461 days), counted from the first TKI start."""
    events = [event("c", "tki_changed", 200, tki="Tasigna", reason="intolerance")]
    assert _tki_duration([result("a", last, is_percent=0.005)], events)["met"] is met


@pytest.mark.parametrize("kind", ["death", "lost_to_follow_up"])
def test_an_event_documenting_absence_never_extends_the_duration_even_alone(kind: str) -> None:
    s = _status([], [event("x", kind, 2500)])
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is not True


def test_deep_response_duration_runs_between_results_not_to_a_later_event() -> None:
    """ELN 2020 "MR4 lasting > 2 years" (730.5 days): from the run's first result to its last."""
    results = [result("a", 1000, is_percent=0.005), result("b", 1730, is_percent=0.005)]
    s = _status(results, [event("t", "add_on_started", 1900)])
    assert s["tfr_eligibility"]["minimal"]["criteria"]["dmr_over_2_years"]["met"] is False
    s = _status([*results, result("c", 1731, is_percent=0.005)])
    assert s["tfr_eligibility"]["minimal"]["criteria"]["dmr_over_2_years"]["met"] is True


# ---- ACTIM: 2 years (730.5 days) at a stable imatinib dose (s.5), counted as s.8 says ----


def _actim_stable(
    results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any
) -> dict:
    return _status(results, events, **reg)["actim_eligible"]["criteria"]["imatinib_2_years_stable_dose"]


@pytest.mark.parametrize(("days_after", "met"), [(730, False), (731, True)])
def test_actim_counts_from_the_last_dose_change(days_after: int, met: bool) -> None:
    events = [event("d", "tki_changed", 100, dose_mg=300, reason="intolerance")]
    assert _actim_stable([result("a", 100 + days_after, is_percent=0.05)], events)["met"] is met


@pytest.mark.parametrize(("days_after", "met"), [(730, False), (731, True)])
def test_actim_counts_from_a_restart(days_after: int, met: bool) -> None:
    events = [event("s", "tki_stopped", 100), event("r", "tki_changed", 130, tki="Glivec")]
    assert _actim_stable([result("a", 130 + days_after, is_percent=0.05)], events)["met"] is met


@pytest.mark.parametrize("switch_day", [1, 300, 830])
@pytest.mark.parametrize(
    ("registered", "switched_to"), [("Glivec", "Imatinib Teva"), ("imatinib", "Gleevec")]
)
def test_actim_not_reset_by_a_brand_generic_switch(
    switch_day: int, registered: str, switched_to: str
) -> None:
    """s.7-8: a switch between a brand and its generic is no change of dose history."""
    events = [event("p", "tki_changed", switch_day, tki=switched_to, reason="other")]
    stable = _actim_stable([result("a", 831, is_percent=0.05)], events, tki=registered)
    assert stable["met"] is True and day(0) in stable["detail"]


def test_actim_reset_by_a_change_to_another_drug_and_back() -> None:
    events = [
        event("n", "tki_changed", 100, tki="nilotinib", reason="intolerance"),
        event("i", "tki_changed", 200, tki="imatinib", reason="intolerance"),
    ]
    assert _actim_stable([result("a", 930, is_percent=0.05)], events)["met"] is False
    assert _actim_stable([result("a", 931, is_percent=0.05)], events)["met"] is True


def test_actim_stable_time_not_extended_by_lost_to_follow_up() -> None:
    s = _actim_stable([result("a", 730, is_percent=0.05)], [event("x", "lost_to_follow_up", 900)])
    assert s["met"] is False


def test_actim_stable_time_extended_by_a_therapy_event() -> None:
    s = _actim_stable([result("a", 700, is_percent=0.05)], [event("x", "add_on_started", 731)])
    assert s["met"] is True


def test_a_sample_before_the_tki_start_documents_no_therapy() -> None:
    """s.8: a diagnostic sample before the TKI start never makes a duration negative, and the next
    sample is due 3 months after the start, not after the diagnostic sample."""
    s = patient_status(registration(), [result("dx", -20, is_percent=40.0)], [])
    assert s["documented_on"] == day(0)
    assert "-" not in s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["detail"].split("days")[0]
    assert s["next_sample_due"] == day(91)
