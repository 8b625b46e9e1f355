"""FHIR writes: create, conditional create and update of one Observation, and transaction and batch Bundles
(http://hl7.org/fhir/R4/http.html#create, #cond-update, #transaction). Each goes through shared.intake, as
every door does: the result document is validated by the same schema and stored by the same atomic script.

- The identifier is the natural key: a POST of an Observation whose accession exists is a repeat (200 if
  the content is identical), a replacement (status corrected/amended) or a withdrawal (entered-in-error),
  exactly as the JSON API does; a ``final`` with other content is a 409 conflict. So ``If-None-Exist`` and
  ``PUT Observation?identifier=`` only have to name the Observation's own identifier (else 400).
- A transaction is all or nothing: every entry is mapped and validated, then all are stored by one
  submit_results call (one Lua script); one bad entry refuses the whole Bundle, naming it by FHIRPath
  (``Bundle.entry[2].resource.subject``), and nothing is stored. A batch stores each entry on its own.
- Entries are POST Observation (optionally ``ifNoneExist``) or PUT Observation?identifier=...; references
  between entries (urn:uuid fullUrls) are not resolved: the subject names the patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import redis
from celery import Celery

from shared import intake, store
from shared.interop.codes import CodeMap
from shared.interop.fhir import FhirInvalid, Issue, Mapped, observation_to_document, schema_issues
from shared.interop.fhir_out import operation_outcome
from shared.schemas import ValidationError

_STORE_ISSUES = {  # StoreError.code -> (HTTP status, IssueType, field, text), as the JSON API's answers
    "unknown_patient": (422, "business-rule", "patient_id", "patient {value} is not registered"),
    "patient_mismatch": (409, "conflict", "patient_id", "this identifier was received for another patient"),
    "conflict": (
        409,
        "conflict",
        "result_id",
        "result {value} was already received with other content;"
        " send status amended or corrected to replace it",
    ),
}


@dataclass
class Door:
    """What a write needs: the store, the queue, the code map and who is writing (for the audit)."""

    r: redis.Redis
    celery: Celery
    codes: CodeMap
    authority: str
    task_ttl_s: int
    who: str
    what: str


@dataclass
class Answer:
    status: int
    body: dict
    location: str | None = None
    notes: list[Issue] = field(default_factory=list)


def status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _criteria(query: str, mapped: Mapped, where: str) -> None:
    """If-None-Exist / conditional update criteria: identifier=[system|]value naming this Observation."""
    params = parse_qs(query, keep_blank_values=True)
    values = params.get("identifier", [])
    if set(params) != {"identifier"} or len(values) != 1:
        raise FhirInvalid(
            400,
            [Issue("error", "not-supported", where, "the only criteria taken: identifier=[system|]value")],
        )
    system, bar, value = values[0].rpartition("|")
    own_system = mapped.identifier_system
    if value != mapped.doc["result_id"] or (bar and system and system != own_system):
        raise FhirInvalid(
            400,
            [
                Issue(
                    "error",
                    "invalid",
                    where,
                    f"the criteria {values[0]!r} must name the Observation's own identifier",
                )
            ],
        )


def _map(door: Door, resource: Any, base: str, criteria: str | None, where: str) -> Mapped:
    mapped = observation_to_document(resource, door.codes, door.authority, base)
    if criteria is not None:
        _criteria(criteria, mapped, where)
    return mapped


def _validate(mapped: list[Mapped]) -> list[dict]:
    try:
        return intake.validate_results([m.doc for m in mapped])
    except ValidationError as err:
        messages = err.messages if isinstance(err.messages, dict) else {}
        issues = [i for idx, msgs in messages.items() for i in schema_issues(msgs, mapped[int(idx)].paths)]
        raise FhirInvalid(
            422, issues or [Issue("error", "invalid", "Observation", str(err.messages))]
        ) from None


def _submit(door: Door, mapped: list[Mapped], docs: list[dict]) -> intake.Submission:
    audit = intake.audit_record(door.who, door.what, result_ids=[d["result_id"] for d in docs])
    try:
        return intake.submit_results(door.r, door.celery, docs, audit, door.task_ttl_s)
    except store.StoreError as err:
        status, code, name, text = _STORE_ISSUES[err.code]
        where = mapped[err.index].paths[name]
        raise FhirInvalid(status, [Issue("error", code, where, text.format(value=err.value))]) from None


def _done(doc: dict, outcome: str, tasks: list[dict], notes: list[Issue], base: str) -> tuple[int, dict]:
    follow = "; ".join(f"recomputation {t['href']}" for t in tasks if t["patient_id"] == doc["patient_id"])
    said = Issue(
        "information",
        "informational",
        base,
        f"result {doc['result_id']} {outcome}" + (f" ({follow})" if follow else ""),
    )
    return (201 if outcome == "created" else 200), operation_outcome([said, *notes])


def write_one(door: Door, resource: Any, criteria: str | None = None, base: str = "Observation") -> Answer:
    """POST (criteria: If-None-Exist) or conditional PUT (criteria: the query) of one Observation."""
    mapped = _map(door, resource, base, criteria, base)
    docs = _validate([mapped])
    done = _submit(door, [mapped], docs)
    status, body = _done(docs[0], done.outcome.outcomes[0], done.tasks, mapped.notes, base)
    return Answer(status, body, f"Observation/{docs[0]['result_id']}", mapped.notes)


def _entries(bundle: Any, limit: int) -> list[tuple[Any, str | None, str]]:
    """[(resource, criteria, FHIRPath of the request)] of a transaction or batch Bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirInvalid(
            400, [Issue("error", "structure", "Bundle", "POST /fhir takes a transaction or batch Bundle")]
        )
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise FhirInvalid(400, [Issue("error", "required", "Bundle.entry", "the Bundle has no entries")])
    if len(entries) > limit:
        raise FhirInvalid(
            413,
            [
                Issue(
                    "error",
                    "too-costly",
                    f"Bundle.entry[{limit}]",
                    f"a Bundle holds at most {limit} entries (MAX_BATCH)",
                )
            ],
        )
    out, issues = [], []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}].request"
        req = entry.get("request") if isinstance(entry, dict) else None
        method, url = (req.get("method"), str(req.get("url", ""))) if isinstance(req, dict) else (None, "")
        path, _, query = url.partition("?")
        if method == "POST" and path == "Observation" and not query:
            out.append((entry.get("resource"), req.get("ifNoneExist"), f"{where}.ifNoneExist"))
        elif method == "PUT" and path == "Observation" and query:
            out.append((entry.get("resource"), query, f"{where}.url"))
        else:
            issues.append(
                Issue(
                    "error",
                    "not-supported",
                    where,
                    "entries are POST Observation or PUT Observation?identifier=...",
                )
            )
    if issues:
        raise FhirInvalid(400, issues)
    return out


