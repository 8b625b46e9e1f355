"""The TKI vocabulary and the coded reasons, at the door (schemas) and in the status.

Sources: clinical-rules.md s.7 (ELN 2020, Hochhaus et al., Leukemia 2020;34:966-984, treatment section:
"imatinib (brand or generic), dasatinib, nilotinib, bosutinib"; a brand and its generic are one drug) and
s.8 (reasons for a change are codes, free text beside, never matched literally).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clinical.drugs import (
    FIRST_GENERATION,
    SECOND_GENERATION,
    STAMP_INHIBITOR,
    THIRD_GENERATION,
    TKIS,
    resolve_tki,
    tki_generic,
)
from shared.clinical.status import patient_status
from shared.clinical.timeline import years_to_days
from shared.schemas import EventSchema, PatientSchema, ValidationError
from tests.clinical.helpers import event, registration, result

# ---- the table (clinical-rules.md s.7) ----


def test_table_has_one_row_per_drug_with_class_and_source() -> None:
    """s.7 table: six drugs, each with its ELN 2020 class and a cited source."""
    rows = {t.generic: t for t in TKIS}
    assert set(rows) == {"imatinib", "nilotinib", "dasatinib", "bosutinib", "ponatinib", "asciminib"}
    assert rows["imatinib"].tki_class == FIRST_GENERATION
    assert {rows[g].tki_class for g in ("nilotinib", "dasatinib", "bosutinib")} == {SECOND_GENERATION}
    assert rows["ponatinib"].tki_class == THIRD_GENERATION
    assert rows["asciminib"].tki_class == STAMP_INHIBITOR
    assert all(t.source for t in TKIS)


def test_tfr_minimal_durations_per_drug() -> None:
    """ELN 2020 TFR minimal: > 5 years (imatinib), > 4 years (second generation); none for ponatinib and
    asciminib (s.7 last column)."""
    rows = {t.generic: t.tfr_min_days for t in TKIS}
    assert rows["imatinib"] == years_to_days(5) == 1826.25
    assert rows["nilotinib"] == rows["dasatinib"] == rows["bosutinib"] == years_to_days(4) == 1461
    assert rows["ponatinib"] is None and rows["asciminib"] is None


@pytest.mark.parametrize(
    ("written", "generic"),
    [
        # generic names, any case and spacing (s.7: "case and spacing vary")
        ("imatinib", "imatinib"),
        ("IMATINIB", "imatinib"),
        ("  Imatinib  ", "imatinib"),
        ("ima tinib", "imatinib"),
        ("imatinib\u00a0mesylate", "imatinib"),  # a non-breaking space pasted from a document
        ("imatinib-mesylate", "imatinib"),
        ("imatinib_mesylate", "imatinib"),
        # brands (US and EU names of imatinib), with strength, symbols or odd case
        ("Gleevec", "imatinib"),
        ("GLIVEC", "imatinib"),
        ("Glivec 400 mg", "imatinib"),
        ("Glivec® 100mg", "imatinib"),
        ("gleevec-400", "imatinib"),
        # generic products: generic + maker, or "generic imatinib"
        ("Imatinib Teva", "imatinib"),
        ("Imatinib  Accord", "imatinib"),
        ("imatinib (Sandoz)", "imatinib"),
        ("generic imatinib", "imatinib"),
        ("Generic-Imatinib", "imatinib"),
        ("nilotinib", "nilotinib"),
        ("Tasigna", "nilotinib"),
        ("TASIGNA 150 mg", "nilotinib"),
        ("nilotinib hydrochloride", "nilotinib"),
        ("dasatinib", "dasatinib"),
        ("Sprycel", "dasatinib"),
        ("sprycel 100mg", "dasatinib"),
        ("Dasatinib Zentiva", "dasatinib"),
        ("bosutinib", "bosutinib"),
        ("Bosulif", "bosutinib"),
        ("BOSULIF 500 MG", "bosutinib"),
        ("ponatinib", "ponatinib"),
        ("Iclusig", "ponatinib"),
        ("Iclusig 45 mg", "ponatinib"),
        ("asciminib", "asciminib"),
        ("Scemblix", "asciminib"),
        ("scemblix 40mg", "asciminib"),
    ],
)
def test_every_name_form_resolves(written: str, generic: str) -> None:
    """s.7: generic, brand and generic-product names, case, spacing and hyphen insensitive."""
    found = resolve_tki(written)
    assert found is not None and found.generic == generic
    assert tki_generic(written) == generic


@pytest.mark.parametrize(
    "written",
    ["Gleevac", "imatanib", "nilotinb", "Sprycl", "tasinga", "STI571", "interferon", "hydroxyurea", "TKI"],
)
def test_unknown_names_do_not_resolve(written: str) -> None:
    """s.7: a misspelt or non-TKI name is not guessed (it would change the TFR threshold and the lines)."""
    assert resolve_tki(written) is None
    assert tki_generic(written) == written.strip().lower()


def test_prefix_rule_accepts_suffixes_of_the_same_drug() -> None:
    """drugs.py: a name followed by a salt, maker or strength is that drug; the rule also accepts a typo
    after a whole name ("Sprycell"), which still names the right drug (judgment call, reported)."""
    assert resolve_tki("Sprycell").generic == "dasatinib"


@pytest.mark.parametrize("written", ["Imatinib -> Tasigna", "Glivec/Sprycel", "imatinib or nilotinib"])
def test_a_name_naming_two_drugs_is_not_one_of_them(written: str) -> None:
    """s.7: an ambiguous name must not silently pick a drug (it sets the TFR threshold and the line)."""
    assert resolve_tki(written) is None


@pytest.mark.parametrize("empty", [None, ""])
def test_no_name_is_no_drug(empty: str | None) -> None:
    assert resolve_tki(empty) is None


# ---- at the door: unknown names refused with the field named (422) ----


def _patient(**fields: Any) -> dict:
    return PatientSchema().load({"tki_started_on": "2015-01-01", **fields})


def _event(**fields: Any) -> dict:
    return EventSchema().load({"event_id": "e1", "type": "tki_changed", "date": "2016-01-01", **fields})


@pytest.mark.parametrize("field", ["tki", "tki_product"])
def test_registration_refuses_unknown_name_naming_field_and_accepted_names(field: str) -> None:
    """s.7: an unknown name is refused, the error names the field and lists the accepted names."""
    data = {"tki": "imatinib", field: "Gleevac"}
    with pytest.raises(ValidationError) as caught:
        _patient(**data)
    messages = caught.value.messages
    assert set(messages) == {field}
    text = " ".join(messages[field])
    assert "Gleevac" in text
    for name in ("imatinib", "Gleevec", "Glivec", "nilotinib", "Tasigna", "dasatinib", "Sprycel"):
        assert name in text
    for name in ("bosutinib", "Bosulif", "ponatinib", "Iclusig", "asciminib", "Scemblix"):
        assert name in text


def test_event_refuses_unknown_name_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        _event(tki="nilotinb")
    assert set(caught.value.messages) == {"tki"}
    assert "Tasigna" in " ".join(caught.value.messages["tki"])


@pytest.mark.parametrize(
    ("written", "generic", "product"),
    [
        ("imatinib", "imatinib", None),
        ("Imatinib", "imatinib", None),
        ("Glivec", "imatinib", "Glivec"),
        ("Imatinib Teva", "imatinib", "Imatinib Teva"),
        ("Sprycel 100 mg", "dasatinib", "Sprycel 100 mg"),
    ],
)
def test_registration_stores_the_generic_and_keeps_the_product(
    written: str, generic: str, product: str | None
) -> None:
    """s.7: tki becomes the drug (one drug, brand or generic); the name as written is kept as tki_product."""
    loaded = _patient(tki=written)
    assert loaded["tki"] == generic
    assert loaded.get("tki_product") == product


def test_product_of_another_drug_is_refused() -> None:
    """s.7: a product naming another drug than `tki` is a contradiction, refused on tki_product."""
    with pytest.raises(ValidationError) as caught:
        _patient(tki="imatinib", tki_product="Tasigna")
    assert set(caught.value.messages) == {"tki_product"}


def test_event_product_without_tki_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        _event(tki_product="Glivec")
    assert "tki_product" in caught.value.messages


# ---- coded reasons (clinical-rules.md s.8) ----


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("intolerance", "intolerance"),
        ("Intolerance", "intolerance"),
        ("  INTOLERANCE ", "intolerance"),
        ("resistance", "resistance"),
        ("Failure", "failure"),
        ("patient_choice", "patient_choice"),
        ("Patient choice", "patient_choice"),
        ("patient-choice", "patient_choice"),
        ("PATIENT  CHOICE", "patient_choice"),
        ("other", "other"),
        ("OTHER", "other"),
    ],
)
def test_coded_reasons_accepted_in_any_case(written: str, code: str) -> None:
    """s.8: reasons are codes (intolerance, resistance, failure, patient choice, other), any case."""
    assert _event(tki="nilotinib", reason=written)["reason"] == code


@pytest.mark.parametrize(
    "written",
    ["side effects", "Intolerance (rash)", "intolerant", "resistant", "lack of response", "pt choice"],
)
def test_free_text_reason_refused_and_pointed_to_reason_text(written: str) -> None:
    """s.8: free text is never matched: refused in `reason`, the error points at reason_text."""
    with pytest.raises(ValidationError) as caught:
        _event(tki="nilotinib", reason=written)
    assert set(caught.value.messages) == {"reason"}
    assert "reason_text" in " ".join(caught.value.messages["reason"])


def test_free_text_goes_beside_the_code() -> None:
    loaded = _event(tki="nilotinib", reason="intolerance", reason_text="grade 3 rash, pleural effusion")
    assert loaded["reason"] == "intolerance"
    assert loaded["reason_text"] == "grade 3 rash, pleural effusion"


# ---- in the status: names resolved, stored unknown names flagged ----


def test_brand_at_registration_is_the_generic_in_the_status() -> None:
    """s.7: a registration stored as "Glivec" is imatinib (first generation) for every rule."""
    s = patient_status(registration(tki="Glivec"), [result("a", 900, is_percent=0.05)], [])
    assert s["therapy"]["current_tki"] == "imatinib"
    assert s["therapy"]["current_tki_class"] == FIRST_GENERATION
    assert s["unknown_tki"] == []
    assert s["actim_eligible"]["criteria"]["imatinib_2_years_stable_dose"]["met"] is True


def test_unknown_name_stored_before_the_table_is_flagged() -> None:
    """s.7 / issue s.3: a name stored before the vocabulary is flagged `unknown_tki` in the status."""
    events = [event("e1", "tki_changed", 100, tki="Sprycl", reason="intolerance")]
    s = patient_status(registration(tki="Gleevac"), [result("a", 900, is_percent=0.05)], events)
    assert s["unknown_tki"] == ["Gleevac", "Sprycl"]
    assert s["therapy"]["unknown_tki"] == ["Gleevac", "Sprycl"]


@pytest.mark.parametrize(("last_day", "met"), [(1461, False), (1462, None), (1826, None), (1827, True)])
def test_unknown_drug_tfr_duration_decided_only_where_4_and_5_years_agree(last_day: int, met: bool) -> None:
    """ELN 2020 TFR minimal (s.4, s.7): > 4 years for second generation, > 5 for imatinib; an unknown drug
    is decided only outside 1461-1826.25 days."""
    s = patient_status(registration(tki="Gleevac"), [result("a", last_day, is_percent=0.005)], [])
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is met


@pytest.mark.parametrize(
    ("tki", "last_day", "met"),
    [
        ("Glivec", 1826, False),
        ("Glivec", 1827, True),
        ("Tasigna", 1461, False),
        ("Tasigna", 1462, True),
        ("Sprycel 100 mg", 1462, True),
        ("Bosulif", 1461, False),
        ("Iclusig", 3000, None),
        ("Scemblix", 3000, None),
    ],
)
def test_tfr_duration_threshold_by_the_brand_written(tki: str, last_day: int, met: bool | None) -> None:
    """ELN 2020 TFR minimal (s.4, s.7): the brand selects its drug's threshold; no setting for ponatinib
    and asciminib (None, not decided)."""
    s = patient_status(registration(tki=tki), [result("a", last_day, is_percent=0.005)], [])
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is met
