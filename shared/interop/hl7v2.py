"""HL7 v2 results in: one function for every door (POST /v1/hl7v2 and the MLLP listener).

``handle_message`` parses an ORU^R01 (or an FHS/BHS batch of them), turns each OBR group into a result
document (shared/interop/hl7_oru.py), validates and stores them through shared.intake, the one internal
path the JSON API uses too, and answers an ACK (shared/interop/hl7_ack.py) whose ERR segments name the
segment, field and reason of every refusal. Only after the store succeeded is a message answered AA.

A message re-sent with the same MSH-10 by the same sender (MSH-3/MSH-4) and caller gets the ACK it got
the first time, from Redis (keys.hl7_ack), and stores nothing again; the same control id with other
content is refused. Only AA answers are remembered: a refused message stored nothing, so a re-send after
the cause is fixed (a patient registered, Redis back) is handled afresh.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import hl7
import orjson
import redis
from celery import Celery

from shared import intake, keys, store
from shared.config import Settings
from shared.interop.codes import CodeMap
from shared.interop.hl7_ack import Ack, build_ack, build_batch_ack
from shared.interop.hl7_oru import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY,
    INTERNAL_ERROR,
    REQUIRED_MISSING,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    Header,
    Issue,
    Location,
    Parsed,
    check_header,
    parse_oru,
    read_header,
)
from shared.schemas import ValidationError

log = logging.getLogger(__name__)

# Where a field absent from the message should have been (OBR field numbers).
_OBR_FIELD = {"result_id": 3, "collected_at": 7, "status": 25}
_STORE_ISSUES = {
    "unknown_patient": ("patient_id", UNKNOWN_KEY, "patient {value} is not registered: register it first"),
    "patient_mismatch": ("result_id", DUPLICATE_KEY, "result {value} was received for another patient"),
    "conflict": (
        "result_id", DUPLICATE_KEY,
        "result {value} was already received with other content; send it with OBX-11 C to correct it",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Door:
    """Who is sending and through which door: the audit's who/what and the ACK memory's scope."""

    caller: str  # the API key name (HTTP) or MLLP_CALLER
    what: str  # e.g. "POST /v1/hl7v2" or "MLLP"


def to_text(raw: bytes | str) -> str:
    """The message as text with CR segment separators. UTF-8, or ISO 8859-1 when MSH-18 says so; files
    and curl bodies often end segments with LF or CRLF, which python-hl7 (CR only, as HL7 says) would
    read as one segment."""
    if isinstance(raw, bytes):
        first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
        latin = b"8859/1" in first or b"8859-1" in first
        raw = raw.decode("latin-1" if latin else "utf-8")
    return raw.replace("\r\n", "\r").replace("\n", "\r").strip("\r\n\x00 \t\x0b\x1c")


def _location(parsed: Parsed, index: int, name: str) -> Location:
    where = parsed.where[index]
    if name in where:
        return where[name]
    if name == "patient_id":
        return Location("PID", 1, 3)
    obr = where.get("result_id") or where.get("collected_at") or Location("OBR", index + 1, 3)
    return Location("OBR", obr.seq if obr.segment == "OBR" else index + 1, _OBR_FIELD.get(name, 4))


def _validation_issues(parsed: Parsed, err: ValidationError) -> list[Issue]:
    issues = []
    messages = err.messages if isinstance(err.messages, dict) else {0: {"_schema": err.messages}}
    for index, fields in messages.items():
        fields = fields if isinstance(fields, dict) else {"_schema": fields}
        for name, reasons in fields.items():
            text = "; ".join(str(r) for r in (reasons if isinstance(reasons, list) else [reasons]))
            if "required" in text:
                code = REQUIRED_MISSING
            else:
                code = TABLE_VALUE_NOT_FOUND if name in ("control_gene", "status") else DATA_TYPE_ERROR
            issues.append(Issue(_location(parsed, int(index), name), code, f"{name}: {text}"))
    return issues


def _store_issue(parsed: Parsed, err: store.StoreError) -> Issue:
    name, code, template = _STORE_ISSUES[err.code]
    return Issue(_location(parsed, err.index, name), code, template.format(value=err.value))


def _unavailable(header: Header, exc: Exception, warnings: list[Issue]) -> Ack:
    log.warning("HL7 message not stored: store unavailable (%s)", type(exc).__name__)
    text = "the result was NOT stored: the service's store is unavailable; send the message again"
    return build_ack(header, "AR", [Issue(None, INTERNAL_ERROR, text), *warnings], 503, retry=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _remembered(r: redis.Redis, key: str, digest: str, header: Header) -> Ack | None:
    raw = r.get(key)
    if raw is None:
        return None
    stored = orjson.loads(raw)
    if stored["digest"] != digest:
        text = (
            f"message control id {header.control_id} was already used for another message: use a new MSH-10"
        )
        return build_ack(header, "AE", [Issue(Location("MSH", 1, 10), DUPLICATE_KEY, text)], 409)
    return Ack(stored["text"], stored["code"], stored["http_status"])


def _store(r: redis.Redis, celery: Celery, parsed: Parsed, door: Door, settings: Settings) -> Ack:
    header, warnings = parsed.header, parsed.warnings
    if parsed.errors:
        return build_ack(header, "AE", [*parsed.errors, *warnings], 422)
    try:
        docs = intake.validate_results(parsed.docs)
    except ValidationError as err:
        return build_ack(header, "AE", [*_validation_issues(parsed, err), *warnings], 422)
    audit = intake.audit_record(
        door.caller, f"{door.what} {header.message_type}", result_ids=[d["result_id"] for d in docs],
        message_control_id=header.control_id,
    )  # fmt: skip
    try:
        intake.submit_results(r, celery, docs, audit, settings.task_ttl_s)
    except store.StoreError as err:
        issue = _store_issue(parsed, err)
        return build_ack(header, "AE", [issue, *warnings], 409 if issue.code == DUPLICATE_KEY else 422)
    return build_ack(header, "AA", warnings)


def _handle_one(
    r: redis.Redis, celery: Celery, text: str, door: Door, settings: Settings, codes: CodeMap
) -> Ack:
    try:
        msg = hl7.parse(text)
        header = read_header(msg)
    except Exception as exc:  # noqa: BLE001 - garbage of any shape is answered, never raised
        return build_ack(Header(), "AR", [Issue(None, 100, f"not an HL7 v2 message: {exc}"[:200])])
    rejected = check_header(header)
    if rejected:
        return build_ack(header, "AR", rejected)
    key = keys.hl7_ack(door.caller, header.sender, header.control_id)
    digest = _digest(text)
    try:
        parsed = parse_oru(msg, codes, settings.patient_id_authority)
    except Exception as exc:  # noqa: BLE001 - a message the parser cannot walk is refused, not a crash
        log.warning("HL7 message unreadable: %s", type(exc).__name__)
        return build_ack(header, "AR", [Issue(None, 100, "the message's segments could not be read")])
    try:
        again = _remembered(r, key, digest, header)
        if again is not None:
            return again
        ack = _store(r, celery, parsed, door, settings)
    except redis.exceptions.RedisError as exc:
        return _unavailable(header, exc, parsed.warnings)
    if ack.code == "AA":
        memo = {"digest": digest, "text": ack.text, "code": ack.code, "http_status": ack.http_status}
        try:
            # NX: of two concurrent copies, both stored the same content ("unchanged" the second time);
            # the ACK remembered is the first one's.
            r.set(key, orjson.dumps(memo), ex=settings.idempotency_ttl_s, nx=True)
        except redis.exceptions.RedisError as exc:  # the result is stored: its AA stands
            log.warning("could not remember an HL7 ACK: %s", type(exc).__name__)
    return ack


def handle_message(
    r: redis.Redis, celery: Celery, raw: bytes | str, door: Door, settings: Settings, codes: CodeMap
) -> Ack:
    """The ACK for one ER7 message, or a batch of ACKs for an FHS/BHS batch (each message on its own)."""
    try:
        text = to_text(raw)
    except UnicodeDecodeError:
        return build_ack(Header(), "AR", [Issue(None, 102, "the message is not UTF-8 (or 8859/1 by MSH-18)")])
    if not text.startswith(("FHS", "BHS")):
        return _handle_one(r, celery, text, door, settings, codes)
    try:
        batch = hl7.parse_file(text) if text.startswith("FHS") else [hl7.parse_batch(text)]
        messages = [str(m) for b in batch for m in b]
    except Exception as exc:  # noqa: BLE001
        return build_ack(Header(), "AR", [Issue(None, 100, f"not an HL7 v2 batch: {exc}"[:200])])
    if not messages:
        return build_ack(Header(), "AR", [Issue(None, 100, "the batch holds no message")])
    return build_batch_ack([_handle_one(r, celery, m, door, settings, codes) for m in messages])
