"""Observation <-> result document (shared/interop/fhir.py, fhir_out.py), without Redis."""

from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.observation import Observation

from shared import intake
from shared.clinical.scored import score_result
from shared.interop.codes import (
    INTERPRETATION_SYSTEM,
    LOINC_SYSTEM,
    RESPONSE_SYSTEM,
    SERVICE_SYSTEM,
    CodeMap,
)
from shared.interop.fhir import FhirInvalid, observation_to_document, schema_issues
from shared.interop.fhir_out import capability_statement, observation
from shared.schemas import ValidationError

CODES = CodeMap({"LAB-BCRABL-IS": "69380-4", "LAB-ABL": "ABL1-COPIES"})


def component(code: str, value: float, system: str = SERVICE_SYSTEM, **q) -> dict:
    return {"code": {"coding": [{"system": system, "code": code}]}, "valueQuantity": {"value": value, **q}}


def obs(**over) -> dict:
    base = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "LAB-1"}],
        "code": {"coding": [{"system": LOINC_SYSTEM, "code": "69380-4"}]},
        "subject": {"reference": "Patient/P-1"},
        "effectiveDateTime": "2024-04-02",
        "valueQuantity": {"value": 0.05, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
        "component": [component("ABL1-COPIES", 100000)],
    }
    return {k: v for k, v in {**base, **over}.items() if v is not None}


def doc_of(resource: dict, codes: CodeMap = CODES, authority: str = "") -> dict:
    return observation_to_document(resource, codes, authority).doc


def refused(resource: dict, **kw) -> FhirInvalid:
    with pytest.raises(FhirInvalid) as err:
        observation_to_document(resource, CODES, **kw)
    return err.value


def test_is_percent_with_control_copies():
    assert doc_of(obs()) == {"result_id": "LAB-1", "patient_id": "P-1", "collected_at": "2024-04-02",
                             "status": "final", "control_gene": "ABL1", "control_copies": 100000.0,
                             "is_percent": 0.05}  # fmt: skip


def test_copies_are_the_result_and_the_control_gene_comes_from_the_code():
    resource = obs(
        valueQuantity=None,
        code={"coding": [{"system": "urn:panel", "code": "BCR-ABL1-PANEL"}]},
        component=[component("GUSB-COPIES", 80000), component("BCRABL1-COPIES", 40), component("IS-CF", 0.9)],
    )
    mapped = observation_to_document(resource, CODES)
    assert mapped.doc == {"result_id": "LAB-1", "patient_id": "P-1", "collected_at": "2024-04-02",
                          "status": "final", "control_gene": "GUSB", "control_copies": 80000.0,
                          "bcr_abl1_copies": 40.0, "conversion_factor": 0.9}  # fmt: skip
    # The panel code is not ours: ignored and named.
    assert [(n.severity, n.expression) for n in mapped.notes] == [("warning", "Observation.code")]
    # With an IS% beside the copies, the copies are stored and the answer says the IS% is not.
    both = observation_to_document(
        obs(component=[component("ABL1-COPIES", 1e5), component("BCRABL1-COPIES", 5)]), CODES
    )
    assert both.doc["bcr_abl1_copies"] == 5.0 and "is_percent" not in both.doc
    assert [n.expression for n in both.notes] == ["Observation.valueQuantity.value"]


def test_undetectable_with_control_copies_is_scored_as_zero_copies():
    resource = obs(
        valueQuantity={"value": 0.001, "comparator": "<", "unit": "%"},
        interpretation=[{"coding": [{"system": INTERPRETATION_SYSTEM, "code": "ND"}]}],
    )
    doc = doc_of(resource)
    assert doc["bcr_abl1_copies"] == 0.0 and "is_percent" not in doc and "is_percent_below" not in doc
    json_doc = {**doc, "bcr_abl1_copies": 0}
    [a], [b] = intake.validate_results([doc]), intake.validate_results([json_doc])
    assert score_result(a).classification == score_result(b).classification


def test_undetectable_without_control_copies_is_below_the_limit_never_mr4():
    doc = doc_of(obs(valueQuantity={"value": 0.001, "comparator": "<", "unit": "%"}, component=None))
    assert doc["is_percent_below"] == 0.001 and "control_copies" not in doc
    [stored] = intake.validate_results([doc])
    assert score_result(stored).classification.level == "MMR"


def test_laboratory_codes_map_and_unmapped_codes_are_named_not_guessed():
    resource = obs(
        code={"coding": [{"system": "urn:lab", "code": "LAB-BCRABL-IS"}]},
        component=[component("LAB-ABL", 50000, system="urn:lab"), component("XYZ", 7, system="urn:lab")],
    )
    mapped = observation_to_document(resource, CODES)
    assert mapped.doc["is_percent"] == 0.05 and mapped.doc["control_copies"] == 50000.0
    [warning] = mapped.notes
    assert warning.severity == "warning" and warning.expression == "Observation.component[1].code"
    assert "urn:lab|XYZ" in warning.diagnostics
    # Without LAB_CODES_FILE the lab code is unknown: ignored and named, so there is no IS% at all.
    bare = observation_to_document(resource, CodeMap())
    assert {n.expression for n in bare.notes} == {"Observation.code", "Observation.component[0].code",
                                                  "Observation.component[1].code"}  # fmt: skip
    with pytest.raises(ValidationError):
        intake.validate_results([bare.doc])


