"""The ELN 2020 failures no assay shows: resistance mutations, high-risk ACA, progression.

Sources: clinical-rules.md s.9 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, milestones table:
"failure at any time: ... resistance mutations, high-risk ACA"; "warning at baseline: high-risk ACA";
progression to accelerated or blast phase ends the chronic phase) and s.4 (TFR mandatory: CML in first
chronic phase; minimal: no prior treatment failure).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clinical.status import patient_status
from tests.clinical.helpers import day, event, registration, result

# Optimal at every milestone and in MMR/MR4 after: the assay alone shows no failure.
OPTIMAL = [
    result("m3", 91, is_percent=5.0),
    result("m6", 183, is_percent=0.5),
    result("m12", 365, is_percent=0.05),
    result("r600", 600, is_percent=0.005),
    result("r900", 900, is_percent=0.005),
]


def _status(events: list[dict[str, Any]], results: list[dict[str, Any]] | None = None, **reg: Any) -> dict:
    return patient_status(registration(**reg), OPTIMAL if results is None else results, events)


def test_without_events_the_assay_decides() -> None:
    s = _status([])
    assert s["eln_assessment"] == "optimal" and s["eln_failures"] == [] and s["eln_warnings"] == []
    assert s["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]["met"] is True


@pytest.mark.parametrize(
    ("kind", "extra", "text"),
    [
        ("resistance_mutation", {"mutation": "T315I"}, "T315I"),
        ("high_risk_aca", {"karyotype": "47,XY,+8,t(9;22)(q34;q11)"}, "+8"),
        ("progression", {"phase": "blast"}, "blast phase"),
        ("progression", {"phase": "accelerated"}, "accelerated phase"),
        ("progression", {}, "accelerated or blast phase"),
    ],
)
def test_each_failure_event_makes_the_assessment_failure_with_its_reason(
    kind: str, extra: dict, text: str
) -> None:
    """s.9: each is a failure at any time, from its date, with the reason."""
    s = _status([event("f1", kind, 700, **extra)])
    assert s["eln_assessment"] == "failure"
    basis = s["eln_assessment_basis"]
    assert basis["kind"] == "event" and basis["type"] == kind and basis["event_id"] == "f1"
    assert basis["date"] == day(700) and text in basis["reason"]
    [failure] = s["eln_failures"]
    assert failure["current"] is True and failure["superseded_on"] is None and "ELN 2020" in failure["source"]
    no_prior = s["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]
    assert no_prior["met"] is False and text in no_prior["detail"]
    assert s["tfr_eligibility"]["minimal"]["eligible"] is False


def test_failure_event_after_the_latest_result_moves_the_assessment_date() -> None:
    """The assessment is "failure from its date": an event after the last result is included."""
    s = _status([event("f1", "resistance_mutation", 1000, mutation="E255K")])
    assert s["assessed_on"] == day(1000) and s["eln_assessment"] == "failure"


# ---- high-risk ACA: warning at baseline, failure after the start (s.9) ----


@pytest.mark.parametrize(
    ("offset", "warning"), [(-30, True), (-1, True), (0, True), (1, False), (400, False)]
)
def test_high_risk_aca_at_baseline_is_a_warning_after_the_start_a_failure(offset: int, warning: bool) -> None:
    """ELN 2020: high-risk ACA is a warning at baseline (on or before the TKI start) and a failure at any
    time after it (failures.py)."""
    s = _status([event("a1", "high_risk_aca", offset, karyotype="46,XY,i(17q)")])
    if warning:
        assert [w["event_id"] for w in s["eln_warnings"]] == ["a1"]
        assert "baseline" in s["eln_warnings"][0]["reason"]
        assert s["eln_failures"] == [] and s["eln_assessment"] == "optimal"
        assert s["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]["met"] is True
    else:
        assert s["eln_warnings"] == []
        assert [f["event_id"] for f in s["eln_failures"]] == ["a1"]
        assert s["eln_assessment"] == "failure"


@pytest.mark.parametrize("offset", [-30, 0])
def test_resistance_mutation_before_the_first_tki_is_not_a_treatment_failure(offset: int) -> None:
    """s.9: ELN 2020 failure is a failure of therapy; a mutation at diagnosis (before the TKI, e.g. T315I
    leading to ponatinib first) cannot be a failure of the TKI chosen for it."""
    s = _status([event("m1", "resistance_mutation", offset, mutation="T315I")], tki="ponatinib")
    assert s["eln_assessment"] == "optimal"


def test_resistance_mutation_the_day_after_the_start_is_a_failure() -> None:
    s = _status([event("m1", "resistance_mutation", 1, mutation="T315I")])
    assert s["eln_assessment"] == "failure"


# ---- a failure of the TKI in use ends with a change of drug (failures.py) ----


@pytest.mark.parametrize("kind", ["resistance_mutation", "high_risk_aca"])
def test_a_later_change_of_drug_supersedes_the_failure_but_not_no_prior_failure(kind: str) -> None:
    """failures.py (s.9): a mutation or emerging ACA is a failure of the TKI in use; a change of drug ends
    it as the current assessment; it still counts against TFR's "no prior failure" (s.4)."""
    extra = {"mutation": "T315I"} if kind == "resistance_mutation" else {"karyotype": "+8"}
    events = [
        event("f1", kind, 500, **extra),
        event("c1", "tki_changed", 520, tki="Iclusig", reason="resistance"),
    ]
    s = _status(events)
    [failure] = s["eln_failures"]
    assert failure["current"] is False and failure["superseded_on"] == day(520)
    assert s["eln_assessment"] == "optimal" and s["eln_assessment_basis"]["kind"] == "milestone"
    assert s["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]["met"] is False


@pytest.mark.parametrize(
    "change",
    [
        {"dose_mg": 800, "reason": "resistance"},  # dose escalation: same drug
        {"tki": "Glivec", "reason": "other"},  # brand for generic: same drug (s.7)
    ],
)
def test_a_dose_or_brand_change_does_not_supersede_a_mutation(change: dict) -> None:
    events = [
        event("f1", "resistance_mutation", 500, mutation="T315I"),
        event("c1", "tki_changed", 520, **change),
    ]
    s = _status(events)
    assert s["eln_failures"][0]["current"] is True and s["eln_assessment"] == "failure"


def test_a_change_of_drug_before_the_mutation_does_not_supersede_it() -> None:
    events = [
        event("c1", "tki_changed", 300, tki="nilotinib", reason="intolerance"),
        event("f1", "resistance_mutation", 500, mutation="Y253H"),
    ]
    s = _status(events)
    assert s["eln_failures"][0]["current"] is True and s["eln_assessment"] == "failure"


def test_a_change_of_drug_on_the_day_of_the_mutation_supersedes_it() -> None:
    events = [
        event("f1", "resistance_mutation", 500, mutation="T315I"),
        event("c1", "tki_changed", 500, tki="ponatinib", reason="resistance"),
    ]
    s = _status(events)
    assert s["eln_failures"][0]["current"] is False and s["eln_assessment"] == "optimal"


def test_the_latest_holding_failure_is_the_basis() -> None:
    events = [
        event("f1", "resistance_mutation", 500, mutation="F317L"),
        event("f2", "high_risk_aca", 600, karyotype="-7"),
    ]
    s = _status(events)
    assert s["eln_assessment_basis"]["event_id"] == "f2"
    assert [f["current"] for f in s["eln_failures"]] == [True, True]


# ---- progression persists and ends first chronic phase (s.9, s.4 mandatory) ----


def test_progression_persists_after_a_change_of_drug() -> None:
    """s.9: progression ends the chronic phase: no change of drug returns the patient to it."""
    events = [
        event("p1", "progression", 500, phase="accelerated"),
        event("c1", "tki_changed", 510, tki="dasatinib", reason="failure"),
    ]
    s = _status(events)
    assert s["eln_failures"][0]["current"] is True and s["eln_failures"][0]["superseded_on"] is None
    assert s["eln_assessment"] == "failure"


@pytest.mark.parametrize("offset", [-10, 0, 500])
def test_progression_makes_the_mandatory_criterion_false(offset: int) -> None:
    """Issue s.4 / s.4 mandatory: "CML in first chronic phase" is now known false, not "not assessed"."""
    s = _status([event("p1", "progression", offset, phase="blast")])
    mandatory = s["tfr_eligibility"]["mandatory"]
    assert mandatory["met"] is False
    assert "blast phase" in mandatory["detail"] and day(offset) in mandatory["detail"]


@pytest.mark.parametrize(
    "events",
    [
        [],
        [event("m1", "resistance_mutation", 500, mutation="T315I")],
        [event("a1", "high_risk_aca", 500, karyotype="+8")],
        [event("a1", "mutation_analysis", 500)],
    ],
)
def test_mandatory_stays_not_assessed_without_progression(events: list[dict]) -> None:
    """s.4: the mandatory criteria are not derivable from assays: None ("not assessed") unless progression
    shows first chronic phase has ended."""
    assert _status(events)["tfr_eligibility"]["mandatory"]["met"] is None


def test_a_negative_mutation_analysis_is_no_failure() -> None:
    s = _status([event("a1", "mutation_analysis", 500)])
    assert s["eln_failures"] == [] and s["eln_assessment"] == "optimal"


# ---- loss of MMR after TFR (s.9 table note) ----

IN_MR4 = [result(f"d{d}", d, is_percent=0.005) for d in (1000, 1300, 1600, 1900)]


def test_loss_of_mmr_after_tfr_is_a_failure() -> None:
    results = [*IN_MR4, result("loss", 2060, is_percent=0.5)]
    s = patient_status(registration(), results, [event("s", "tki_stopped", 2000)])
    assert s["loss_of_mmr"]["current"] is True
    assert s["eln_assessment"] == "failure"


def test_mmr_kept_after_tfr_is_no_failure() -> None:
    results = [*IN_MR4, result("kept", 2060, is_percent=0.1)]
    s = patient_status(registration(), results, [event("s", "tki_stopped", 2000)])
    assert s["eln_assessment"] == "optimal" and s["eln_failures"] == []
