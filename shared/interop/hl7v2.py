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
from shared.interop.hl7_ack import CHARSETS, Ack, build_ack, build_batch_ack
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
    get,
    one_message,
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


def declared_charset(raw: bytes) -> str:
    """MSH-18 (character set, table 0211; section 2.15.9.18) of the first MSH, as sent: its first
    repetition, read with the field and repetition separators MSH-1/MSH-2 declare. "" when absent."""
    for line in raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        line = line.lstrip(b"\x00 \t\x0b\x1c")
        if line.startswith(b"MSH") and len(line) > 4:
            fields = line.split(line[3:4])  # fields[n - 1] is MSH-n (MSH-1 is the separator itself)
            repeat = fields[1][1:2] if len(fields) > 1 and len(fields[1]) > 1 else b"~"
            value = fields[17].split(repeat)[0] if len(fields) > 17 else b""
            return value.decode("ascii", "replace").strip()
    return ""


def to_text(raw: bytes | str, charset: str = "utf-8") -> str:
    """The message as text with CR segment separators, decoded in ``charset`` (the codec MSH-18 names);
    files and curl bodies often end segments with LF or CRLF, which python-hl7 (CR only, as HL7 says)
    would read as one segment."""
    if isinstance(raw, bytes):
        raw = raw.decode(charset)
    return raw.replace("\r\n", "\r").replace("\n", "\r").strip("\r\n\x00 \t\x0b\x1c")


def header_of(raw: bytes) -> Header:
    """The MSH of a body, as far as it can be read (an empty Header otherwise): for an ACK to name it."""
    try:
        return read_header(hl7.parse(to_text(raw, "latin-1")))
    except Exception:  # noqa: BLE001 - anything unreadable is simply not named
        return Header()


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
    if isinstance(exc, store.NotReplicated):  # WRITE_REPLICAS (issue 12): stored, not acknowledged
        log.warning("HL7 message stored, not replicated: %s of %s replicas", exc.confirmed, exc.wanted)
        text = (
            f"the result is stored on the primary but not yet replicated ({exc.confirmed} of {exc.wanted}"
            f" replicas confirmed it within {exc.timeout_ms} ms): send the message again (a re-send is"
            " safe: a stored result is answered as unchanged)"
        )
        return build_ack(header, "AR", [Issue(None, INTERNAL_ERROR, text), *warnings], 503, retry=True)
    log.warning("HL7 message not stored: store unavailable (%s)", type(exc).__name__)
    text = (
        "the service's store is unavailable: the result may not have been stored: send the message again"
        " (a re-send is safe: a stored result is answered as unchanged)"
    )
    return build_ack(header, "AR", [Issue(None, INTERNAL_ERROR, text), *warnings], 503, retry=True)


def _digest(msg: hl7.Message) -> str:
    """What makes a re-send the same message: all of it but MSH-7 (date/time of message, section
    2.14.9.7), which an engine's retry may stamp anew. Blanked in the parsed message, so escaped
    delimiters cannot shift it."""
    copy = hl7.parse(str(msg))
    msh = copy.segment("MSH")
    if len(msh) > 7:
        msh[7] = ""
    return hashlib.sha256(str(copy).encode()).hexdigest()


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
        intake.submit_results(r, celery, docs, audit, intake.WritePolicy.of(settings))
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
    rejected = one_message(msg) or check_header(header)
    if rejected:
        return build_ack(header, "AR", rejected)
    key = keys.hl7_ack(door.caller, header.sender, header.control_id)
    digest = _digest(msg)
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
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    declared = declared_charset(raw)
    if declared not in CHARSETS:  # MSH-18, table 0211: only the character sets this service reads
        text = f"character set {declared!r} is not taken: send UNICODE UTF-8, 8859/1, 8859/15 or ASCII"
        return build_ack(header_of(raw), "AR", [Issue(Location("MSH", 1, 18), 103, text)])
    try:
        text = to_text(raw, CHARSETS[declared])
    except UnicodeDecodeError:
        reason = f"the message is not {declared or 'UTF-8'} text, as MSH-18 declares"
        return build_ack(header_of(raw), "AR", [Issue(Location("MSH", 1, 18), 102, reason)])
    if not text.startswith(("FHS", "BHS")):
        return _handle_one(r, celery, text, door, settings, codes)
    return _handle_batch(r, celery, text, door, settings, codes)


def _handle_batch(
    r: redis.Redis, celery: Celery, text: str, door: Door, settings: Settings, codes: CodeMap
) -> Ack:
    """An FHS/BHS batch (HL7 v2.5 section 2.10.3): each message on its own, one ACK each."""
    try:
        file = hl7.parse_file(text) if text.startswith("FHS") else None
        batches = list(file) if file is not None else [hl7.parse_batch(text)]
        messages = [str(m) for b in batches for m in b]
    except Exception as exc:  # noqa: BLE001
        return build_ack(Header(), "AR", [Issue(None, 100, f"not an HL7 v2 batch: {exc}"[:200])])
    if not messages:
        return build_ack(Header(), "AR", [Issue(None, 100, "the batch holds no message")])
    # FHS-11/BHS-11, the file and batch control ids, echoed in the ACK batch's FHS-12/BHS-12.
    file_id = get(file.header, 11) if file is not None and file.header else ""
    batch_id = get(batches[0].header, 11) if batches[0].header else ""
    acks = [_handle_one(r, celery, m, door, settings, codes) for m in messages]
    return build_batch_ack(acks, file_id, batch_id)
