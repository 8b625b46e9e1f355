"""ACTIM entry (clinical-rules.md s.5) and ELN 2020 TFR requirements (s.4), at and around every threshold.

Durations: 2 years = 730.5 days, 3 years = 1095.75, 4 years = 1461, 5 years = 1826.25
(months = days / 30.4375).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clinical.status import patient_status
from tests.clinical.helpers import event, registration, result, undetectable

TWO_YEARS_DAYS = 2 * 365.25
N = 3000  # day of the latest result = assessment date in most tests


def _status(results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return patient_status(registration(**reg), results, events or [])


def _actim(results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return _status(results, events, **reg)["actim_eligible"]


def _tfr(results: list[dict[str, Any]], events: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return _status(results, events, **reg)["tfr_eligibility"]


# ---- ACTIM ----


def test_actim_typical_candidate_eligible() -> None:
    a = _actim([result("a", N, is_percent=0.05)])
    assert a["eligible"] is True
    assert all(c["met"] is True for c in a["criteria"].values())
    assert set(a["criteria"]) == {"imatinib_2_years_stable_dose", "in_mmr", "not_in_mr4_5"}


@pytest.mark.parametrize(("days_on", "met"), [(730, False), (731, True)])
def test_actim_two_years_on_imatinib(days_on: int, met: bool) -> None:
    assert (days_on >= TWO_YEARS_DAYS) is met
    a = _actim([result("a", days_on, is_percent=0.05)])
    assert a["criteria"]["imatinib_2_years_stable_dose"]["met"] is met
    assert a["eligible"] is met


@pytest.mark.parametrize("kind", ["tki_changed", "tki_stopped"])
@pytest.mark.parametrize(("days_ago", "met"), [(730, False), (731, True)])
def test_actim_no_change_or_stop_within_two_years(kind: str, days_ago: int, met: bool) -> None:
    extra = {"dose_mg": 600} if kind == "tki_changed" else {}
    events = [event("e1", kind, N - days_ago, **extra)]
    if kind == "tki_stopped":
        # A short interruption, restarted the same day (events on one day are ordered by event_id).
        events.append(event("e2", "tki_changed", N - days_ago, tki="imatinib", dose_mg=400))
    a = _actim([result("a", N, is_percent=0.05)], events)
    assert a["criteria"]["imatinib_2_years_stable_dose"]["met"] is met


def test_actim_restart_more_than_two_years_ago_is_stable() -> None:
    events = [event("e1", "tki_stopped", N - 900), event("e2", "tki_changed", N - 800, tki="imatinib")]
    a = _actim([result("a", N, is_percent=0.05)], events)
    assert a["criteria"]["imatinib_2_years_stable_dose"]["met"] is True


def test_actim_imatinib_case_insensitive_and_other_tki_rejected() -> None:
    assert _actim([result("a", N, is_percent=0.05)], tki="Imatinib")["eligible"] is True
    assert _actim([result("a", N, is_percent=0.05)], tki="nilotinib")["eligible"] is False
    switched = [event("e1", "tki_changed", 100, tki="dasatinib", reason="intolerance")]
    assert _actim([result("a", N, is_percent=0.05)], switched)["eligible"] is False


def test_actim_stopped_not_eligible() -> None:
    a = _actim([result("a", N, is_percent=0.05)], [event("e1", "tki_stopped", 10)])
    assert a["criteria"]["imatinib_2_years_stable_dose"]["met"] is False


def test_actim_unknown_tki_is_unknown() -> None:
    a = _actim([result("a", N, is_percent=0.05)], tki=None)
    assert a["criteria"]["imatinib_2_years_stable_dose"]["met"] is None
    assert a["eligible"] is None


@pytest.mark.parametrize(
    ("value", "in_mmr", "not_mr45"),
    [
        (0.1, True, True),
        (0.1000001, False, True),
        (0.0999999, True, True),
        (0.0032, True, False),
        (0.0032000001, True, True),
        (0.0031999999, True, False),
    ],
)
def test_actim_response_window(value: float, in_mmr: bool, not_mr45: bool) -> None:
    a = _actim([result("a", N, is_percent=value)])
    assert a["criteria"]["in_mmr"]["met"] is in_mmr
    assert a["criteria"]["not_in_mr4_5"]["met"] is not_mr45
    assert a["eligible"] is (in_mmr and not_mr45)


def test_actim_3_2_copies_in_100000_is_mr4_5_not_eligible() -> None:
    a = _actim([result("a", N, bcr_abl1_copies=3.2)])
    assert a["criteria"]["not_in_mr4_5"]["met"] is False


def test_actim_uses_latest_result_only() -> None:
    results = [result("old", N - 100, is_percent=0.002), result("new", N, is_percent=0.05)]
    assert _actim(results)["eligible"] is True
    results = [result("old", N - 100, is_percent=0.05), result("new", N, is_percent=0.5)]
    assert _actim(results)["eligible"] is False


@pytest.mark.parametrize(("copies", "not_mr45"), [(31_999, True), (32_000, False)])
def test_actim_undetectable_scored_by_band(copies: int, not_mr45: bool) -> None:
    a = _actim([undetectable("a", N, control_copies=copies)])
    assert a["criteria"]["in_mmr"]["met"] is True
    assert a["criteria"]["not_in_mr4_5"]["met"] is not_mr45


@pytest.mark.parametrize("copies", [5_000, 1_000_000])
def test_actim_not_in_mr4_5_unknown_from_a_sensitivity_limited_result(copies: int) -> None:
    # Undetectable with BCR (no Cross 2015 bands) or in too few ABL1 copies: it cannot show IS > 0.0032%,
    # and cannot score MR4.5 either, however many copies: unknown, not "not in MR4.5".
    gene = "BCR" if copies > 100_000 else "ABL1"
    a = _actim([result("a", N, bcr_abl1_copies=0, control_gene=gene, control_copies=copies)])
    assert a["criteria"]["not_in_mr4_5"]["met"] is None and a["eligible"] is None
    assert a["criteria"]["in_mmr"]["met"] is True


def test_actim_no_results_unknown() -> None:
    # An event sets the assessment date past 2 years; without a result the response criteria are unknown.
    a = _actim([], [event("e1", "add_on_started", N, note="pioglitazone")])
    assert a["criteria"]["imatinib_2_years_stable_dose"]["met"] is True
    assert a["criteria"]["in_mmr"]["met"] is None
    assert a["eligible"] is None


# ---- TFR: minimal criteria ----


def _dmr_history(run_start: int, *, deep: float = 0.005, end: int = N) -> list[dict[str, Any]]:
    """MMR (not MR4) before `run_start`, then results at `deep` IS% every 90 days up to `end`."""
    results = [result("pre", run_start - 90, is_percent=0.05)]
    offsets = list(range(run_start, end, 90)) + [end]
    results += [result(f"d{o:05d}", o, is_percent=deep, transcript="e14a2") for o in offsets]
    return results


def test_tfr_shape() -> None:
    t = _tfr(_dmr_history(1000))
    assert t["mandatory"]["met"] is None
    assert set(t["minimal"]["criteria"]) == {
        "first_line_tki",
        "typical_transcript",
        "tki_duration",
        "dmr_over_2_years",
        "no_prior_failure",
    }
    assert set(t["optimal"]["criteria"]) == {"tki_over_5_years", "dmr_duration"}
    assert t["minimal"]["eligible"] is True
    assert t["tki_stopped"] is None


@pytest.mark.parametrize(
    ("tki", "days", "met"),
    [
        ("imatinib", 1826, False),
        ("imatinib", 1827, True),
        ("nilotinib", 1461, False),
        ("nilotinib", 1462, True),
        ("Dasatinib", 1462, True),
        ("bosutinib", 1461, False),
    ],
)
def test_tfr_tki_duration(tki: str, days: int, met: bool) -> None:
    t = _tfr(_dmr_history(days - 800, end=days), tki=tki)
    assert t["minimal"]["criteria"]["tki_duration"]["met"] is met


@pytest.mark.parametrize(("days", "met"), [(1826, False), (1827, True)])
def test_tfr_optimal_five_years_even_for_second_generation(days: int, met: bool) -> None:
    t = _tfr(_dmr_history(days - 800, end=days), tki="nilotinib")
    assert t["optimal"]["criteria"]["tki_over_5_years"]["met"] is met


@pytest.mark.parametrize(("days", "met"), [(1461, False), (1600, None), (1827, True)])
def test_tfr_duration_with_unknown_tki(days: int, met: bool | None) -> None:
    t = _tfr(_dmr_history(days - 800, end=days), tki=None)
    assert t["minimal"]["criteria"]["tki_duration"]["met"] is met


def test_tfr_duration_stops_at_tki_stop() -> None:
    # Stopped at day 1800 (< 5 years): the therapy that counts ended then, whatever the date now.
    t = _tfr(_dmr_history(1000), [event("e1", "tki_stopped", 1800)])
    assert t["minimal"]["criteria"]["tki_duration"]["met"] is False
    assert t["tki_stopped"] is not None


@pytest.mark.parametrize(("days_on", "met"), [(1826, False), (1827, True)])
def test_tfr_duration_leaves_out_time_off_tki(days_on: int, met: bool) -> None:
    # Started on day 0, stopped on day 800 (a TFR attempt), restarted later, assessed on day N: the time
    # off does not count towards "> 5 years of TKI" (1826.25 days).
    restart = 800 + (N - days_on)
    events = [
        event("e1", "tki_stopped", 800),
        event("e2", "tki_changed", restart, tki="imatinib", dose_mg=400),
    ]
    c = _tfr(_dmr_history(N - 700), events)["minimal"]["criteria"]["tki_duration"]
    assert c["met"] is met and f"{days_on} days" in c["detail"]


@pytest.mark.parametrize(("run_days", "met"), [(730, False), (731, True)])
def test_tfr_dmr_over_two_years(run_days: int, met: bool) -> None:
    t = _tfr(_dmr_history(N - run_days))
    assert t["minimal"]["criteria"]["dmr_over_2_years"]["met"] is met


def test_tfr_dmr_run_must_be_unbroken_to_latest() -> None:
    results = _dmr_history(N - 2000)
    results.append(result("blip", N - 500, is_percent=0.02))  # an MMR-only result breaks the run
    t = _tfr(results)
    assert t["minimal"]["criteria"]["dmr_over_2_years"]["met"] is False
    results[-1] = result("blip", N - 800, is_percent=0.02)
    assert _tfr(results)["minimal"]["criteria"]["dmr_over_2_years"]["met"] is True


def test_tfr_dmr_latest_not_deep() -> None:
    results = [*_dmr_history(N - 2000, end=N - 10), result("last", N, is_percent=0.05)]
    assert _tfr(results)["minimal"]["criteria"]["dmr_over_2_years"]["met"] is False


@pytest.mark.parametrize(("run_days", "met"), [(740, False), (741, True)])
def test_tfr_inadequate_undetectable_neither_breaks_nor_extends_dmr(run_days: int, met: bool) -> None:
    # An undetectable sample below 10,000 ABL1 shows nothing of the response (Cross 2015): the run of MR4
    # goes on past it, but lasts only to its last deep result (day N - 10), not to the small sample.
    results = [*_dmr_history(N - run_days, end=N - 10), undetectable("last", N, control_copies=5_000)]
    c = _tfr(results)["minimal"]["criteria"]["dmr_over_2_years"]
    assert c["met"] is met and f"for {run_days - 10} days" in c["detail"]
    mid = [*_dmr_history(N - 2000), undetectable("small", N - 500, control_copies=5_000)]
    assert _tfr(sorted(mid, key=lambda r: r["collected_at"]))["minimal"]["criteria"]["dmr_over_2_years"][
        "met"
    ]


@pytest.mark.parametrize(
    "small",
    [
        {"control_gene": "BCR", "control_copies": 500_000, "bcr_abl1_copies": 0},  # no deep bands for BCR
        {"control_copies": 9_000, "is_percent": 0.004},  # detectable, capped at MMR by an inadequate sample
        {"control_copies": 5_000, "bcr_abl1_copies": 0},  # undetectable below the MR4 band
    ],
)
def test_tfr_sensitivity_limited_result_does_not_break_a_dmr_run(small: dict) -> None:
    results = _dmr_history(N - 2000)
    results.append(result("small", N - 1000, **small))
    results.sort(key=lambda r: r["collected_at"])
    c = _tfr(results)["minimal"]["criteria"]["dmr_over_2_years"]
    assert c["met"] is True and "for 2000 days" in c["detail"]


@pytest.mark.parametrize(
    ("gusb", "detail"), [(20_000, "MR4.5 or deeper for 2000"), (30_000, "MR4 or deeper for 2000")]
)
def test_tfr_a_measured_result_in_a_small_sample_neither_ends_nor_extends_an_mr4_5_run(
    gusb: int, detail: str
) -> None:
    # 0.005% measured in 20,000 GUSB (capped at MMR) cannot assess MR4 or deeper (Cross 2015): the MR4.5
    # run goes on. Measured in an adequate 30,000 it ends the MR4.5 run, not the MR4 one.
    small = result("small", N - 600, is_percent=0.005, control_gene="GUSB", control_copies=gusb)
    results = sorted([*_dmr_history(N - 2000, deep=0.002), small], key=lambda r: r["collected_at"])
    assert _tfr(results)["optimal"]["criteria"]["dmr_duration"]["detail"].startswith(detail)


@pytest.mark.parametrize(("run_days", "met"), [(730, False), (731, True)])
def test_tfr_dmr_lasts_to_its_last_result_not_a_later_event(run_days: int, met: bool) -> None:
    # ELN 2020: MR4 *lasting* > 2 years. One MR4 result and an event 800 days later is not 800 days of MR4.
    results = [result("pre", 10, is_percent=0.05), result("deep", 1000, is_percent=0.005)]
    late_event = [event("e1", "add_on_started", 1800, note="pioglitazone")]
    assert _tfr(results, late_event)["minimal"]["criteria"]["dmr_over_2_years"]["met"] is False
    results.append(result("deep2", 1000 + run_days, is_percent=0.005))
    assert _tfr(results, late_event)["minimal"]["criteria"]["dmr_over_2_years"]["met"] is met
    t = _tfr(results, [event("e1", "add_on_started", 1000 + run_days + 400, note="x")])
    assert t["optimal"]["criteria"]["dmr_duration"]["met"] is False  # 2.0 years of MR4 < 3 years


@pytest.mark.parametrize(
    ("transcript", "met"),
    [
        ("e13a2", True),
        ("e14a2", True),
        ("E13A2/e14a2", True),
        ("e1a2", False),
        ("e19a2", False),
        (None, None),
    ],
)
def test_tfr_transcript(transcript: str | None, met: bool | None) -> None:
    results = [result("a", N, is_percent=0.005, transcript=transcript)]
    assert _tfr(results)["minimal"]["criteria"]["typical_transcript"]["met"] is met


@pytest.mark.parametrize(
    ("change", "met"),
    [
        ({"tki": "nilotinib", "reason": "intolerance"}, True),
        ({"tki": "nilotinib", "reason": "Intolerance"}, True),
        ({"tki": "nilotinib", "reason": "resistance"}, False),
        ({"tki": "nilotinib"}, None),  # reason not recorded: cannot tell (clinical-rules.md s.8)
        ({"tki": "imatinib", "dose_mg": 300}, True),  # dose change, same drug
        ({"dose_mg": 300}, True),
    ],
)
def test_tfr_first_line(change: dict[str, Any], met: bool) -> None:
    t = _tfr(_dmr_history(1000), [event("e1", "tki_changed", 200, **change)])
    assert t["minimal"]["criteria"]["first_line_tki"]["met"] is met


def test_tfr_prior_failure_from_milestone() -> None:
    results = [result("m6", 183, is_percent=15.0), *_dmr_history(1000)]
    t = _tfr(results)
    assert t["minimal"]["criteria"]["no_prior_failure"]["met"] is False
    assert t["minimal"]["eligible"] is False


def test_tfr_prior_failure_any_time_after_12_months() -> None:
    # > 1% at 18 months is an ELN 2020 failure even though the latest result is deep.
    results = [result("m18", 548, is_percent=1.5), *_dmr_history(1000)]
    assert _tfr(results)["minimal"]["criteria"]["no_prior_failure"]["met"] is False
    results = [result("m18", 548, is_percent=1.0), *_dmr_history(1000)]
    assert _tfr(results)["minimal"]["criteria"]["no_prior_failure"]["met"] is True


def test_tfr_progression_is_failure() -> None:
    t = _tfr(_dmr_history(1000), [event("e1", "progression", 500)])
    assert t["minimal"]["criteria"]["no_prior_failure"]["met"] is False


# ---- TFR: optimal ----


@pytest.mark.parametrize(("run_days", "met"), [(1095, False), (1096, True)])
def test_tfr_optimal_mr4_over_three_years(run_days: int, met: bool) -> None:
    t = _tfr(_dmr_history(N - run_days, deep=0.005))  # MR4, not MR4.5
    assert t["optimal"]["criteria"]["dmr_duration"]["met"] is met


@pytest.mark.parametrize(("run_days", "met"), [(730, False), (731, True)])
def test_tfr_optimal_mr4_5_over_two_years(run_days: int, met: bool) -> None:
    t = _tfr(_dmr_history(N - run_days, deep=0.0032))  # MR4.5 (bound inclusive)
    assert t["optimal"]["criteria"]["dmr_duration"]["met"] is met


def test_tfr_optimal_requires_minimal() -> None:
    results = [result("m6", 183, is_percent=15.0), *_dmr_history(N - 1500, deep=0.001)]
    t = _tfr(results)
    assert all(c["met"] for c in t["optimal"]["criteria"].values())
    assert t["minimal"]["eligible"] is False and t["optimal"]["eligible"] is False


def test_tfr_unknown_transcript_makes_eligibility_unknown() -> None:
    results = [result("a", N - 1000, is_percent=0.005), result("b", N, is_percent=0.005)]
    t = _tfr(results)
    assert t["minimal"]["criteria"]["typical_transcript"]["met"] is None
    assert t["minimal"]["eligible"] is None


def test_tfr_duration_ends_at_the_first_stop_never_resumed() -> None:
    # Stopped on day 1500 and again on 2100 without a restart in between: off TKI since day 1500.
    events = [event("e1", "tki_stopped", 1500), event("e2", "tki_stopped", 2100)]
    c = _tfr(_dmr_history(N - 2000), events)["minimal"]["criteria"]["tki_duration"]
    assert c["met"] is False and "1500 days" in c["detail"]


@pytest.mark.parametrize("ids", [("e1", "e2"), ("e9", "e10")])
def test_a_stop_and_a_change_on_one_day_are_a_switch_whatever_their_ids(ids: tuple[str, str]) -> None:
    events = [event(ids[0], "tki_stopped", 400), event(ids[1], "tki_changed", 400, tki="nilotinib",
                                                               reason="intolerance")]  # fmt: skip
    s = _status(_dmr_history(N - 2000), events)
    assert s["on_tki"] is True
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is True
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is True
    assert {m["milestone"]: m for m in s["milestones"]}["after_12m"]["result_id"] is not None
