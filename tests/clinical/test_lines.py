"""Lines of therapy and their coded reasons, and ELN 2020's TFR criterion "first-line TKI, or second-line
if intolerance was the only reason for changing TKI".

Sources: clinical-rules.md s.8 (a line is a drug, not a brand and not a dose; reasons are codes) and s.4
(ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, requirements for TKI discontinuation); s.7 (brand and
generic are one drug).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clinical.status import patient_status
from tests.clinical.helpers import day, event, registration, result

LATEST = [result("a", 2000, is_percent=0.005)]


def _status(events: list[dict[str, Any]], **reg: Any) -> dict:
    return patient_status(registration(**reg), LATEST, events)


def _first_line(events: list[dict[str, Any]], **reg: Any) -> dict:
    return _status(events, **reg)["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]


def _kinds(s: dict) -> list[str]:
    return [c["kind"] for c in s["therapy"]["changes"]]


def test_no_change_is_line_1() -> None:
    """s.8: first line until the drug changes."""
    s = _status([])
    assert s["therapy"]["line"] == 1
    assert [x["line"] for x in s["therapy"]["lines"]] == [1]
    assert s["therapy"]["lines"][0]["tki"] == "imatinib"
    assert s["therapy"]["lines"][0]["started_on"] == day(0)
    assert _first_line([])["met"] is True


@pytest.mark.parametrize("dose", [300, 600, 800])
def test_a_dose_change_keeps_the_line(dose: int) -> None:
    """s.8: a line is a drug, not a dose."""
    s = _status([event("e1", "tki_changed", 200, dose_mg=dose, reason="resistance")])
    assert s["therapy"]["line"] == 1 and _kinds(s) == ["dose"]
    assert s["therapy"]["dose_mg"] == dose
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is True


@pytest.mark.parametrize(
    ("registered", "switched_to"),
    [
        ("Glivec", "imatinib"),
        ("Gleevec", "Imatinib Teva"),
        ("imatinib", "Glivec 400 mg"),
        ("Tasigna", "nilotinib"),
    ],
)
def test_brand_generic_switch_changes_nothing(registered: str, switched_to: str) -> None:
    """s.7-8 (ELN 2020 "imatinib, brand or generic"): not a change of drug, line or dose history."""
    s = _status([event("e1", "tki_changed", 500, tki=switched_to, reason="other")], tki=registered)
    assert s["therapy"]["line"] == 1
    assert _kinds(s) == ["product"]
    assert s["therapy"]["stable_since"] == day(0)
    assert len(s["therapy"]["lines"]) == 1
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is True


def test_brand_switch_with_a_dose_change_is_a_dose_change_only() -> None:
    s = _status([event("e1", "tki_changed", 500, tki="Imatinib Accord", dose_mg=600)], tki="Glivec")
    assert s["therapy"]["line"] == 1 and _kinds(s) == ["dose"]
    assert s["therapy"]["stable_since"] == day(500)


@pytest.mark.parametrize(
    ("reason", "met"),
    [
        ("intolerance", True),
        ("Intolerance", True),  # stored before the codes: text equal to a code is that code
        ("resistance", False),
        ("failure", False),
        ("patient_choice", False),
        ("other", False),
        (None, None),  # not recorded: a second line qualifies only if for intolerance
    ],
)
def test_second_line_qualifies_for_tfr_only_for_intolerance(reason: str | None, met: bool | None) -> None:
    """ELN 2020 TFR minimal (s.4, s.8): second line only if intolerance was the only reason."""
    extra = {} if reason is None else {"reason": reason}
    s = _status([event("e1", "tki_changed", 300, tki="nilotinib", **extra)])
    assert s["therapy"]["line"] == 2
    assert s["therapy"]["changes"][0]["reason"] == (None if reason is None else reason.lower())
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is met


@pytest.mark.parametrize("reasons", [("intolerance", "intolerance"), ("intolerance", "resistance")])
def test_a_third_line_never_qualifies(reasons: tuple[str, str]) -> None:
    """ELN 2020 TFR minimal (s.8): "any third line" does not meet it, whatever the reasons."""
    events = [
        event("e1", "tki_changed", 300, tki="Tasigna", reason=reasons[0]),
        event("e2", "tki_changed", 900, tki="Sprycel", reason=reasons[1]),
    ]
    s = _status(events)
    assert s["therapy"]["line"] == 3
    assert [x["tki"] for x in s["therapy"]["lines"]] == ["imatinib", "nilotinib", "dasatinib"]
    assert [x["reason"] for x in s["therapy"]["lines"]] == [None, *reasons]
    assert s["therapy"]["lines"][0]["ended_on"] == day(300)
    assert s["therapy"]["lines"][1]["ended_on"] == day(900)
    assert s["therapy"]["lines"][2]["ended_on"] is None
    first_line = s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]
    assert first_line["met"] is False and "line 3" in first_line["detail"]


def test_back_to_an_earlier_drug_is_a_new_line() -> None:
    """s.8: a new line starts when the drug changes (imatinib -> nilotinib -> imatinib is line 3)."""
    events = [
        event("e1", "tki_changed", 300, tki="nilotinib", reason="intolerance"),
        event("e2", "tki_changed", 900, tki="Glivec", reason="intolerance"),
    ]
    s = _status(events)
    assert s["therapy"]["line"] == 3
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is False


def test_each_change_is_shown_with_its_reason_and_text() -> None:
    """Issue s.3: "the status shows the line and each change with its reason"."""
    events = [
        event("e1", "tki_changed", 100, dose_mg=300, reason="intolerance", reason_text="neutropenia"),
        event("e2", "tki_changed", 300, tki="Tasigna", dose_mg=600, reason="intolerance", reason_text="rash"),
    ]
    change = _status(events)["therapy"]["changes"]
    assert change[0] == {
        "date": day(100),
        "kind": "dose",
        "event_id": "e1",
        "from_tki": "imatinib",
        "to_tki": "imatinib",
        "from_dose_mg": 400,
        "to_dose_mg": 300,
        "reason": "intolerance",
        "reason_text": "neutropenia",
    }
    assert change[1]["kind"] == "drug" and change[1]["from_tki"] == "imatinib"
    assert change[1]["to_tki"] == "nilotinib" and change[1]["reason_text"] == "rash"


def test_restart_of_the_same_drug_keeps_the_line() -> None:
    """s.8 (lines.py): a restart of the same drug after a stop keeps the line."""
    events = [
        event("e1", "tki_stopped", 1900, reason="treatment_free_remission"),
        event("e2", "tki_changed", 2100, tki="imatinib", dose_mg=400),
    ]
    s = _status(events)
    assert _kinds(s) == ["stop", "restart"]
    assert s["therapy"]["line"] == 1
    assert s["therapy"]["stable_since"] == day(2100)


def test_restart_on_another_drug_is_a_new_line() -> None:
    events = [
        event("e1", "tki_stopped", 1900, reason="treatment_free_remission"),
        event("e2", "tki_changed", 2100, tki="Sprycel", reason="failure"),
    ]
    s = _status(events)
    assert _kinds(s) == ["stop", "drug"]
    assert s["therapy"]["line"] == 2


def test_stop_and_switch_on_one_day_is_one_change_of_drug() -> None:
    """therapy.parse_events: on one day a stop comes before a change, whatever the ids."""
    events = [
        event("z-stop", "tki_stopped", 300, reason="intolerance"),
        event("a-change", "tki_changed", 300, tki="nilotinib", reason="intolerance"),
    ]
    s = _status(events)
    assert s["on_tki"] is True and s["therapy"]["line"] == 2
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is True


# ---- the first drug not recorded (s.8: a change that cannot be told from a dose change) ----


@pytest.mark.parametrize(
    ("reason", "met"),
    [
        ("intolerance", True),
        ("resistance", None),
        (None, None),
    ],
)
def test_unrecorded_first_drug(reason: str | None, met: bool | None) -> None:
    """A change to nilotinib from an unrecorded drug is line 1 or 2: intolerance qualifies either way;
    another reason only if it was no change of drug, so the criterion cannot be told."""
    extra = {} if reason is None else {"reason": reason}
    s = _status([event("e1", "tki_changed", 300, tki="nilotinib", **extra)], tki=None)
    assert s["therapy"]["line"] is None
    assert _kinds(s) == ["drug_or_dose"]
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is met


def test_unrecorded_first_drug_then_a_known_change_for_resistance_is_not_first_line() -> None:
    """Either reading of the unrecorded change gives line >= 2 for resistance: False in both readings."""
    events = [
        event("e1", "tki_changed", 300, tki="nilotinib", reason="intolerance"),
        event("e2", "tki_changed", 900, tki="dasatinib", reason="resistance"),
    ]
    assert _first_line(events, tki=None)["met"] is False


def test_unrecorded_first_drug_and_no_tki_start_has_no_line() -> None:
    s = _status([], tki=None, tki_started_on=None)
    assert s["therapy"]["line"] is None
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is True


def test_change_from_an_unknown_stored_name_is_uncertain() -> None:
    """s.7: an unknown stored name might be the same drug; the line is not guessed."""
    s = _status([event("e1", "tki_changed", 300, tki="imatinib", reason="resistance")], tki="STI571")
    assert s["unknown_tki"] == ["STI571"]
    assert s["therapy"]["line"] is None
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is None


def test_uncoded_legacy_reason_leaves_the_second_line_undecided() -> None:
    """s.8: free text is never matched literally, so uncoded text cannot say it was (or was not)
    intolerance: the criterion is unknown, not False."""
    s = _status([event("e1", "tki_changed", 300, tki="nilotinib", reason="Intolerance (rash)")])
    assert s["therapy"]["changes"][0]["reason_text"] == "Intolerance (rash)"
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is None


@pytest.mark.parametrize(("registered", "restated"), [("imatinib", "Imatinib"), ("Glivec", "GLIVEC")])
def test_restating_the_same_product_is_no_change(registered: str, restated: str) -> None:
    """s.8: the same drug, dose and product restated (any case or spacing) changes nothing."""
    s = _status([event("e1", "tki_changed", 500, tki=restated)], tki=registered)
    assert _kinds(s) == ["unchanged"] and s["therapy"]["stable_since"] == day(0)
