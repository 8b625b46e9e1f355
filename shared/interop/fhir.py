"""FHIR R4 Observations in: one Observation is one result document (shared/schemas.py AssayResultSchema).

The shape taken (http://hl7.org/fhir/R4/observation.html):

- ``code`` is LOINC 69380-4 (or a laboratory code LAB_CODES_FILE maps to it) and ``valueQuantity`` the IS%
  (unit ``%``); ``component``s carry the control-gene copies (ABL1-COPIES, GUSB-COPIES or BCR-COPIES in the
  service's code system: the code names the control gene), BCRABL1-COPIES and IS-CF (shared/interop/codes.py).
- An Observation whose main code is not the IS% (a panel code, or none of ours) is taken when it has a
  BCRABL1-COPIES component: the result is then copies against the control copies.
- When BCR-ABL1 copies and control copies are both sent, the copies are the result (the service computes the
  IS% from them and the sample's sensitivity with it, Cross 2015); an IS% sent beside them is not stored and
  the answer says so (severity information).
- Undetectable: ``valueQuantity.comparator`` ``<`` with the detection limit (interpretation ``ND`` may say it
  too). With control copies it is ``bcr_abl1_copies: 0`` against them, scored exactly as the JSON API scores
  it (the stated limit is dropped: the copies set the sensitivity). An IS% ``<`` without control copies is
  ``is_percent_below: <limit>``, never scored MR4 or deeper (shared/clinical/response.py). Other comparators
  are refused.
- A code neither the service nor LAB_CODES_FILE knows is ignored and named in the answer (a warning issue),
  never guessed. The service's derived codes (MR-VALUE, SENSITIVITY-IS, interpretation) are ignored too:
  the service scores every result itself.
- ``status``: final, amended, corrected, entered-in-error are taken as they are; preliminary, registered,
  cancelled and unknown are refused with the reason (codes.refused_status_reason).
- The result id is the laboratory's accession: the first ``identifier``'s ``value``, held to the service's
  id alphabet (letters, digits and . _ : -). Its ``system`` is not part of the id (result ids are unique in
  the service, as in the JSON API), so criteria ``identifier=[system|]value`` are matched on the value.
- The patient: ``subject.reference`` ``Patient/<id>`` (or an absolute URL ending in it), or
  ``subject.identifier.value`` whose ``system``, when sent and PATIENT_ID_AUTHORITY is set, must be that
  authority.
- ``effectiveDateTime``: a day (YYYY-MM-DD) or a dateTime with its offset, stored as the JSON API stores
  ``collected_at``. Lab, assay and transcript are not read from FHIR.

Structure is validated by fhir.resources' R4B models: the 8.x line ships no R4 package, and R4B changed
nothing in Observation, Quantity, CodeableConcept or Reference, so an R4 Observation validates as R4B. What
those models leave out is checked here: the required binding of Observation.status (ObservationStatus) and
the invariants obs-6 (no dataAbsentReason beside a value) and obs-7 (no component code equal to the main
code when there is a main value). Failures of either are 400 (the resource fails basic FHIR validation,
http://hl7.org/fhir/R4/http.html#create); the service's own rules are 422. Every issue names its element by
FHIRPath (``Observation.component[1].valueQuantity.value``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pydantic
from fhir.resources.R4B.observation import Observation

from shared.interop.codes import (
    DERIVED_CODES,
    FHIR_OBSERVATION_STATUSES,
    FHIR_RESULT_STATUS,
    SERVICE_SYSTEM,
    UCUM_SYSTEM,
    Analyte,
    CodeMap,
    refused_status_reason,
)
from shared.interop.measurement import Value, measurement
from shared.schemas import ID_PATTERN

# Where a schema refusal points when the mapping did not record an element for the field.
_FIELD_PATHS = {
    "result_id": "identifier[0].value",
    "patient_id": "subject",
    "collected_at": "effectiveDateTime",
    "status": "status",
    "is_percent": "valueQuantity.value",
    "is_percent_below": "valueQuantity.value",
    "control_copies": "component",
    "control_gene": "component",
    "bcr_abl1_copies": "component",
    "conversion_factor": "component",
}


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue (http://hl7.org/fhir/R4/operationoutcome.html)."""

    severity: str  # fatal | error | warning | information
    code: str  # IssueType: invalid, structure, required, value, invariant, code-invalid, business-rule ...
    expression: str
    diagnostics: str

    def to_fhir(self) -> dict:
        return {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
            "expression": [self.expression],
        }


