"""An HL7 v2 ORU^R01 message to the service's result documents, each field with where it came from.

Parsed with python-hl7 (``hl7`` 0.4.5), not string splitting: it reads the separators MSH-1/MSH-2 declare,
splits repetitions, components and subcomponents, and unescapes ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (HL7 v2.5
section 2.7) when a field is extracted. It is small and version-agnostic (2.3 to 2.5.1 parse alike), and its
asyncio MLLP helpers serve services/mllp. hl7apy was not chosen: it validates against per-version message
structures the service does not need (it reads ORU^R01 only) and is several times slower.

One OBR group (OBR and every OBX up to the next OBR) is one result; the PID before it names the patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import hl7

from shared.interop.codes import HL7_RESULT_STATUS, Analyte, CodeMap, refused_status_reason
from shared.interop.measurement import Value, measurement

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")

# HL7 v2 NM (section 2.A.47): an optional sign, digits with an optional decimal point; no exponent, no
# digit separators, no inf/nan (which float() would take).
NM_PATTERN = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")

# HL7 table 0357 (message error condition codes).
REQUIRED_MISSING, DATA_TYPE_ERROR, TABLE_VALUE_NOT_FOUND = 101, 102, 103
SEGMENT_SEQUENCE_ERROR, UNSUPPORTED_MESSAGE_TYPE, UNSUPPORTED_EVENT = 100, 200, 201
UNSUPPORTED_PROCESSING_ID, UNSUPPORTED_VERSION = 202, 203
UNKNOWN_KEY, DUPLICATE_KEY, INTERNAL_ERROR = 204, 205, 207


@dataclass(frozen=True)
class Location:
    """HL7 ERL (ERR-2, section 2.A.27): segment id, its occurrence in the message (1-based), field (0: the
    whole segment), component."""

    segment: str
    seq: int
    field: int = 0
    component: int = 0

    def erl(self) -> str:
        if not self.field:
            return f"{self.segment}^{self.seq}"
        base = f"{self.segment}^{self.seq}^{self.field}"
        return f"{base}^1^{self.component}" if self.component else base

    def eld(self) -> str:
        """The v2.3/2.4 ERR-1 location (ELD, section 2.A.25): segment^sequence^field, no component."""
        return f"{self.segment}^{self.seq}^{self.field or ''}"


@dataclass(frozen=True)
class Issue:
    location: Location | None
    code: int  # table 0357
    text: str
    severity: str = "E"  # E error, W warning, I information (table 0516)
    app_code: str = ""  # ERR-5 application error code (CWE, section 2.A.74), e.g. a problem type


@dataclass
class Header:
    control_id: str = ""  # MSH-10
    version: str = ""  # MSH-12
    sending_app: str = ""  # MSH-3
    sending_facility: str = ""  # MSH-4
    receiving_app: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_type: str = ""  # MSH-9, as CODE^EVENT
    processing_id: str = ""  # MSH-11 (table 0103: P production, T training, D debugging)
    charset: str = ""  # MSH-18 as sent (table 0211), "" when absent

    @property
    def event(self) -> str:
        """MSH-9.2, the trigger event (an ACK echoes it in its own MSH-9.2, section 2.9.2)."""
        return self.message_type.partition("^")[2]

    @property
    def sender(self) -> str:
        return f"{self.sending_app}^{self.sending_facility}"


@dataclass
class Parsed:
    header: Header
    docs: list[dict] = field(default_factory=list)
    # Per document: result document field -> where its value was read.
    where: list[dict[str, Location]] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    rejected: bool = False  # AR: the message itself (MSH) is not taken


def get(seg: hl7.Segment, num: int, comp: int = 1, rep: int = 1, sub: int = 1) -> str:
    """A (unescaped) value, "" when absent: optional fields and components are often left out."""
    try:
        return str(seg.extract_field(None, num, rep, comp, sub)).strip()
    except IndexError:
        return ""


def _repetitions(seg: hl7.Segment, num: int) -> int:
    if num >= len(seg):
        return 0
    value = seg(num)
    return len(value) if value and isinstance(value[0], hl7.Repetition) else 1


def read_header(msg: hl7.Message) -> Header:
    msh = msg.segment("MSH")
    kind = "^".join(p for p in (get(msh, 9, 1), get(msh, 9, 2)) if p)
    return Header(
        get(msh, 10), get(msh, 12), get(msh, 3), get(msh, 4), get(msh, 5), get(msh, 6), kind,
        get(msh, 11), get(msh, 18),
    )  # fmt: skip


def one_message(msg: hl7.Message) -> list[Issue]:
    """A second MSH outside an FHS/BHS batch (section 2.10.3): python-hl7 would read it as more segments of
    the first message, so the whole body is rejected and nothing of it stored."""
    if len(msg.segments("MSH")) < 2:
        return []
    text = "a second MSH outside a batch: send one message per frame or body, or an FHS/BHS batch"
    return [Issue(Location("MSH", 2), SEGMENT_SEQUENCE_ERROR, text)]


def check_header(header: Header) -> list[Issue]:
    """What makes the whole message rejected (AR): HL7 v2.5 section 2.9.2 checks MSH first."""
    issues = []
    if not header.control_id:
        issues.append(
            Issue(Location("MSH", 1, 10), REQUIRED_MISSING, "MSH-10 message control id is required")
        )
    if header.version not in SUPPORTED_VERSIONS:
        issues.append(Issue(
            Location("MSH", 1, 12), UNSUPPORTED_VERSION,
            f"version {header.version or '(none)'} is not taken: send 2.3 to 2.5.1",
        ))  # fmt: skip
    if header.processing_id not in ("", "P"):  # MSH-11, table 0103: only production results are stored
        issues.append(Issue(
            Location("MSH", 1, 11), UNSUPPORTED_PROCESSING_ID,
            f"processing id {header.processing_id}: training/debugging messages are not stored (send P)",
        ))  # fmt: skip
    code, _, event = header.message_type.partition("^")
    if code != "ORU":
        issues.append(Issue(
            Location("MSH", 1, 9), UNSUPPORTED_MESSAGE_TYPE,
            f"message type {header.message_type or '(none)'} is not taken: send ORU^R01",
        ))  # fmt: skip
    elif event != "R01":
        issues.append(Issue(Location("MSH", 1, 9, 2), UNSUPPORTED_EVENT, f"event {event!r}: send ORU^R01"))
    return issues


def hl7_time(value: str) -> str | None:
    """HL7 TS/DTM (``YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ]``) to ISO 8601: a date stays a date, a time keeps
    its offset (without one it stays a local date-time, as written)."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(\.\d{1,4})?)?([+-]\d{4})?", value)
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    if hh is None:
        return f"{year}-{month}-{day}"
    text = f"{year}-{month}-{day}T{hh}:{mm or '00'}:{ss or '00'}{frac or ''}"
    return text + (f"{zone[:3]}:{zone[3:]}" if zone else "")


