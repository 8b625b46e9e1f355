"""The codes of a BCR-ABL1 qPCR result on the wire, in one table for HL7 v2 and FHIR R4.

- LOINC 69380-4, "BCR-ABL1 b2a2+b3a2 fusion transcript/control transcript [# Ratio] in Blood or Tissue by
  Molecular genetics method (International Scale)", is the IS% value (https://loinc.org/69380-4).
- LOINC has no code for control-gene copies, BCR-ABL1 copies or the IS conversion factor, so they are coded in
  the service's own code system (SERVICE_SYSTEM). In HL7 v2 they are OBX-3 ``ABL1-COPIES^...^L`` (L: a local
  code, HL7 table 0396), in FHIR ``{"system": SERVICE_SYSTEM, "code": "ABL1-COPIES"}``.
- Laboratories use their own local codes: LAB_CODES_FILE (JSON: lab code -> one of the codes here) adds to the
  defaults. A code neither knows is never guessed: the door ignores it and names it in its answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOINC_SYSTEM = "http://loinc.org"
SERVICE_SYSTEM = "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr"
# The response levels the service scores (Cross 2015), as FHIR interpretation codes.
RESPONSE_SYSTEM = "https://cml-response.org/fhir/CodeSystem/molecular-response"
# HL7 v3 ObservationInterpretation: ND, "not detected" (FHIR R4 valueset observation-interpretation).
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM_SYSTEM = "http://unitsofmeasure.org"

IS_PERCENT_CODE = "69380-4"
# HL7 v2 table 0396 coding systems: LN is LOINC, L a local code (here: the service's own code system).
HL7_LOINC, HL7_LOCAL = "LN", "L"


@dataclass(frozen=True)
class Analyte:
    """One coded quantity and the result document field it fills."""

    code: str
    system: str
    display: str
    field: str  # is_percent, control_copies, bcr_abl1_copies or conversion_factor
    unit: str  # UCUM
    control_gene: str | None = None

    @property
    def hl7_system(self) -> str:
        return HL7_LOINC if self.system == LOINC_SYSTEM else HL7_LOCAL

    def named_by(self, system: str) -> bool:
        """Whether a coding system as sent is this code's own: its FHIR URI or its HL7 v2 name (LN for
        LOINC; for the service's codes L, or a 99zzz local system, HL7 table 0396)."""
        if self.system == LOINC_SYSTEM:
            return system in (LOINC_SYSTEM, HL7_LOINC)
        return system in (SERVICE_SYSTEM, HL7_LOCAL) or system.startswith("99")


ANALYTES: dict[str, Analyte] = {
    a.code: a
    for a in (
        Analyte(
            IS_PERCENT_CODE, LOINC_SYSTEM,
            "BCR-ABL1 b2a2+b3a2 fusion transcript/control transcript (International Scale)",
            "is_percent", "%",
        ),
        Analyte("ABL1-COPIES", SERVICE_SYSTEM, "ABL1 control transcript copies", "control_copies",
                "{copies}", "ABL1"),
        Analyte("GUSB-COPIES", SERVICE_SYSTEM, "GUSB control transcript copies", "control_copies",
                "{copies}", "GUSB"),
        Analyte("BCR-COPIES", SERVICE_SYSTEM, "BCR control transcript copies", "control_copies",
                "{copies}", "BCR"),
        Analyte("BCRABL1-COPIES", SERVICE_SYSTEM, "BCR-ABL1 transcript copies", "bcr_abl1_copies",
                "{copies}"),
        Analyte("IS-CF", SERVICE_SYSTEM, "International Scale conversion factor", "conversion_factor", "1"),
    )
}  # fmt: skip
CONTROL_ANALYTES = {a.control_gene: a for a in ANALYTES.values() if a.control_gene}

# HL7 v2 OBX-11 (table 0085) and FHIR Observation.status (required binding, ObservationStatus) to the
# service's result status. Preliminary results are refused: a status must not move on a result the
# laboratory has not released.
HL7_RESULT_STATUS = {"F": "final", "C": "corrected", "D": "entered-in-error", "W": "entered-in-error"}
FHIR_RESULT_STATUS = {
    "final": "final",
    "corrected": "corrected",
    "amended": "amended",
    "entered-in-error": "entered-in-error",
}
FHIR_OBSERVATION_STATUSES = (
    "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown",
)  # fmt: skip
# Back to the wire: the status a stored result is shown with.
STATUS_TO_HL7 = {"final": "F", "corrected": "C", "amended": "C", "entered-in-error": "W"}


def refused_status_reason(status: str) -> str:
    """Why a result status is not taken (HL7 P / FHIR preliminary, and any other)."""
    if status in ("P", "preliminary", "registered", "I", "R", "S"):
        return "preliminary results are not taken: send the result once final (F / final)"
    return (
        f"status {status!r} is not a released result: send F, C, D or W"
        " (final, corrected, amended, entered-in-error)"
    )


class LabCodesError(ValueError):
    """LAB_CODES_FILE is unreadable or maps a code to something that is not a service code."""


class CodeMap:
    """The service's codes plus a laboratory's own (LAB_CODES_FILE)."""

    def __init__(self, lab_codes: Mapping[str, str] | None = None) -> None:
        self.lab_codes = dict(lab_codes or {})
        unknown = {k: v for k, v in self.lab_codes.items() if v not in ANALYTES}
        if unknown:
            raise LabCodesError(
                f"lab codes mapped to unknown service codes {unknown}; map each to one of {sorted(ANALYTES)}"
            )

    def analyte(self, code: str, system: str | None = None) -> Analyte | None:
        """The analyte a code names: a service code in its own coding system (or with none named), then a
        laboratory's code in any system but the service's; None is never guessed. ``system`` is as the
        door read it: a FHIR URI, or an HL7 v2 coding system (table 0396: LN, L, 99zzz)."""
        code = code.strip()
        known = ANALYTES.get(code)
        if known is not None and (system is None or known.named_by(system)):
            return known
        if system == SERVICE_SYSTEM or code not in self.lab_codes:
            return None
        return ANALYTES[self.lab_codes[code]]


def load_code_map(path: str | None) -> CodeMap:
    """The defaults plus LAB_CODES_FILE (a JSON object: lab code -> service code)."""
    if not path:
        return CodeMap()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabCodesError(f"LAB_CODES_FILE {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise LabCodesError(f"LAB_CODES_FILE {path}: must be a JSON object of lab code -> service code")
    return CodeMap(data)


# Derived values the service shows on an Observation it sends (FHIR search and read), in its own code
# system: they are the service's scoring (shared/clinical), never read back from a message.
MR_VALUE_CODE = "MR-VALUE"  # log10(100 / IS%): the MR value (Cross 2015)
SENSITIVITY_CODE = "SENSITIVITY-IS"  # the IS% the sample could detect (Cross 2015 sample sensitivity)
DERIVED_CODES = {
    MR_VALUE_CODE: ("Molecular response value, log10 reduction from the IS baseline", "1"),
    SENSITIVITY_CODE: ("Sample sensitivity on the International Scale", "%"),
}
# The problem type (services/api/errors.py, /problems/<slug>) an OperationOutcome under /fhir carries.
PROBLEM_SYSTEM = "https://cml-response.org/problems"
