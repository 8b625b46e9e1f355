"""The code table both wire formats share (shared/interop/codes.py) and LAB_CODES_FILE."""

from __future__ import annotations

import json

import pytest

from shared.interop.codes import (
    ANALYTES,
    CONTROL_ANALYTES,
    FHIR_RESULT_STATUS,
    HL7_RESULT_STATUS,
    IS_PERCENT_CODE,
    LOINC_SYSTEM,
    SERVICE_SYSTEM,
    CodeMap,
    LabCodesError,
    load_code_map,
    refused_status_reason,
)
from shared.schemas import CONTROL_GENES, RESULT_STATUSES, AssayResultSchema


def test_the_is_value_is_loinc_69380_4_and_the_rest_the_services_own() -> None:
    is_value = ANALYTES[IS_PERCENT_CODE]
    assert is_value.system == LOINC_SYSTEM and is_value.field == "is_percent"
    assert ANALYTES[IS_PERCENT_CODE].hl7_system == "LN"
    own = {c for c, a in ANALYTES.items() if a.system == SERVICE_SYSTEM}
    assert own == {"ABL1-COPIES", "GUSB-COPIES", "BCR-COPIES", "BCRABL1-COPIES", "IS-CF"}
    assert all(ANALYTES[c].hl7_system == "L" for c in own)


def test_every_code_fills_a_field_of_the_result_document() -> None:
    fields = set(AssayResultSchema().fields)
    assert {a.field for a in ANALYTES.values()} <= fields
    assert set(CONTROL_ANALYTES) == set(CONTROL_GENES)
    assert all(a.field == "control_copies" for a in CONTROL_ANALYTES.values())


def test_statuses_map_onto_the_services_and_preliminary_is_refused() -> None:
    assert set(HL7_RESULT_STATUS.values()) <= set(RESULT_STATUSES)
    assert set(FHIR_RESULT_STATUS.values()) == set(RESULT_STATUSES)
    assert HL7_RESULT_STATUS["D"] == HL7_RESULT_STATUS["W"] == "entered-in-error"
    assert "P" not in HL7_RESULT_STATUS and "preliminary" not in FHIR_RESULT_STATUS
    for preliminary in ("P", "preliminary"):
        assert "preliminary" in refused_status_reason(preliminary)
    assert "'X'" in refused_status_reason("X")


def test_lab_codes_add_to_the_defaults_and_nothing_is_guessed(tmp_path) -> None:
    path = tmp_path / "codes.json"
    path.write_text(json.dumps({"BCRABL-IS": "69380-4", "ABLCN": "ABL1-COPIES"}))
    codes = load_code_map(str(path))
    assert codes.analyte("BCRABL-IS") is ANALYTES["69380-4"]
    assert codes.analyte(" ABLCN ").control_gene == "ABL1"
    assert codes.analyte("69380-4") is ANALYTES["69380-4"]  # the defaults stay
    assert codes.analyte("69380-5") is None and codes.analyte("abl1-copies") is None
    assert load_code_map(None).analyte("BCRABL-IS") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"X": "MR4"}', "unknown service codes"),
        ('["69380-4"]', "JSON object"),
        ('{"X": 1}', "JSON object"),
        ("{not json", "codes.json"),
    ],
)
def test_a_bad_lab_codes_file_is_refused_at_start(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "codes.json"
    path.write_text(content)
    with pytest.raises(LabCodesError, match=message):
        load_code_map(str(path))
    with pytest.raises(LabCodesError):
        load_code_map(str(tmp_path / "missing.json"))


def test_code_map_refuses_a_target_that_is_not_a_service_code() -> None:
    with pytest.raises(LabCodesError):
        CodeMap({"A": "B"})


def test_a_service_code_is_taken_in_its_own_coding_system_only(tmp_path) -> None:
    path = tmp_path / "codes.json"
    path.write_text(json.dumps({"IS1": "69380-4", "69380-4X": "69380-4"}))
    codes = load_code_map(str(path))
    for system in (None, "LN", LOINC_SYSTEM):
        assert codes.analyte("69380-4", system) is ANALYTES["69380-4"]
    for system in (None, "L", "99LAB", SERVICE_SYSTEM):
        assert codes.analyte("ABL1-COPIES", system) is ANALYTES["ABL1-COPIES"]
    assert codes.analyte("69380-4", "L") is None and codes.analyte("ABL1-COPIES", "LN") is None
    assert (
        codes.analyte("IS1", "99LAB") is ANALYTES["69380-4"] and codes.analyte("IS1", "urn:lab") is not None
    )
    assert codes.analyte("IS1", SERVICE_SYSTEM) is None  # the service's system holds only its own codes