def _patient(pid: hl7.Segment, seq: int, authority: str) -> tuple[str | None, Issue | None]:
    """PID-3: the identifier whose assigning authority (CX-4) is PATIENT_ID_AUTHORITY, else the first."""
    where = Location("PID", seq, 3)
    for rep in range(1, _repetitions(pid, 3) + 1):
        ident = get(pid, 3, 1, rep)
        names = {get(pid, 3, 4, rep, 1), get(pid, 3, 4, rep, 2)} - {""}
        if ident and (not authority or authority in names):
            return ident, None
    wanted = f" assigned by {authority} (CX-4)" if authority else ""
    return None, Issue(where, REQUIRED_MISSING, f"PID-3 holds no patient identifier{wanted}")


def _number(obx: hl7.Segment, seq: int) -> tuple[str, float | None, Issue | None]:
    """OBX-5 as (comparator, number): NM ``0.05``, SN ``<^0.0032`` or ``=^0.05`` (HL7 SN data type)."""
    kind = get(obx, 2)
    where = Location("OBX", seq, 5)
    if kind == "SN":
        comparator, text = get(obx, 5, 1), get(obx, 5, 2)
        if get(obx, 5, 3) or get(obx, 5, 4):
            return (
                "",
                None,
                Issue(where, DATA_TYPE_ERROR, "SN ranges and ratios are not taken: send one value"),
            )
    elif kind in ("NM", ""):
        comparator, text = "", get(obx, 5)
    else:
        return (
            "",
            None,
            Issue(Location("OBX", seq, 2), DATA_TYPE_ERROR, f"value type {kind!r}: send NM or SN"),
        )
    if comparator not in ("", "=", "<"):
        reason = f"comparator {comparator!r} is not taken: '<' (undetectable below a limit) or none"
        return "", None, Issue(where, DATA_TYPE_ERROR, reason)
    if not NM_PATTERN.fullmatch(text):  # checked before float(), which takes 1_000, 5E1, inf, nan
        reason = f"{text!r} is not an HL7 NM number (digits, an optional sign and decimal point)"
        return "", None, Issue(where, DATA_TYPE_ERROR, reason)
    return comparator.strip("="), float(text), None


@dataclass
class _Group:
    """One OBR and its OBX: the result being built."""

    obr_seq: int
    doc: dict
    where: dict[str, Location]
    statuses: list[tuple[str, int]] = field(default_factory=list)  # (OBX-11, OBX seq)
    values: list[Value] = field(default_factory=list)
    spm_time: bool = False


def _analyte(obx: hl7.Segment, codes: CodeMap) -> tuple[Analyte | None, str]:
    """OBX-3 (CE/CWE, section 2.A.8): the identifier in components 1-3, else the alternate identifier in
    components 4-6 (a local code first and LOINC second, say). Also the codings named, for a warning."""
    named = []
    for first in (1, 4):
        code, text, system = (get(obx, 3, first + i) for i in range(3))
        if not (code or system) and first == 4:
            continue
        analyte = codes.analyte(code, system or None)
        if analyte is not None:
            return analyte, ""
        named.append(f"{code or '(empty)'} ({text}, {system})")
    return None, " nor ".join(named)