@pytest.mark.parametrize("status", ["final", "corrected", "amended", "entered-in-error"])
def test_released_statuses_are_taken(status):
    assert doc_of(obs(status=status))["status"] == status


@pytest.mark.parametrize("status", ["preliminary", "registered", "cancelled", "unknown"])
def test_unreleased_statuses_are_refused_with_the_reason(status):
    err = refused(obs(status=status))
    assert err.status == 422 and err.issues[0].expression == "Observation.status"
    if status == "preliminary":
        assert "preliminary results are not taken" in err.issues[0].diagnostics


def test_status_outside_the_required_binding_is_invalid_fhir():
    err = refused(obs(status="done"))
    assert err.status == 400 and err.issues[0].code == "code-invalid"


def test_subject_forms_and_the_patient_id_authority():
    ident = {"identifier": {"system": "urn:hospital", "value": "P-9"}}
    assert doc_of(obs(subject=ident))["patient_id"] == "P-9"
    assert doc_of(obs(subject=ident), authority="urn:hospital")["patient_id"] == "P-9"
    assert (
        doc_of(obs(subject={"identifier": {"value": "P-9"}}), authority="urn:hospital")["patient_id"] == "P-9"
    )
    err = refused(obs(subject=ident), authority="urn:other")
    assert err.issues[0].expression == "Observation.subject.identifier.system"
    assert (
        refused(obs(subject={"reference": "Group/G1"})).issues[0].expression
        == "Observation.subject.reference"
    )
    assert refused(obs(subject=None)).issues[0].expression == "Observation.subject"


def test_errors_name_the_element_by_fhirpath():
    bad = obs(valueQuantity={"value": "lots", "unit": "%"})
    bad["component"].append(component("BCRABL1-COPIES", "x"))
    err = refused(bad)
    assert err.status == 400
    assert {i.expression for i in err.issues} == {"Observation.valueQuantity.value",
                                                  "Observation.component[1].valueQuantity.value"}  # fmt: skip
    assert refused(obs(bogus=1)).issues[0].expression == "Observation.bogus"
    assert (
        refused(obs(identifier=[{"value": "has space"}])).issues[0].expression
        == "Observation.identifier[0].value"
    )
    assert refused(obs(identifier=None)).issues[0].expression == "Observation.identifier"
    unit = refused(obs(valueQuantity={"value": 0.1, "unit": "mg"}))
    assert unit.status == 422 and unit.issues[0].expression == "Observation.valueQuantity.unit"
    gt = refused(obs(valueQuantity={"value": 0.1, "unit": "%", "comparator": ">"}))
    assert gt.issues[0].expression == "Observation.valueQuantity.comparator"
    in_bundle = pytest.raises(FhirInvalid)
    with in_bundle as e:
        observation_to_document(obs(subject=None), CODES, base="Bundle.entry[2].resource")
    assert e.value.issues[0].expression == "Bundle.entry[2].resource.subject"


def test_schema_refusals_point_at_the_element_they_came_from():
    mapped = observation_to_document(obs(component=[component("ABL1-COPIES", 0)]), CODES)
    with pytest.raises(ValidationError) as err:
        intake.validate_results([mapped.doc])
    [issue] = schema_issues(err.value.messages[0], mapped.paths)
    assert (
        issue.expression == "Observation.component[0].valueQuantity.value"
        and "control_copies" in issue.diagnostics
    )
    partial = observation_to_document(obs(effectiveDateTime="2024-04"), CODES)
    with pytest.raises(ValidationError) as err:
        intake.validate_results([partial.doc])
    assert (
        schema_issues(err.value.messages[0], partial.paths)[0].expression == "Observation.effectiveDateTime"
    )


def test_obs6_and_obs7():
    err = refused(obs(dataAbsentReason={"text": "not done"}))
    assert err.status == 400 and err.issues[0].expression == "Observation.dataAbsentReason"
    assert "obs-6" in err.issues[0].diagnostics
    same = obs(
        component=[component("ABL1-COPIES", 1e5), component("69380-4", 0.05, system=LOINC_SYSTEM, unit="%")]
    )
    err = refused(same)
    assert (
        err.issues[0].expression == "Observation.component[1].code" and "obs-7" in err.issues[0].diagnostics
    )
    # obs-7 allows the same code when the Observation has no value of its own.
    del same["valueQuantity"]
    assert doc_of(same)["is_percent"] == 0.05


