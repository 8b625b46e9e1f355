"""FHIR reads: a patient's results as the service scored them, searched (http://hl7.org/fhir/R4/search.html).

The classifications are the worker's (the stored timeline, shared/timelines.py). A result stored since the
timeline was computed (it says ``pending``) is scored from the stored document with the same function the
worker uses (shared.clinical.scored.score_result), so a search never misses an acknowledged write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

import redis

from shared import keys, store
from shared.clinical.timeline import parse_date
from shared.interop.codes import FHIR_OBSERVATION_STATUSES, IS_PERCENT_CODE, LOINC_SYSTEM
from shared.interop.fhir import FhirInvalid, Issue
from shared.schemas import ID_PATTERN

MAX_COUNT = 1000
_OBSERVATION_STATUSES = frozenset(FHIR_OBSERVATION_STATUSES)
# A date search value: a year, month, day or dateTime (http://hl7.org/fhir/R4/search.html#date)
_DATE = re.compile(
    r"(?P<op>eq|ne|gt|lt|ge|le|sa|eb)?(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?:Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_ID = re.compile(ID_PATTERN.removesuffix("$") + r"\Z")
# A patient reference: <id>, Patient/<id> or an absolute URL ending in Patient/<id>
_PATIENT_REF = re.compile(r"(?:https?://[^?#]*/)?Patient/(?P<id>[^/?#]+)")
Range = tuple[datetime, datetime]  # [start, end)


@dataclass
class Search:
    patient_id: str | None  # None: patient= and subject= name different patients (nothing matches)
    codes_match: bool  # False: a code= our Observations never carry (the answer is empty)
    dates: list[tuple[str, Range]]
    statuses: list[set[str]]  # each parameter an OR of statuses; the parameters are ANDed
    count: int
    offset: int
    identifiers: list[set[str]] = field(default_factory=list)  # result ids; each parameter an OR
    used: list[tuple[str, str]] = field(default_factory=list)  # the parameters applied, for the links


def _bad(param: str, text: str) -> FhirInvalid:
    return FhirInvalid(400, [Issue("error", "invalid", param, text)])


def _patient(value: str) -> str:
    m = _PATIENT_REF.fullmatch(value)
    pid = m["id"] if m else value
    if not _ID.match(pid):
        raise _bad("patient", "must be a patient id, Patient/<id> or a URL ending in Patient/<id>")
    return pid


def _patients(args: Mapping[str, list[str]]) -> tuple[str | None, list[tuple[str, str]]]:
    """patient= and its alias subject=Patient/<id>: one patient (AND: two different ones match nothing)."""
    given = [(name, v) for name in ("patient", "subject") for v in args.get(name, [])]
    if not given:
        raise _bad("patient", "search Observations of one patient: patient=<id> (or Patient/<id>)")
    ids = {_patient(v) for _, v in given}
    if len(ids) == 1:
        pid = ids.pop()
        return pid, [("patient", pid)]
    return None, given


def _date_range(m: re.Match) -> Range:
    """The implicit range of a date search value (http://hl7.org/fhir/R4/search.html#date)."""
    year, month, day = int(m["y"]), int(m["m"] or 1), int(m["d"] or 1)
    start = datetime(year, month, day)
    if m["time"]:  # a dateTime: compared on its wall clock as written, to its precision
        moment = datetime.fromisoformat(f"{m['y']}-{m['m']}-{m['d']}T{m['time']}")
        return moment, moment + (timedelta(minutes=1) if len(m["time"]) == 5 else timedelta(seconds=1))
    if m["d"]:
        return start, start + timedelta(days=1)
    if m["m"]:
        return start, datetime(year + month // 12, month % 12 + 1, 1)
    return start, datetime(year + 1, 1, 1)


def _dates(values: list[str]) -> list[tuple[str, Range]]:
    out = []
    for value in values:
        m = _DATE.fullmatch(value)
        try:
            out.append((m["op"] or "eq", _date_range(m)))  # type: ignore[index]
        except (TypeError, ValueError):
            raise _bad(
                "date", "must be [eq|ne|gt|lt|ge|le|sa|eb] and a year, YYYY-MM, YYYY-MM-DD or a dateTime"
            ) from None
    return out


def date_matches(op: str, search: Range, day: date) -> bool:
    """A day of collection [day, day+1) against a search range, by the prefix's rule
    (http://hl7.org/fhir/R4/search.html#prefix)."""
    (s0, s1), t0 = search, datetime(day.year, day.month, day.day)
    t1 = t0 + timedelta(days=1)
    contains, above, below = s0 <= t0 and t1 <= s1, t1 > s1, t0 < s0
    return {
        "eq": contains,
        "ne": not contains,
        "gt": above,
        "lt": below,
        "ge": above or contains,
        "le": below or contains,
        "sa": t0 >= s1,
        "eb": t1 <= s0,
    }[op]


def _statuses(values: list[str]) -> list[set[str]]:
    out = []
    for (
        value
    ) in values:  # status=final,entered-in-error: a comma is OR (http://hl7.org/fhir/R4/search.html#token)
        codes = {t.rpartition("|")[2] for t in value.split(",")}
        if not codes <= _OBSERVATION_STATUSES:
            raise _bad("status", f"must be ObservationStatus codes: {', '.join(FHIR_OBSERVATION_STATUSES)}")
        out.append(codes)
    return out


def _identifiers(values: list[str]) -> list[set[str]]:
    """identifier=[system|]value: the stored result keeps no identifier system, so the value alone is
    matched (http://hl7.org/fhir/R4/search.html#token); a comma is OR."""
    return [{t.rpartition("|")[2] for t in value.split(",")} for value in values]


def _number(args: Mapping[str, list[str]], name: str, default: int, top: int) -> int:
    values = args.get(name, [str(default)])
    if len(values) != 1 or not values[0].isdigit() or int(values[0]) > top:
        raise _bad(name, f"must be an integer from 0 to {top}")
    return int(values[0])


def parse_search(args: Mapping[str, list[str]]) -> Search:
    """The supported parameters (patient or subject, identifier, code, date, status, _count, _offset);
    others are ignored, as FHIR's lenient handling allows (http://hl7.org/fhir/R4/search.html#errors), and
    left out of the links."""
    pid, used = _patients(args)
    codes_match = True
    for value in args.get("code", []):
        # code=<code>, <system>|<code> or |<code>; a comma is OR (http://hl7.org/fhir/R4/search.html#token)
        codes_match &= any(
            t.rpartition("|")[2] == IS_PERCENT_CODE and t.rpartition("|")[0] in ("", LOINC_SYSTEM)
            for t in value.split(",")
        )
    used += [(name, v) for name in ("identifier", "code", "date", "status") for v in args.get(name, [])]
    q = Search(
        pid,
        codes_match,
        _dates(args.get("date", [])),
        _statuses(args.get("status", [])),
        _number(args, "_count", MAX_COUNT, MAX_COUNT),
        _number(args, "_offset", 0, 10**9),
        _identifiers(args.get("identifier", [])),
        used,
    )
    return q


def links(q: Search, total: int, base_url: str) -> list[tuple[str, str]]:
    """self, first, previous and next (http://hl7.org/fhir/R4/http.html#paging); paged by _offset."""

    def url(offset: int) -> str:
        return f"{base_url}/Observation?" + urlencode([*q.used, ("_count", q.count), ("_offset", offset)])

    out = [("self", url(q.offset)), ("first", url(0))]
    if q.offset > 0 and q.count > 0:
        out.append(("previous", url(max(q.offset - q.count, 0))))
    if q.count > 0 and q.offset + q.count < total:
        out.append(("next", url(q.offset + q.count)))
    return out


def patient_entries(r: redis.Redis, patient_id: str) -> tuple[list[dict], bool]:
    """(the patient's results with their classification in collection order, whether the worker's timeline
    was behind the stored results)."""
    return store.read_timeline_entries(r, patient_id)


def _matches(q: Search, entry: dict) -> bool:
    day = parse_date(entry["collected_at"])
    status = entry.get("status", "final")
    return (
        all(date_matches(op, rng, day) for op, rng in q.dates)
        and all(status in s for s in q.statuses)
        and all(entry["result_id"] in ids for ids in q.identifiers)
    )


def search(r: redis.Redis, q: Search) -> tuple[list[dict], int, bool]:
    """(the page of matches from _offset, at most _count, how many matched, behind)."""
    if not q.codes_match or q.patient_id is None:
        return [], 0, False
    entries, behind = patient_entries(r, q.patient_id)
    matches = [e for e in entries if _matches(q, e)]
    return matches[q.offset : q.offset + q.count], len(matches), behind


def read(r: redis.Redis, result_id: str) -> dict | None:
    """One result by its id (the laboratory's accession), with its classification; None if unknown."""
    index = r.hget(keys.RESULT_INDEX, result_id)
    if index is None:
        return None
    patient_id = index.decode().partition("|")[0]
    entries, _ = patient_entries(r, patient_id)
    return next((e for e in entries if e["result_id"] == result_id), None)
