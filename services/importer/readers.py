"""Reading an import file: its format and kind, and its rows with the byte offsets a checkpoint resumes from.

Formats: ``csv`` (a header row of the JSON API's field names), ``ndjson`` (the API's JSON, one document a
line), ``hl7`` (ER7 messages, plain or in FHS/BHS batches) and ``fhir`` (Bulk Data NDJSON: one Observation a
line). Every row carries the offset just past it, so "done up to byte N" is a place to continue from.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

FORMATS = ("csv", "ndjson", "hl7", "fhir")
KINDS = ("patients", "results", "events")

# Fields the API takes as JSON numbers (the Number fields of shared/schemas.py: tests/test_import.py checks
# this list against the schemas, so the command need not import them, and marshmallow, to start).
NUMBER_FIELDS = frozenset(
    {"control_copies", "bcr_abl1_copies", "is_percent", "conversion_factor", "is_percent_below", "dose_mg"}
)
# Fields that are lists: cells separated by ';'.
LIST_FIELDS = frozenset({"cohorts"})

_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_HL7_START = (b"MSH", b"FHS", b"BHS")
_CHUNK = 1 << 20
_EOL = re.compile(rb"\r\n|\r|\n")


class FormatError(ValueError):
    """The file is not of a format or kind the command reads (a usage error: exit 2)."""


@dataclass
class Row:
    number: int  # 1-based: the n-th data row (CSV header not counted), message or document of the file
    line: int  # the file's line where it starts (1-based; HL7: its MSH segment)
    start: int  # byte offsets of the row in the file
    end: int
    record: Any  # dict (CSV, NDJSON, FHIR) or str (an HL7 message, segments separated by CR)
    end_line: int = 0  # lines of the file up to its end (where reading resumes after it)
    error: str | None = None  # why the row could not be read; it is then rejected without being sent


@dataclass
class Position:
    """Where reading resumes: the byte offset, rows and lines before it."""

    offset: int = 0
    rows: int = 0
    lines: int = 0


def _first_bytes(path: str, n: int = 65536) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def detect_format(path: str) -> str:
    head = _first_bytes(path).removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(_HL7_START):
        return "hl7"
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0]
        try:
            doc = json.loads(first)
        except ValueError:
            return "ndjson"  # a line longer than the peek, or bad JSON: the rows will say
        return "fhir" if isinstance(doc, dict) and "resourceType" in doc else "ndjson"
    return "csv"


def kind_of_fields(fields: set[str]) -> str | None:
    """The kind a CSV header or a JSON document's keys name: results have result_id, events type and date,
    registrations a patient_id."""
    if "result_id" in fields:
        return "results"
    if {"type", "date"} <= fields:
        return "events"
    if "patient_id" in fields:
        return "patients"
    return None


def detect_kind(path: str, fmt: str) -> str:
    if fmt in ("hl7", "fhir"):
        return "results"
    if fmt == "csv":
        header = read_csv_header(path)[0]
        found = kind_of_fields(set(header))
    else:
        found = None
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        doc = json.loads(raw)
                    except ValueError:
                        break
                    found = kind_of_fields(set(doc)) if isinstance(doc, dict) else None
                    break
    if found is None:
        raise FormatError(f"cannot tell whether {path} holds patients, results or events: pass --kind")
    return found


def _csv_records(f: IO[bytes], pos: Position) -> Iterator[tuple[int, int, int, int, str]]:
    """(line, end line, start, end, text) of each CSV record from pos; a quoted cell may hold line breaks."""
    offset, line = pos.offset, pos.lines
    while True:
        raw = f.readline()
        if not raw:
            return
        start, first_line, parts = offset, line + 1, [raw]
        offset += len(raw)
        line += 1
        while b"".join(parts).count(b'"') % 2 == 1:  # inside a quoted cell: the record goes on
            more = f.readline()
            if not more:
                break
            parts.append(more)
            offset += len(more)
            line += 1
        yield first_line, line, start, offset, b"".join(parts).decode("utf-8", "replace")


def read_csv_header(path: str) -> tuple[list[str], int, int]:
    """The header's field names, the offset after it and its line count."""
    with open(path, "rb") as f:
        for _, last, _, end, text in _csv_records(f, Position()):
            if not text.strip():
                continue
            fields = next(csv.reader([text.removeprefix("\ufeff")]))
            names = [n.strip() for n in fields]
            if not any(names):
                break
            return names, end, last
    raise FormatError(f"{path}: no header row")