class FhirInvalid(Exception):
    """The resource is refused: 400 (fails FHIR validation) or 422 (the service's rules), with its issues."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__("; ".join(f"{i.expression}: {i.diagnostics}" for i in issues))
        self.status, self.issues = status, issues


@dataclass
class Mapped:
    """A result document (still to be validated by shared.intake) and what the mapping has to say."""

    doc: dict
    paths: dict[str, str]  # document field -> FHIRPath of the element it came from
    notes: list[Issue] = field(default_factory=list)
    identifier_system: str | None = None


def fhirpath(base: str, loc: tuple | list) -> str:
    """A pydantic error location as FHIRPath: ('component', 1, 'valueQuantity', 'value') ->
    ``Observation.component[1].valueQuantity.value``."""
    out = base
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-") and not str(part).startswith("__"):
            out += f".{part}"
    return out


def _structure(resource: dict, base: str) -> None:
    """fhir.resources validation (types, cardinality, unknown elements, primitive formats)."""
    try:
        Observation.model_validate(resource)
    except pydantic.ValidationError as err:
        issues = [
            Issue("error", "structure", fhirpath(base, e["loc"]), e["msg"])
            for e in err.errors(include_url=False)
        ]
        raise FhirInvalid(400, issues) from None
    except (ValueError, TypeError) as err:  # fhir_core raises plain errors for some shapes
        raise FhirInvalid(400, [Issue("error", "structure", base, str(err))]) from None


def _values(element: dict) -> list[str]:
    return [k for k in element if k.startswith("value") and k[5:6].isupper()]


def _codings(concept: Any) -> list[dict]:
    return [c for c in (concept or {}).get("coding", []) if isinstance(c, dict)]


def _invariants(resource: dict, base: str) -> None:
    """What the R4B models do not check: the status binding and obs-6 / obs-7."""
    issues = []
    status = resource.get("status")
    if status not in FHIR_OBSERVATION_STATUSES:
        # Required binding: http://hl7.org/fhir/R4/valueset-observation-status.html
        issues.append(
            Issue(
                "error",
                "code-invalid",
                f"{base}.status",
                f"{status!r} is not an ObservationStatus: one of {', '.join(FHIR_OBSERVATION_STATUSES)}",
            )
        )
    main_values = _values(resource)
    if main_values and "dataAbsentReason" in resource:
        # obs-6: dataAbsentReason SHALL only be present if Observation.value[x] is not present
        issues.append(
            Issue(
                "error",
                "invariant",
                f"{base}.dataAbsentReason",
                "obs-6: dataAbsentReason SHALL only be present if Observation.value[x] is not present",
            )
        )
    main = {(c.get("system"), c.get("code")) for c in _codings(resource.get("code"))}
    for i, comp in enumerate(resource.get("component") or []):
        if main_values and main & {(c.get("system"), c.get("code")) for c in _codings(comp.get("code"))}:
            # obs-7: a component code equal to the main code only when there is no main value
            issues.append(
                Issue(
                    "error",
                    "invariant",
                    f"{base}.component[{i}].code",
                    "obs-7: if Observation.code is the same as an Observation.component.code then the value "
                    "element associated with the code SHALL NOT be present",
                )
            )
        if _values(comp) and "dataAbsentReason" in comp:
            issues.append(
                Issue(
                    "error",
                    "invariant",
                    f"{base}.component[{i}].dataAbsentReason",
                    "dataAbsentReason SHALL only be present if component.value[x] is not present (obs-6)",
                )
            )
    if issues:
        raise FhirInvalid(400, issues)


def analyte_of(concept: Any, codes: CodeMap) -> tuple[Analyte | None, list[str]]:
    """The analyte a CodeableConcept names (its first coding that maps), and its codes as sent."""
    seen = []
    for c in _codings(concept):
        system, code = c.get("system"), str(c.get("code") or "")
        seen.append(f"{system}|{code}" if system else code)
        known = codes.analyte(code, system)
        if known is not None:
            return known, seen
    return None, seen


def _is_derived(concept: Any) -> bool:
    return any(
        c.get("system") == SERVICE_SYSTEM and c.get("code") in DERIVED_CODES for c in _codings(concept)
    )


class _Errors(list):
    def add(self, code: str, where: str, text: str) -> None:
        self.append(Issue("error", code, where, text))


def _quantity(q: dict, analyte: Analyte, where: str, errors: _Errors) -> tuple[float | None, bool]:
    """(value, below) of a valueQuantity: below is the comparator '<' of an undetectable result."""
    value = q.get("value")
    if value is None:
        errors.add("required", f"{where}.value", "a value is required")
        return None, False
    comparator = q.get("comparator")
    below = comparator == "<"
    if comparator is not None and not (below and analyte.field in ("is_percent", "bcr_abl1_copies")):
        errors.add(
            "not-supported",
            f"{where}.comparator",
            "only '<' (undetectable below the detection limit) on the IS% or BCR-ABL1 copies is taken",
        )
    if analyte.field == "is_percent":
        unit = q.get("code") if q.get("system") == UCUM_SYSTEM and q.get("code") else q.get("unit")
        if unit != "%":
            errors.add("value", f"{where}.unit", f"the IS% must be in % (UCUM '%'), not {unit!r}")
    return float(value), below


def _measurements(
    resource: dict, base: str, codes: CodeMap, notes: list[Issue], errors: _Errors
) -> list[Value]:
    """The coded values of the main value and the components (``where``: the FHIRPath of the value),
    unmapped codes noted."""
    found = []
    elements = [(resource, base)]
    elements += [(c, f"{base}.component[{i}]") for i, c in enumerate(resource.get("component") or [])]
    for element, where in elements:
        analyte, seen = analyte_of(element.get("code"), codes)
        has_value = bool(_values(element))
        if analyte is None:
            if _is_derived(element.get("code")):
                if has_value:
                    notes.append(
                        Issue(
                            "information",
                            "informational",
                            f"{where}.code",
                            "a value the service derives itself: ignored",
                        )
                    )
            else:  # named even without a value (a panel's code): nothing unknown passes silently
                notes.append(
                    Issue(
                        "warning",
                        "code-unknown",
                        f"{where}.code",
                        f"unmapped code {', '.join(seen) or '(none)'}: ignored (map it in LAB_CODES_FILE)",
                    )
                )
            continue
        if not has_value:
            continue
        if "valueQuantity" not in element:
            errors.add("value", f"{where}.value[x]", f"{analyte.code} must be a valueQuantity")
            continue
        value, below = _quantity(element["valueQuantity"], analyte, f"{where}.valueQuantity", errors)
        if value is not None:
            found.append(Value(analyte, value, below, f"{where}.valueQuantity.value"))
    return found


def _subject(resource: dict, base: str, authority: str, errors: _Errors) -> str | None:
    subject = resource.get("subject") or {}
    ref, ident = subject.get("reference"), subject.get("identifier")
    if ref is not None:
        # relative or absolute (http://hl7.org/fhir/R4/references.html#literal): the id is after Patient/
        m = re.fullmatch(r"(?:https?://[^?#]*/)?Patient/([^/?#]+)", str(ref))
        if m is None:
            errors.add(
                "value", f"{base}.subject.reference", "must be Patient/<id> or a URL ending in Patient/<id>"
            )
            return None
        return m.group(1)
    if isinstance(ident, dict) and ident.get("value") is not None:
        system = ident.get("system")
        if authority and system is not None and system != authority:
            errors.add(
                "business-rule",
                f"{base}.subject.identifier.system",
                f"patient identifiers of {system!r} are not the service's: use {authority!r}"
                " (PATIENT_ID_AUTHORITY)",
            )
            return None
        return str(ident["value"])
    errors.add("required", f"{base}.subject", "the patient is required: Patient/<id> or a patient identifier")
    return None


def observation_to_document(
    resource: Any, codes: CodeMap, authority: str = "", base: str = "Observation"
) -> Mapped:
    """One incoming Observation as a result document (FhirInvalid when refused). ``base`` is the FHIRPath of
    the resource (``Bundle.entry[2].resource`` in a Bundle)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        raise FhirInvalid(400, [Issue("error", "structure", base, "must be an Observation resource")])
    _structure(resource, base)
    _invariants(resource, base)
    errors, notes = _Errors(), []
    status = resource["status"]
    if status not in FHIR_RESULT_STATUS:
        errors.add("business-rule", f"{base}.status", refused_status_reason(status))
    idents = resource.get("identifier") or []
    first = idents[0] if idents else {}
    rid = first.get("value")
    if rid is None:
        errors.add(
            "required", f"{base}.identifier", "the laboratory's accession is required: identifier[0].value"
        )
    elif not re.fullmatch(ID_PATTERN.removesuffix("$") + r"\Z", rid):
        errors.add(
            "value",
            f"{base}.identifier[0].value",
            "the accession must be 1-64 characters: letters, digits and . _ : - (not first)",
        )
    pid = _subject(resource, base, authority, errors)
    if "effectiveDateTime" not in resource:
        errors.add("required", f"{base}.effective[x]", "effectiveDateTime (the collection time) is required")
    measured_values = _measurements(resource, base, codes, notes, errors)
    if errors:
        raise FhirInvalid(422, list(errors))
    doc: dict[str, Any] = {
        "result_id": rid,
        "patient_id": pid,
        "collected_at": resource["effectiveDateTime"],
        "status": FHIR_RESULT_STATUS[status],
    }
    paths = {"_": base, **{k: f"{base}.{v}" for k, v in _FIELD_PATHS.items()}}
    # What the values mean is decided once for every door (shared/interop/measurement.py).
    measured = measurement(measured_values)
    for note in measured.notes:
        if note.error:
            errors.add("business-rule", note.where, note.text)
        else:
            notes.append(Issue("information", "informational", note.where, note.text))
    if errors:
        raise FhirInvalid(422, list(errors))
    doc |= measured.fields
    paths |= measured.where
    return Mapped(doc, paths, notes, first.get("system"))


def schema_issues(messages: dict, paths: dict[str, str]) -> list[Issue]:
    """AssayResultSchema's refusals of one document ({field: [reasons]}) as issues naming FHIR elements."""
    issues = []
    for name, reasons in messages.items():
        where = paths.get(name) or paths.get("_", "Observation")  # "_schema": the resource itself
        texts = reasons if isinstance(reasons, list) else [str(reasons)]
        issues += [Issue("error", "business-rule", where, f"{name}: {t}") for t in texts]
    return issues
