"""HL7 v2 acknowledgments (original mode, HL7 v2.5 section 2.9.2): MSH, MSA and one ERR per problem.

MSA-1: AA accepted (and stored), AE an error in the content (nothing stored: fix and re-send), AR rejected
(the message header is not taken, or the service could not store it now: re-send as is).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.interop.hl7_oru import Header, Issue

# HL7 table 0357 code -> its text (ERR-3 is a CWE: code^text^HL70357).
ERROR_TEXT = {
    0: "Message accepted", 100: "Segment sequence error", 101: "Required field missing",
    102: "Data type error", 103: "Table value not found", 200: "Unsupported message type",
    201: "Unsupported event code", 202: "Unsupported processing id", 203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier", 207: "Application internal error",
}  # fmt: skip

# The HTTP status a door answers with each ACK (POST /v1/hl7v2; README "HL7 v2 from the lab").
HTTP_STATUS = {"AA": 200, "AE": 422, "AR": 400}
OLD_VERSIONS = ("2.3", "2.3.1", "2.4")  # ERR-1 (ELD) and MSA-3 still read (deprecated in 2.5)
# MSH-18 (table 0211) -> the codec a message is read and its ACK written in; "" is the default (UTF-8).
CHARSETS = {"": "utf-8", "UNICODE UTF-8": "utf-8", "8859/1": "iso-8859-1", "8859/15": "iso-8859-15",
            "ASCII": "us-ascii"}  # fmt: skip


@dataclass(frozen=True)
class Ack:
    text: str  # ER7, segments separated by CR
    code: str  # AA, AE or AR
    http_status: int
    retry: bool = False  # AR because the store is unavailable: re-send the message as is
    charset: str = "utf-8"  # the codec (and HTTP charset) of the ACK: the message's own (MSH-18)

    def encoded(self) -> bytes:
        """The ACK in the sender's character set (HL7 v2.5 section 2.15.9.18: MSH-18 of the ACK says it)."""
        return self.text.encode(self.charset, "replace")


def escape(text: str) -> str:
    """ER7 escapes (HL7 v2.5 section 2.7.4) for text written into the ACK, with the default delimiters
    the ACK declares; line breaks become spaces (a CR would end the segment)."""
    for char, seq in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, seq)
    return " ".join(text.splitlines())


def _err(issue: Issue, version: str) -> str:
    where = issue.location.erl() if issue.location else ""
    code = f"{issue.code}^{ERROR_TEXT.get(issue.code, '')}^HL70357"
    # v2.3/2.4 receivers read ERR-1 (ELD, section 2.A.25: segment^sequence^field^code&text&table), even
    # without a location; v2.5 deprecates it for ERR-2 location, ERR-3 code, ERR-4 severity, ERR-5
    # application error code and ERR-8 user message (section 2.15.5).
    eld = ""
    if version in OLD_VERSIONS:
        eld = f"{issue.location.eld() if issue.location else '^^'}^{code.replace('^', '&')}"
    return f"ERR|{eld}|{where}|{code}|{issue.severity}|{issue.app_code}|||{escape(issue.text)}"


def _msa(header: Header, code: str, issues: Sequence[Issue], version: str) -> str:
    """MSA (section 2.15.8); MSA-3 text message, deprecated in 2.5, carries the first error for 2.3/2.4."""
    msa = f"MSA|{code}|{escape(header.control_id)}"
    first = next((i for i in issues if i.severity == "E"), None)
    return f"{msa}|{escape(first.text)}" if version in OLD_VERSIONS and first else msa


def _message_type(header: Header, version: str) -> str:
    """MSH-9 of the ACK (section 2.9.2): ACK, the trigger event echoed, and from 2.4 the structure ACK."""
    event = escape(header.event)
    if not event:
        return "ACK"
    return f"ACK^{event}^ACK" if version not in ("2.3", "2.3.1") else f"ACK^{event}"


def build_ack(
    header: Header,
    code: str,
    issues: Sequence[Issue] = (),
    http_status: int | None = None,
    retry: bool = False,
) -> Ack:
    """The ACK of one message: sender and receiver swapped, MSA-2 its MSH-10 (empty if unreadable)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    version = header.version if header.version in ("2.3", "2.3.1", "2.4", "2.5", "2.5.1") else "2.5.1"
    fields = [
        "MSH", "^~\\&", escape(header.receiving_app or "CML"), escape(header.receiving_facility),
        escape(header.sending_app), escape(header.sending_facility), now, "",
        _message_type(header, version), uuid.uuid4().hex[:20], escape(header.processing_id or "P"), version,
    ]  # fmt: skip
    charset = CHARSETS.get(header.charset)
    if header.charset and charset:  # MSH-18: the ACK declares the character set it is written in
        fields += ["", "", "", "", "", escape(header.charset)]
    segments = ["|".join(fields), _msa(header, code, issues, version), *(_err(i, version) for i in issues)]
    text = "\r".join(segments) + "\r"
    return Ack(text, code, http_status or HTTP_STATUS[code], retry, charset or "utf-8")


def build_batch_ack(acks: Sequence[Ack], file_id: str = "", batch_id: str = "") -> Ack:
    """A batch of ACKs (FHS/BHS ... BTS/FTS, section 2.10.3), one per message; the HTTP status is the worst
    one. FHS-12/BHS-12 (reference file/batch control id) echo the incoming FHS-11/BHS-11."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    body = "".join(a.text for a in acks)

    def header(sid: str, ref: str) -> str:
        return f"{sid}|^~\\&|CML||||{now}||||{uuid.uuid4().hex[:20]}|{escape(ref)}\r"

    text = f"{header('FHS', file_id)}{header('BHS', batch_id)}{body}BTS|{len(acks)}\rFTS|1\r"
    worst = max(acks, key=lambda a: a.http_status, default=None)
    code = worst.code if worst and worst.code != "AA" else "AA"
    charset = acks[0].charset if acks else "utf-8"
    return Ack(text, code, worst.http_status if worst else 200, any(a.retry for a in acks), charset)