def transaction(door: Door, bundle: dict, limit: int) -> Answer:
    """All or nothing: every entry validated, then one atomic store."""
    entries = _entries(bundle, limit)
    mapped, issues, status = [], [], 422
    for i, (resource, criteria, where) in enumerate(entries):
        try:
            mapped.append(_map(door, resource, f"Bundle.entry[{i}].resource", criteria, where))
        except FhirInvalid as err:
            issues += err.issues
            status = min(status, err.status)  # 400 (not FHIR) outranks 422 (the service's rules)
    if issues:
        raise FhirInvalid(status, issues)
    docs = _validate(mapped)
    done = _submit(door, mapped, docs)
    response = []
    for i, (doc, outcome, m) in enumerate(zip(docs, done.outcome.outcomes, mapped, strict=True)):
        code, body = _done(doc, outcome, done.tasks, m.notes, f"Bundle.entry[{i}].resource")
        response.append(
            {
                "response": {
                    "status": status_line(code),
                    "location": f"Observation/{doc['result_id']}",
                    "outcome": body,
                }
            }
        )
    return Answer(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": response})


def batch(door: Door, bundle: dict, limit: int) -> Answer:
    """Each entry on its own: its own status and outcome."""
    response = []
    for i, (resource, criteria, _) in enumerate(_entries(bundle, limit)):
        try:
            one = write_one(door, resource, criteria, f"Bundle.entry[{i}].resource")
            entry = {"status": status_line(one.status), "location": one.location, "outcome": one.body}
        except FhirInvalid as err:
            entry = {"status": status_line(err.status), "outcome": operation_outcome(err.issues)}
        response.append({"response": entry})
    return Answer(200, {"resourceType": "Bundle", "type": "batch-response", "entry": response})


def write_bundle(door: Door, bundle: Any, limit: int) -> Answer:
    kind = bundle.get("type") if isinstance(bundle, dict) else None
    if kind == "transaction":
        return transaction(door, bundle, limit)
    if kind == "batch":
        return batch(door, bundle, limit)
    _entries(bundle, limit)  # a structural refusal first, if any
    raise FhirInvalid(
        400, [Issue("error", "not-supported", "Bundle.type", "Bundle.type must be transaction or batch")]
    )