def test_effective_date_time_is_kept_as_the_json_api_stores_it():
    doc = doc_of(obs(effectiveDateTime="2024-02-05T09:30:00+01:00"))
    assert intake.validate_results([doc])[0]["collected_at"] == "2024-02-05T09:30:00+01:00"
    utc = intake.validate_results([doc_of(obs(effectiveDateTime="2024-02-05T09:30:00Z"))])[0]
    json_api = intake.validate_results([{**doc, "collected_at": "2024-02-05T09:30:00Z"}])[0]
    assert utc["collected_at"] == json_api["collected_at"]


def _entry(doc: dict) -> dict:
    withdrawn = doc["status"] == "entered-in-error"
    cls = None if withdrawn else score_result(doc).classification.to_dict()
    return {**doc, "withdrawn": withdrawn, "classification": cls}


@pytest.mark.parametrize(
    "sent",
    [
        {"is_percent": 0.05, "control_copies": 100000.0, "control_gene": "ABL1"},
        {
            "bcr_abl1_copies": 3.2,
            "control_copies": 100000.0,
            "control_gene": "GUSB",
            "conversion_factor": 0.8,
        },
        {"bcr_abl1_copies": 0.0, "control_copies": 80000.0, "control_gene": "BCR"},
        {"is_percent_below": 0.001},
        {"is_percent": 0.5, "control_copies": 5e4, "control_gene": "ABL1", "status": "entered-in-error"},
    ],
)
def test_scored_document_round_trips_through_an_observation(sent):
    [doc] = intake.validate_results(
        [{"result_id": "R-1", "patient_id": "P-1", "collected_at": "2024-01-05", **sent}]
    )
    out = observation(_entry(doc))
    Observation.model_validate(copy.deepcopy(out))  # a valid Observation
    back = observation_to_document(out, CodeMap())
    assert intake.validate_results([back.doc]) == [doc]
    if doc["status"] == "entered-in-error":
        assert out["status"] == "entered-in-error" and "interpretation" not in out
        return
    level = score_result(doc).classification.level
    assert out["interpretation"][0] == {
        "coding": [{"system": RESPONSE_SYSTEM, "code": level, "display": level}],
        "text": level,
    }
    codes = [c["code"]["coding"][0]["code"] for c in out["component"]]
    assert "MR-VALUE" in codes and "SENSITIVITY-IS" in codes
    undetectable = not score_result(doc).classification.detectable
    assert (out["valueQuantity"].get("comparator") == "<") is undetectable
    assert any(i["coding"][0]["code"] == "ND" for i in out["interpretation"]) is undetectable


def test_capability_statement_is_valid():
    cs = capability_statement("http://localhost/fhir")
    CapabilityStatement.model_validate(cs)
    assert cs["fhirVersion"] == "4.0.1" and cs["status"] == "active" and cs["format"] == ["json"]
    [rest] = cs["rest"]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    [res] = rest["resource"]
    assert res["conditionalCreate"] and res["conditionalUpdate"]
    names = {p["name"] for p in res["searchParam"]}
    assert names == {"patient", "subject", "identifier", "code", "date", "status", "_count", "_offset"}
    # update is PUT Observation/<id> (services/api/fhir.py); no _history, so no versioning is claimed
    assert res["versioning"] == "no-version" and "update" in {i["code"] for i in res["interaction"]}


def test_date_search_ranges_and_entry_urls():
    """http://hl7.org/fhir/R4/search.html#prefix on the day of collection; absolute request.url."""
    from datetime import date

    from shared.interop.fhir_read import date_matches, parse_search
    from shared.interop.fhir_write import relative_url

    def matches(value: str, day: str) -> bool:
        [(op, rng)] = parse_search({"patient": ["P-1"], "date": [value]}).dates
        return date_matches(op, rng, date.fromisoformat(day))

    assert matches("2024", "2024-12-31") and not matches("2024", "2025-01-01")
    assert matches("2024-02", "2024-02-29") and not matches("2024-02", "2024-03-01")
    assert matches("ge2024-03-01T12:00:00Z", "2024-03-01") and not matches("gt2024-03-01", "2024-03-01")
    assert not matches("eq2024-03-01T12:00:00Z", "2024-03-01")  # an instant does not contain a day
    assert matches("sa2024-02", "2024-03-01") and not matches("sa2024-02", "2024-02-29")
    assert matches("eb2024-02", "2024-01-31") and matches("ne2024-02", "2024-03-01")
    assert not matches("le2024-02-29", "2024-03-01") and matches("le2024-03-01T12:00:00Z", "2024-03-01")
    assert not matches("lt2024-03-01T00:00:00Z", "2024-03-01")  # nothing of the day is before it
    assert relative_url("http://host/fhir/Observation?identifier=x") == "Observation?identifier=x"
    assert relative_url("https://host/base/Observation/LAB-1") == "Observation/LAB-1"
    assert relative_url("Observation") == "Observation"