def _cell(name: str, text: str) -> Any:
    if name in LIST_FIELDS:
        return [v.strip() for v in text.split(";") if v.strip()]
    if name in NUMBER_FIELDS:
        s = text.strip()
        if _INT.match(s):
            return int(s)
        if _FLOAT.match(s):
            return float(s)
    return text


def csv_rows(path: str, pos: Position) -> Iterator[Row]:
    header, header_end, header_lines = read_csv_header(path)
    if pos.offset < header_end:
        pos = Position(header_end, 0, header_lines)
    number = pos.rows
    with open(path, "rb") as f:
        f.seek(pos.offset)
        for line, last, start, end, text in _csv_records(f, pos):
            if not text.strip():
                continue
            number += 1
            cells = next(csv.reader([text]), [])
            record = {n: _cell(n, c) for n, c in zip(header, cells, strict=False) if n and c.strip() != ""}
            error = None
            if len(cells) != len(header):
                error = f"the row has {len(cells)} cells, the header {len(header)}"
            yield Row(number, line, start, end, record, last, error)


def _json_lines(path: str, pos: Position) -> Iterator[tuple[int, int, int, bytes]]:
    offset, line = pos.offset, pos.lines
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            start = offset
            offset += len(raw)
            line += 1
            if raw.strip():
                yield line, start, offset, raw


def ndjson_rows(path: str, pos: Position, fhir: bool = False) -> Iterator[Row]:
    number = pos.rows
    for line, start, end, raw in _json_lines(path, pos):
        number += 1
        error = None
        try:
            record = json.loads(raw)
        except ValueError as exc:
            record, error = raw.decode("utf-8", "replace").rstrip("\r\n"), f"not JSON: {exc}"
        else:
            if not isinstance(record, dict):
                error = "not a JSON object"
            elif fhir and record.get("resourceType") != "Observation":
                error = f"not an Observation (resourceType {record.get('resourceType')!r})"
        yield Row(number, line, start, end, record, line, error)


def _segments(path: str, offset: int, lines: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(line, start, end, segment) of an ER7 file whose segments end with CR, LF or CRLF."""
    with open(path, "rb") as f:
        f.seek(offset)
        buf, base = b"", offset
        while True:
            chunk = f.read(_CHUNK)
            buf += chunk
            pos = 0
            while True:
                m = _EOL.search(buf, pos)
                if m is None or (m.group() == b"\r" and m.end() == len(buf) and chunk):
                    break  # a CR at the chunk's end may be half a CRLF: read on
                lines += 1
                yield lines, base + pos, base + m.end(), buf[pos : m.start()]
                pos = m.end()
            buf, base = buf[pos:], base + pos
            if not chunk:
                if buf.strip():
                    lines += 1
                    yield lines, base, base + len(buf), buf
                return


def hl7_rows(path: str, pos: Position) -> Iterator[Row]:
    """One row per message (MSH to the next MSH or batch segment); FHS/BHS/BTS/FTS are not rows."""
    number = pos.rows
    current: list[bytes] = []
    first_line = last_line = start = end = 0

    def message() -> Row:
        raw = b"\r".join(current)
        try:
            return Row(number, first_line, start, end, raw.decode("utf-8"), last_line)
        except UnicodeDecodeError as exc:
            error = f"not UTF-8 ({exc.reason} at byte {exc.start} of the message)"
            return Row(number, first_line, start, end, raw.decode("latin-1"), last_line, error)

    for line, s, e, seg in _segments(path, pos.offset, pos.lines):
        seg = seg.lstrip()
        name = seg[:3]
        if name in (b"MSH", b"FHS", b"BHS", b"BTS", b"FTS") and current:
            number += 1
            yield message()
            current = []
        if name == b"MSH":
            current, first_line, start = [seg], line, s
        elif current and seg.strip():
            current.append(seg)
        if current:
            end, last_line = e, line
    if current:
        number += 1
        yield message()


def rows(path: str, fmt: str, pos: Position) -> Iterator[Row]:
    if fmt == "csv":
        return csv_rows(path, pos)
    if fmt == "hl7":
        return hl7_rows(path, pos)
    return ndjson_rows(path, pos, fhir=fmt == "fhir")