def _fill(group: _Group, obx: hl7.Segment, seq: int, codes: CodeMap, out: Parsed) -> None:
    analyte, named = _analyte(obx, codes)
    if analyte is None:
        # Never guessed (shared/interop/codes.py): ignored, and named in the ACK as a warning.
        text = f"OBX-3 code {named} is not one this service knows: ignored"
        out.warnings.append(Issue(Location("OBX", seq, 3), TABLE_VALUE_NOT_FOUND, text, "W"))
        return
    group.statuses.append((get(obx, 11), seq))
    if not get(obx, 5) and get(obx, 11) in ("D", "W"):
        return  # a withdrawal need not repeat its value
    comparator, value, issue = _number(obx, seq)
    if issue:
        out.errors.append(issue)
        return
    group.values.append(Value(analyte, value, comparator == "<", Location("OBX", seq, 5)))


def _status(group: _Group, out: Parsed) -> None:
    codes = {s for s, _ in group.statuses}
    if len(codes) > 1:
        first = group.statuses[0][0]
        seq = next(q for s, q in group.statuses if s != first)
        text = (
            f"OBX-11 {codes - {first}} disagrees with {first!r} in the same OBR group: one status per result"
        )
        out.errors.append(Issue(Location("OBX", seq, 11), TABLE_VALUE_NOT_FOUND, text))
        return
    if not codes:
        loc = Location("OBR", group.obr_seq, 4)
        out.errors.append(Issue(loc, REQUIRED_MISSING, "the OBR group holds no OBX this service knows"))
        return
    code, seq = group.statuses[0]
    where = Location("OBX", seq, 11)
    if code not in HL7_RESULT_STATUS:
        out.errors.append(Issue(where, TABLE_VALUE_NOT_FOUND, refused_status_reason(code or "(empty)")))
        return
    group.doc["status"], group.where["status"] = HL7_RESULT_STATUS[code], where


def _finish(group: _Group, out: Parsed) -> None:
    _status(group, out)
    # What the values mean is decided once for every door (shared/interop/measurement.py).
    measured = measurement(group.values)
    group.doc |= measured.fields
    group.where |= measured.where
    for note in measured.notes:
        issue = Issue(note.where, DATA_TYPE_ERROR if note.error else 0, note.text, "E" if note.error else "I")
        (out.errors if note.error else out.warnings).append(issue)
    out.docs.append(group.doc)
    out.where.append(group.where)


def parse_oru(msg: hl7.Message, codes: CodeMap, authority: str) -> Parsed:
    """The result documents an ORU^R01 carries (errors and warnings listed, nothing raised)."""
    out = Parsed(read_header(msg))
    seen: dict[str, int] = {}
    patient: tuple[str | None, Location] | None = None
    group: _Group | None = None
    for seg in msg:
        sid = str(seg[0][0]).strip()
        seq = seen[sid] = seen.get(sid, 0) + 1
        if sid == "PID":
            ident, issue = _patient(seg, seq, authority)
            if issue:
                out.errors.append(issue)
            patient = (ident, Location("PID", seq, 3))
        elif sid == "OBR":
            if group:
                _finish(group, out)
            group = _start(seg, seq, patient, out)
        elif sid == "OBX" and group:
            _fill(group, seg, seq, codes, out)
        elif sid == "SPM" and group:
            collected = get(seg, 17, 1, 1, 1)
            if collected:
                _collected(group, collected, Location("SPM", seq, 17), out)
    if group:
        _finish(group, out)
    elif not out.errors:
        out.errors.append(Issue(Location("OBR", 1, 3), REQUIRED_MISSING, "the message holds no OBR"))
    return out


def _start(obr: hl7.Segment, seq: int, patient: tuple[str | None, Location] | None, out: Parsed) -> _Group:
    group = _Group(seq, {}, {})
    if patient is None:
        out.errors.append(Issue(Location("PID", 1, 3), REQUIRED_MISSING, "no PID before this OBR"))
    elif patient[0]:
        group.doc["patient_id"], group.where["patient_id"] = patient[0], patient[1]
    accession = get(obr, 3, 1)  # OBR-3 filler order number: the laboratory's accession
    if accession:
        group.doc["result_id"], group.where["result_id"] = accession, Location("OBR", seq, 3)
    else:
        out.errors.append(Issue(Location("OBR", seq, 3), REQUIRED_MISSING, "OBR-3 (accession) is required"))
    collected = get(obr, 7, 1)
    if collected:
        _collected(group, collected, Location("OBR", seq, 7), out)
    return group


def _collected(group: _Group, value: str, where: Location, out: Parsed) -> None:
    # SPM-17 (specimen collection date/time, v2.5) wins over OBR-7 when present.
    iso = hl7_time(value)
    if iso is None:
        out.errors.append(
            Issue(where, DATA_TYPE_ERROR, f"{value!r} is not an HL7 date/time (YYYYMMDD[HHMM...])")
        )
        return
    group.doc["collected_at"], group.where["collected_at"] = iso, where
