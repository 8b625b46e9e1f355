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
    201: "Unsupported event code", 203: "Unsupported version id", 204: "Unknown key identifier",
    205: "Duplicate key identifier", 207: "Application internal error",
}  # fmt: skip

# The HTTP status a door answers with each ACK (POST /v1/hl7v2; README "HL7 v2 from the lab").
HTTP_STATUS = {"AA": 200, "AE": 422, "AR": 400}


@dataclass(frozen=True)
class Ack:
    text: str  # ER7, segments separated by CR
    code: str  # AA, AE or AR
    http_status: int
    retry: bool = False  # AR because the store is unavailable: re-send the message as is


def escape(text: str) -> str:
    """ER7 escapes (HL7 v2.5 section 2.7.4) for text written into the ACK, with the default delimiters
    the ACK declares; line breaks become spaces (a CR would end the segment)."""
    for char, seq in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, seq)
    return " ".join(text.splitlines())


def _err(issue: Issue, version: str) -> str:
    where = issue.location.erl() if issue.location else ""
    code = f"{issue.code}^{ERROR_TEXT.get(issue.code, '')}^HL70357"
    # v2.3/2.4 receivers read ERR-1 (ELD: segment^sequence^field^code&text&table); v2.5 deprecates it for
    # ERR-2 location, ERR-3 code, ERR-4 severity and ERR-8 user message.
    eld = f"{where}^{code.replace('^', '&')}" if version in ("2.3", "2.3.1", "2.4") and where else ""
    return f"ERR|{eld}|{where}|{code}|{issue.severity}||||{escape(issue.text)}"


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
    msh = "|".join([
        "MSH", "^~\\&", escape(header.receiving_app or "CML"), escape(header.receiving_facility),
        escape(header.sending_app), escape(header.sending_facility), now, "",
        "ACK^R01^ACK" if version >= "2.4" else "ACK^R01", uuid.uuid4().hex[:20], "P", version,
    ])  # fmt: skip
    segments = [msh, f"MSA|{code}|{escape(header.control_id)}"]
    segments += [_err(i, version) for i in issues]
    return Ack("\r".join(segments) + "\r", code, http_status or HTTP_STATUS[code], retry)


def build_batch_ack(acks: Sequence[Ack]) -> Ack:
    """A batch of ACKs (FHS/BHS ... BTS/FTS), one per message; the HTTP status is the worst one."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    body = "".join(a.text for a in acks)
    text = f"FHS|^~\\&|CML||||{now}\rBHS|^~\\&|CML||||{now}\r{body}BTS|{len(acks)}\rFTS|1\r"
    worst = max(acks, key=lambda a: a.http_status, default=None)
    code = worst.code if worst and worst.code != "AA" else "AA"
    return Ack(text, code, worst.http_status if worst else 200, any(a.retry for a in acks))
