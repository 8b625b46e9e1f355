"""FHIR R4 resources out: a scored result as an Observation, search Bundles, the CapabilityStatement and
OperationOutcomes (http://hl7.org/fhir/R4/observation.html, bundle.html, capabilitystatement.html,
operationoutcome.html).

An Observation shows a result as the service scored it (the worker's timeline document, shared/documents.py):
``interpretation`` carries the response level (RESPONSE_SYSTEM, the level as ``text``) and ``ND``
(v3 ObservationInterpretation) when undetectable; components carry the copies and conversion factor as sent
and the service's MR value (MR-VALUE, comparator ``>=`` when a lower bound) and sample sensitivity
(SENSITIVITY-IS). ``valueQuantity`` is the IS% (as sent, or computed from the copies), or ``<`` the
sensitivity when undetectable. A withdrawn result keeps its values, status entered-in-error, no
interpretation. Read back by shared/interop/fhir.py, it gives the stored document again.
"""

from __future__ import annotations

import math
import re
from typing import Any

from shared.interop.codes import (
    ANALYTES,
    CONTROL_ANALYTES,
    DERIVED_CODES,
    INTERPRETATION_SYSTEM,
    IS_PERCENT_CODE,
    LOINC_SYSTEM,
    MR_VALUE_CODE,
    PROBLEM_SYSTEM,
    RESPONSE_SYSTEM,
    SENSITIVITY_CODE,
    SERVICE_SYSTEM,
    UCUM_SYSTEM,
)
from shared.interop.fhir import Issue

FHIR_MIME = "application/fhir+json"
FHIR_VERSION = "4.0.1"
CAPABILITY_DATE = "2026-11-30"  # when this CapabilityStatement last changed

# OperationOutcome.issue.code (IssueType, http://hl7.org/fhir/R4/valueset-issue-type.html) of an HTTP error.
_ISSUE_TYPE = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    409: "conflict", 412: "conflict", 413: "too-costly", 415: "not-supported", 422: "processing",
    429: "throttled", 503: "transient",
}  # fmt: skip


def _coding(code: str) -> dict:
    a = ANALYTES.get(code)
    if a is not None:
        return {"system": a.system, "code": a.code, "display": a.display}
    return {"system": SERVICE_SYSTEM, "code": code, "display": DERIVED_CODES[code][0]}


def _quantity(value: float, unit: str, comparator: str | None = None) -> dict:
    q: dict[str, Any] = {"value": value}
    if comparator:
        q["comparator"] = comparator
    return q | {"unit": unit, "system": UCUM_SYSTEM, "code": unit}


def _component(code: str, value: float, unit: str, comparator: str | None = None) -> dict:
    return {"code": {"coding": [_coding(code)]}, "valueQuantity": _quantity(value, unit, comparator)}


def _effective(collected_at: str) -> str:
    # FHIR dateTime: a time needs its offset (http://hl7.org/fhir/R4/datatypes.html#dateTime); a stored
    # local time without one is shown as its day.
    if "T" in collected_at and not re.search(r"(Z|[+-]\d{2}:\d{2})$", collected_at):
        return collected_at[:10]
    return collected_at


def _value(entry: dict, cls: dict | None) -> dict | None:
    if cls is not None and not cls["detectable"]:
        return _quantity(cls["sensitivity_percent"], "%", "<")
    if cls is not None and cls.get("is_percent") is not None:
        return _quantity(cls["is_percent"], "%")
    if entry.get("is_percent") is not None:  # withdrawn: as sent
        return _quantity(entry["is_percent"], "%")
    if entry.get("is_percent_below") is not None:
        return _quantity(entry["is_percent_below"], "%", "<")
    return None


