"""One rule for what coded values mean (shared/interop/measurement.py), and both doors keep to it: the same
values read from an HL7 v2 ORU and from a FHIR Observation give the same document and the same notes."""

from __future__ import annotations

import hl7
import pytest

from shared.interop.codes import ANALYTES, LOINC_SYSTEM, SERVICE_SYSTEM, CodeMap
from shared.interop.fhir import FhirInvalid, observation_to_document
from shared.interop.hl7_oru import parse_oru
from shared.interop.hl7v2 import to_text
from shared.interop.measurement import Value, measurement
from tests.interop.hl7_messages import oru

A = ANALYTES


def v(code: str, number: float, below: bool = False) -> Value:
    return Value(A[code], number, below, code)


@pytest.mark.parametrize(
    ("values", "fields", "notes"),
    [
        ([v("BCRABL1-COPIES", 50), v("ABL1-COPIES", 1e5)],
         {"bcr_abl1_copies": 50, "control_gene": "ABL1", "control_copies": 1e5}, []),
        ([v("69380-4", 0.05), v("GUSB-COPIES", 2e5), v("IS-CF", 0.9)],
         {"is_percent": 0.05, "control_gene": "GUSB", "control_copies": 2e5, "conversion_factor": 0.9}, []),
        # Copies win over an IS% beside them (the service computes the IS%), and the answer says so.
        ([v("69380-4", 0.05), v("BCRABL1-COPIES", 50), v("ABL1-COPIES", 1e5)],
         {"bcr_abl1_copies": 50, "control_gene": "ABL1", "control_copies": 1e5}, [("69380-4", False)]),
        # Undetectable against control copies: 0 copies, the stated limit dropped (and said).
        ([v("69380-4", 0.0032, below=True), v("ABL1-COPIES", 5e4)],
         {"bcr_abl1_copies": 0.0, "control_gene": "ABL1", "control_copies": 5e4}, [("69380-4", False)]),
        ([v("BCRABL1-COPIES", 1, below=True), v("ABL1-COPIES", 5e4)],
         {"bcr_abl1_copies": 0.0, "control_gene": "ABL1", "control_copies": 5e4}, []),
        # Without control copies: below the limit, sensitivity unknown.
        ([v("69380-4", 0.0032, below=True)], {"is_percent_below": 0.0032}, []),
        # Both undetectable: consistent, the copies stand.
        ([v("69380-4", 0.0032, below=True), v("BCRABL1-COPIES", 0), v("ABL1-COPIES", 5e4)],
         {"bcr_abl1_copies": 0, "control_gene": "ABL1", "control_copies": 5e4}, [("69380-4", False)]),
        # Contradictions and nonsense are refused, naming the value.
        ([v("69380-4", 0.0032, below=True), v("BCRABL1-COPIES", 5), v("ABL1-COPIES", 5e4)],
         {"bcr_abl1_copies": 5, "control_gene": "ABL1", "control_copies": 5e4}, [("69380-4", True)]),
        ([v("69380-4", 0.05), v("BCRABL1-COPIES", 0), v("ABL1-COPIES", 5e4)],
         {"bcr_abl1_copies": 0, "control_gene": "ABL1", "control_copies": 5e4}, [("69380-4", True)]),
        ([v("ABL1-COPIES", 5e4, below=True), v("BCRABL1-COPIES", 5)], {"bcr_abl1_copies": 5},
         [("ABL1-COPIES", True)]),
        ([v("ABL1-COPIES", 5e4), v("GUSB-COPIES", 5e4), v("BCRABL1-COPIES", 5)],
         {"bcr_abl1_copies": 5, "control_gene": "ABL1", "control_copies": 5e4}, [("GUSB-COPIES", True)]),
    ],
)  # fmt: skip
def test_what_coded_values_mean(values, fields, notes) -> None:
    m = measurement(values)
    assert m.fields == fields
    assert [(n.where, n.error) for n in m.notes] == notes
    assert all(m.where[name] in {x.where for x in values} for name in m.fields)


def _hl7(obx: list[str]):
    return parse_oru(hl7.parse(to_text(oru("P-1", "ACC-1", obx, collected="20240402"))), CodeMap(), "")


def _fhir(value: dict | None, components: list[tuple[str, float]]):
    resource = {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"value": "ACC-1"}],
        "code": {"coding": [{"system": LOINC_SYSTEM, "code": "69380-4"}]},
        "subject": {"reference": "Patient/P-1"}, "effectiveDateTime": "2024-04-02",
        "component": [
            {"code": {"coding": [{"system": SERVICE_SYSTEM, "code": c}]}, "valueQuantity": {"value": n}}
            for c, n in components
        ],
    }  # fmt: skip
    if value is not None:
        resource["valueQuantity"] = value
    return observation_to_document(resource, CodeMap())


IS_NM, IS_BELOW = "NM|69380-4^^LN||0.05|%|||||F", "SN|69380-4^^LN||<^0.0032|%|||||F"
BELOW = {"value": 0.0032, "comparator": "<", "unit": "%"}


def _copies(code: str, n: float) -> str:
    return f"NM|{code}^^L||{n}||||||F"


@pytest.mark.parametrize(
    ("obx", "value", "components", "error"),
    [
        ([IS_NM, _copies("BCRABL1-COPIES", 50), _copies("ABL1-COPIES", 100000)],
         {"value": 0.05, "unit": "%"}, [("BCRABL1-COPIES", 50), ("ABL1-COPIES", 100000)], False),
        ([IS_BELOW, _copies("GUSB-COPIES", 80000)], BELOW, [("GUSB-COPIES", 80000)], False),
        ([IS_BELOW, _copies("BCRABL1-COPIES", 5), _copies("ABL1-COPIES", 100000)],
         BELOW, [("BCRABL1-COPIES", 5), ("ABL1-COPIES", 100000)], True),
    ],
)  # fmt: skip
def test_both_doors_read_the_same_values_the_same_way(obx, value, components, error) -> None:
    by_hl7 = _hl7(obx)
    if error:
        assert [i.severity for i in by_hl7.errors] == ["E"] and by_hl7.errors[0].location.erl() == "OBX^1^5"
        with pytest.raises(FhirInvalid) as refused:
            _fhir(value, components)
        assert [i.expression for i in refused.value.issues] == ["Observation.valueQuantity.value"]
        return
    by_fhir = _fhir(value, components)
    assert by_hl7.errors == []
    assert by_hl7.docs == [{**by_fhir.doc, "patient_id": "P-1", "result_id": "ACC-1"}]
    assert [i.text for i in by_hl7.warnings] == [n.diagnostics for n in by_fhir.notes]
