"""FHIR writes: create, conditional create and update of one Observation, and transaction and batch Bundles
(http://hl7.org/fhir/R4/http.html#create, #cond-update, #transaction). Each goes through shared.intake, as
every door does: the result document is validated by the same schema and stored by the same atomic script.

- The identifier is the natural key: a plain POST of an Observation whose accession exists is a repeat (200
  if the content is identical), a replacement (status corrected/amended) or a withdrawal (entered-in-error),
  exactly as the JSON API does; a ``final`` with other content is a 409 conflict. PUT Observation/<id> and
  the conditional update (``PUT Observation?identifier=``) do the same and must name the Observation's own
  identifier (else 400).
- A conditional create (``If-None-Exist``, ``ifNoneExist``) never changes a stored result
  (http://hl7.org/fhir/R4/http.html#ccreate): criteria matching one answer 200 and nothing is written (no
  store, no audit entry); criteria matching none create the resource, but never over its stored accession
  (409). Criteria are ``identifier=[system|]value``, matched on the value (the system is not stored);
  other parameters are 400. Check and store are two steps: a create racing the same accession in between
  is stored as a plain POST would be.
- A transaction is all or nothing: every entry is mapped and validated, then all are stored by one
  submit_results call (one Lua script); one bad entry refuses the whole Bundle, naming it by FHIRPath
  (``Bundle.entry[2].resource.subject``), and nothing is stored. A batch takes each entry on its own, an
  entry the service does not take (another resource, DELETE, GET) answered 400 in its own response.
- Entries are POST Observation (optionally ``ifNoneExist``), PUT Observation/<id> or PUT
  Observation?identifier=...; ``request.url`` may be absolute (http://host/fhir/Observation). References
  between entries (urn:uuid fullUrls) are not resolved: the subject names the patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import redis
from celery import Celery

from shared import intake, keys, store
from shared.interop import fhir_read
from shared.interop.codes import CodeMap
from shared.interop.fhir import FhirInvalid, Issue, Mapped, observation_to_document, schema_issues
from shared.interop.fhir_out import observation, operation_outcome
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
    who: str
    what: str
    # Task records' lifetime, enqueue in the write's script, replicas to confirm (shared.intake).
    policy: intake.WritePolicy


@dataclass(frozen=True)
class Write:
    """How a resource is written: POST (``criteria``: If-None-Exist) or PUT (``criteria``: the conditional
    update's query, or ``result_id``: PUT Observation/<id>); ``where`` is the FHIRPath of the criteria."""

    method: str
    criteria: str | None = None
    where: str = "Observation"
    result_id: str | None = None


@dataclass
class Answer:
    status: int
    body: dict
    location: str | None = None
    notes: list[Issue] = field(default_factory=list)


def status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def criteria_id(query: str, where: str) -> str:
    """The result id named by If-None-Exist / conditional update criteria ``identifier=[system|]value``
    (``_format`` is ignored). The stored result keeps no identifier system, so the value alone is matched
    (http://hl7.org/fhir/R4/search.html#token); other parameters cannot be answered from the store: 400."""
    params = parse_qs(query, keep_blank_values=True)
    params.pop("_format", None)
    values = params.get("identifier", [])
    if set(params) != {"identifier"} or len(values) != 1 or not values[0].rpartition("|")[2]:
        raise FhirInvalid(
            400,
            [Issue("error", "not-supported", where, "the only criteria taken: identifier=[system|]value")],
        )
    return values[0].rpartition("|")[2]


def stored(door: Door, result_id: str) -> bool:
    return bool(door.r.hexists(keys.RESULT_INDEX, result_id))


def _refuse(status: int, code: str, where: str, text: str) -> FhirInvalid:
    return FhirInvalid(status, [Issue("error", code, where, text)])


def _plan_create(door: Door, resource: Any, criteria: str, where: str, base: str) -> Mapped | str:
    """Conditional create (http://hl7.org/fhir/R4/http.html#ccreate): a match is the stored result's id
    (the POST is ignored, nothing is written); no match creates, but never over a stored result."""
    named = criteria_id(criteria, where)
    if stored(door, named):
        return named
    mapped = observation_to_document(resource, door.codes, door.authority, base)
    own = mapped.doc["result_id"]
    if stored(door, own):
        raise _refuse(
            409,
            "conflict",
            mapped.paths["result_id"],
            f"the criteria {criteria!r} match nothing, but result {own} is stored:"
            " a conditional create does not change it (update it with PUT)",
        )
    return mapped


def _plan_update(door: Door, resource: Any, write: Write, base: str) -> Mapped:
    """Update by id or conditional update (http://hl7.org/fhir/R4/http.html#update, #cond-update): the
    result id is the identifier, so the URL must name the Observation's own."""
    mapped = observation_to_document(resource, door.codes, door.authority, base)
    own = mapped.doc["result_id"]
    if write.result_id is not None:
        body_id = resource.get("id") if isinstance(resource, dict) else None
        if own != write.result_id or body_id not in (None, write.result_id):
            raise _refuse(
                400,
                "invalid",
                mapped.paths["result_id"],
                f"PUT Observation/{write.result_id}: the Observation's id and identifier[0].value must be"
                f" {write.result_id!r}",
            )
    elif write.criteria is not None and criteria_id(write.criteria, write.where) != own:
        raise _refuse(
            400,
            "invalid",
            write.where,
            f"the criteria {write.criteria!r} must name the Observation's own identifier (the result id)",
        )
    return mapped


def plan(door: Door, resource: Any, write: Write, base: str) -> Mapped | str:
    """What a write does: store a mapped document, or (a str) nothing, its criteria matching that result."""
    if write.method == "POST" and write.criteria is not None:
        return _plan_create(door, resource, write.criteria, write.where, base)
    if write.method == "PUT":
        return _plan_update(door, resource, write, base)
    return observation_to_document(resource, door.codes, door.authority, base)


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
        return intake.submit_results(door.r, door.celery, docs, audit, door.policy)
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


def matched(door: Door, result_id: str, base: str, prefer: str = "") -> Answer:
    """200, nothing written: the criteria match a stored result (http://hl7.org/fhir/R4/http.html#ccreate).
    The body is that Observation with ``Prefer: return=representation``, else an OperationOutcome."""
    if "return=representation" in prefer:
        found = fhir_read.read(door.r, result_id)
        if found is not None:
            return Answer(200, observation(found), f"Observation/{result_id}")
    said = Issue(
        "information",
        "informational",
        base,
        f"Observation/{result_id} matches the criteria: the create was ignored, nothing was written",
    )
    return Answer(200, operation_outcome([said]), f"Observation/{result_id}")


def write_one(door: Door, resource: Any, write: Write, base: str = "Observation", prefer: str = "") -> Answer:
    """POST (If-None-Exist criteria), PUT Observation/<id> or conditional PUT of one Observation."""
    planned = plan(door, resource, write, base)
    if isinstance(planned, str):
        return matched(door, planned, base, prefer)
    docs = _validate([planned])
    done = _submit(door, [planned], docs)
    status, body = _done(docs[0], done.outcome.outcomes[0], done.tasks, planned.notes, base)
    return Answer(status, body, f"Observation/{docs[0]['result_id']}", planned.notes)


# An entry's request.url relative to the base (http://hl7.org/fhir/R4/bundle-definitions.html#Bundle.entry.request.url)
_ENTRY_URL = re.compile(r"(?P<type>[A-Za-z]+)(?:/(?P<id>[^/?#]+))?(?:\?(?P<query>.*))?")


def relative_url(url: str) -> str:
    """An absolute request.url as relative to the base: http://host/fhir/Observation?x -> Observation?x."""
    if not re.match(r"https?://", url):
        return url
    path, mark, query = url.partition("?")
    m = re.search(r"/(Observation(?:/[^/]+)?)$", path)
    return (m.group(1) if m else path) + mark + query


def entry_write(entry: Any, i: int) -> tuple[Any, Write] | Issue:
    """One Bundle entry as (resource, write), or the Issue saying why it cannot be taken."""
    where = f"Bundle.entry[{i}].request"
    req = entry.get("request") if isinstance(entry, dict) else None
    method, url = (req.get("method"), str(req.get("url", ""))) if isinstance(req, dict) else (None, "")
    m = _ENTRY_URL.fullmatch(relative_url(url))
    kind, rid, query = (m["type"], m["id"], m["query"]) if m else (None, None, None)
    query = "&".join(p for p in (query or "").split("&") if p and not p.startswith("_format="))
    if kind == "Observation" and method == "POST" and rid is None and not query:
        given = req.get("ifNoneExist")  # type: ignore[union-attr]
        criteria = str(given) if given else None
        return entry.get("resource"), Write("POST", criteria, f"{where}.ifNoneExist")
    if kind == "Observation" and method == "PUT" and (rid is None) == bool(query):
        return entry.get("resource"), Write("PUT", query or None, f"{where}.url", rid)
    return Issue(
        "error",
        "not-supported",
        where,
        "entries are POST Observation, PUT Observation/<id> or PUT Observation?identifier=...",
    )


def _entries(bundle: Any, limit: int) -> list[tuple[Any, Write] | Issue]:
    """Each entry of a transaction or batch Bundle as (resource, write), or the Issue refusing it."""
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
    return [entry_write(entry, i) for i, entry in enumerate(entries)]


def _refused(planned: list) -> FhirInvalid | None:
    issues = [i for p in planned if isinstance(p, FhirInvalid) for i in p.issues]
    if not issues:
        return None
    # 400 (not FHIR) outranks 409 and 422 (the service's rules)
    return FhirInvalid(min(p.status for p in planned if isinstance(p, FhirInvalid)), issues)


def _plan_entry(door: Door, i: int, entry: tuple[Any, Write] | Issue) -> Mapped | str | FhirInvalid:
    if isinstance(entry, Issue):
        return FhirInvalid(400, [entry])
    try:
        return plan(door, entry[0], entry[1], f"Bundle.entry[{i}].resource")
    except FhirInvalid as err:
        return err


def transaction(door: Door, bundle: dict, limit: int) -> Answer:
    """All or nothing (http://hl7.org/fhir/R4/http.html#trules): every entry validated, then one atomic
    store; an entry whose ifNoneExist matches is not written (200)."""
    planned = [_plan_entry(door, i, e) for i, e in enumerate(_entries(bundle, limit))]
    refused = _refused(planned)
    if refused is not None:
        raise refused
    mapped = [p for p in planned if isinstance(p, Mapped)]
    docs = _validate(mapped) if mapped else []
    done = _submit(door, mapped, docs) if mapped else None
    written = iter(zip(docs, done.outcome.outcomes if done else [], mapped, strict=True))
    response = []
    for i, p in enumerate(planned):
        base = f"Bundle.entry[{i}].resource"
        if isinstance(p, str):
            one = matched(door, p, base)
            code, body, rid = one.status, one.body, p
        else:
            doc, outcome, m = next(written)
            code, body = _done(doc, outcome, done.tasks if done else [], m.notes, base)
            rid = doc["result_id"]
        entry = {"status": status_line(code), "location": f"Observation/{rid}", "outcome": body}
        response.append({"response": entry})
    return Answer(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": response})


def batch(door: Door, bundle: dict, limit: int) -> Answer:
    """Each entry on its own (http://hl7.org/fhir/R4/http.html#brules): its own status and outcome, an
    entry the service does not take (another resource, DELETE, GET) included."""
    response = []
    for i, entry in enumerate(_entries(bundle, limit)):
        try:
            if isinstance(entry, Issue):
                raise FhirInvalid(400, [entry])
            one = write_one(door, entry[0], entry[1], f"Bundle.entry[{i}].resource")
            answer = {"status": status_line(one.status), "location": one.location, "outcome": one.body}
        except FhirInvalid as err:
            answer = {"status": status_line(err.status), "outcome": operation_outcome(err.issues)}
        response.append({"response": answer})
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