def observation(entry: dict) -> dict:
    """A timeline entry (a stored result with ``withdrawn`` and ``classification``) as an Observation."""
    rid, cls = entry["result_id"], entry.get("classification")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "identifier": [{"value": rid}],
        "status": entry.get("status", "final"),
        "code": {"coding": [_coding(IS_PERCENT_CODE)], "text": "BCR-ABL1/control (IS%)"},
        "subject": {"reference": f"Patient/{entry['patient_id']}"},
        "effectiveDateTime": _effective(entry["collected_at"]),
    }
    value = _value(entry, cls)
    if value is not None:
        obs["valueQuantity"] = value
    if cls is not None:
        level = cls["level"]
        interp = [{"coding": [{"system": RESPONSE_SYSTEM, "code": level, "display": level}], "text": level}]
        if not cls["detectable"]:
            interp.append(
                {"coding": [{"system": INTERPRETATION_SYSTEM, "code": "ND", "display": "Not detected"}]}
            )
        obs["interpretation"] = interp
        if cls.get("reason"):
            obs["note"] = [{"text": cls["reason"]}]
    components = []
    gene = entry.get("control_gene")
    if gene in CONTROL_ANALYTES and entry.get("control_copies") is not None:
        components.append(_component(CONTROL_ANALYTES[gene].code, entry["control_copies"], "{copies}"))
    if entry.get("bcr_abl1_copies") is not None:
        components.append(_component("BCRABL1-COPIES", entry["bcr_abl1_copies"], "{copies}"))
    if entry.get("conversion_factor") is not None and entry.get("is_percent_below") is None:
        components.append(_component("IS-CF", entry["conversion_factor"], "1"))
    if cls is not None:
        if cls.get("mr_value") is not None and math.isfinite(cls["mr_value"]):
            comparator = ">=" if cls.get("mr_value_is_lower_bound") else None
            components.append(_component(MR_VALUE_CODE, cls["mr_value"], "1", comparator))
        if cls.get("sensitivity_percent") is not None:
            components.append(_component(SENSITIVITY_CODE, cls["sensitivity_percent"], "%"))
    if components:
        obs["component"] = components
    return obs


def searchset(
    entries: list[dict], total: int, base_url: str, links: list[tuple[str, str]], notes: list[Issue]
) -> dict:
    """A searchset Bundle (http://hl7.org/fhir/R4/bundle.html#searchset) with its paging links
    (http://hl7.org/fhir/R4/http.html#paging); notes ride as an outcome entry."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": relation, "url": url} for relation, url in links],
        "entry": [
            {
                "fullUrl": f"{base_url}/Observation/{e['result_id']}",
                "resource": observation(e),
                "search": {"mode": "match"},
            }
            for e in entries
        ],  # fmt: skip
    }
    if notes:
        bundle["entry"].append({"resource": operation_outcome(notes), "search": {"mode": "outcome"}})
    return bundle


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def outcome_from_problem(status: int, slug: str, title: str, detail: str) -> dict:
    """An RFC 9457 problem of the app (auth, rate limit, store down, body limits) as an OperationOutcome: the
    problem type rides in issue.details (PROBLEM_SYSTEM), its detail in diagnostics."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error" if status < 500 else "fatal",
            "code": _ISSUE_TYPE.get(status, "exception"),
            "details": {"coding": [{"system": PROBLEM_SYSTEM, "code": slug}], "text": title},
            "diagnostics": detail,
        }],
    }  # fmt: skip


def capability_statement(base_url: str) -> dict:
    """What this server does (http://hl7.org/fhir/R4/capabilitystatement.html)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITY_DATE,
        "publisher": "CML molecular response service",
        "kind": "instance",
        "software": {"name": "cml-response"},
        "implementation": {"description": "BCR-ABL1 qPCR results of CML patients", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {"description": "Every interaction but metadata needs 'Authorization: Bearer <key>'"
                                        " (scopes results:write to write, status:read to read)."},
            "resource": [{
                "type": "Observation",
                "documentation": "One BCR-ABL1 qPCR result: LOINC 69380-4 (IS%) with copies as components"
                                 " in " + SERVICE_SYSTEM + ". The id is the laboratory's accession"
                                 " (identifier[0].value): PUT Observation/<id> and conditional"
                                 " update (PUT Observation?identifier=) need the Observation's own;"
                                 " If-None-Exist with a match writes nothing. Criteria: identifier=,"
                                 " matched on the value only (the system is not stored).",
                "interaction": [{"code": c} for c in ("read", "create", "update", "search-type")],
                "versioning": "no-version",
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalUpdate": True,
                "searchParam": [
                    {"name": "patient", "type": "reference",
                     "documentation": "<id>, Patient/<id> or a URL ending in Patient/<id>"},
                    {"name": "subject", "type": "reference", "documentation": "Patient/<id>: as patient"},
                    {"name": "identifier", "type": "token",
                     "documentation": "the accession; matched on the value (the system is not stored)"},
                    {"name": "code", "type": "token", "documentation": f"{LOINC_SYSTEM}|{IS_PERCENT_CODE}"},
                    {"name": "date", "type": "date",
                     "documentation": "the day of collection; eq ne gt lt ge le sa eb; year, month, day or"
                                      " dateTime (its wall clock as written)"},
                    {"name": "status", "type": "token", "documentation": "ObservationStatus; comma is OR"},
                    {"name": "_count", "type": "number", "documentation": "at most this many entries a page"},
                    {"name": "_offset", "type": "number",
                     "documentation": "skip this many matches (the next link carries it)"},
                ],
            }],
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }  # fmt: skip
