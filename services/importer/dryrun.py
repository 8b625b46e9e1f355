"""--dry-run: each row validated here, by the schemas the API validates with (shared/schemas.py), and for
HL7 v2 and FHIR by the same mapping the doors use (shared/interop); nothing is sent. What only the store
can tell (an unknown patient, a conflict with a stored result) is not checked."""

from __future__ import annotations

import os
import re
from typing import Any

from services.importer.readers import Row
from services.importer.senders import Outcome, rejected


def _flatten(messages: Any, path: tuple = ()) -> list[dict]:
    """marshmallow's messages as [{pointer, field, detail}], as the API's problem+json names them."""
    if isinstance(messages, dict):
        return [
            e
            for key, value in messages.items()
            for e in _flatten(value, path if key == "_schema" else (*path, key))
        ]
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        name = next((str(p) for p in reversed(path) if not isinstance(p, int)), "")
        return [{"pointer": "".join(f"/{p}" for p in path), "field": name, "detail": m} for m in messages]
    if isinstance(messages, list):
        return [e for i, m in enumerate(messages) for e in _flatten(m, (*path, i))]
    return [{"pointer": "".join(f"/{p}" for p in path), "field": "", "detail": str(messages)}]


class Validator:
    def __init__(self, kind: str, fmt: str):
        from shared import schemas

        self.kind, self.fmt, self.schemas = kind, fmt, schemas
        self.id_re = re.compile(schemas.ID_PATTERN.removesuffix("$") + r"\Z")
        if fmt in ("hl7", "fhir"):
            from shared.interop.codes import load_code_map

            self.codes = load_code_map(os.environ.get("LAB_CODES_FILE") or None)
            self.authority = os.environ.get("PATIENT_ID_AUTHORITY", "")

    def _load(self, schema: Any, doc: Any) -> list[dict]:
        try:
            schema.load(doc)
        except self.schemas.ValidationError as err:
            return _flatten(err.messages)
        return []

    def _with_patient(self, row: Row, schema: Any) -> list[dict]:
        rec = dict(row.record)
        pid = rec.pop("patient_id", None)
        reasons = []
        if not isinstance(pid, str) or not self.id_re.match(pid):
            reasons.append(
                {"pointer": "/patient_id", "field": "patient_id", "detail": "a valid patient_id is required"}
            )
        return reasons + self._load(schema, rec)

    def check(self, row: Row) -> Outcome:
        if row.error:
            return rejected(None, row.error)
        s = self.schemas
        if self.fmt == "hl7":
            reasons = self._hl7(row.record)
        elif self.fmt == "fhir":
            reasons = self._fhir(row.record)
        elif self.kind == "results":
            reasons = self._load(s.AssayResultSchema(), row.record)
        elif self.kind == "patients":
            reasons = self._with_patient(row, s.PatientSchema())
        else:
            reasons = self._with_patient(row, s.EventSchema())
        return Outcome("rejected", None, reasons) if reasons else Outcome("valid")

    def _docs(self, docs: list[dict]) -> list[dict]:
        reasons = []
        for i, doc in enumerate(docs):
            found = self._load(self.schemas.AssayResultSchema(), doc)
            reasons += [{**r, "pointer": f"/{i}{r['pointer']}"} if len(docs) > 1 else r for r in found]
        return reasons

    def _hl7(self, text: str) -> list[dict]:
        import hl7

        from shared.interop.hl7_oru import check_header, parse_oru, read_header

        try:
            msg = hl7.parse(text)
            issues = check_header(read_header(msg))
            parsed = parse_oru(msg, self.codes, self.authority) if not issues else None
        except Exception as exc:  # noqa: BLE001 - garbage of any shape is a rejected row
            return [{"pointer": "", "detail": f"not an HL7 v2 message: {exc}"[:200]}]
        if parsed is not None:
            issues = parsed.errors
        if issues:
            return [
                {"pointer": i.location.erl() if i.location else "", "severity": "E", "detail": i.text}
                for i in issues
            ]
        return self._docs(parsed.docs)

    def _fhir(self, resource: dict) -> list[dict]:
        from shared.interop.fhir import FhirInvalid, observation_to_document

        try:
            mapped = observation_to_document(resource, self.codes, self.authority)
        except FhirInvalid as err:
            return [{"pointer": i.expression, "detail": i.diagnostics} for i in err.issues]
        return self._docs([mapped.doc])
