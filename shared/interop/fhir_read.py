"""FHIR reads: a patient's results as the service scored them, searched (http://hl7.org/fhir/R4/search.html).

The classifications are the worker's (the stored timeline, shared/timelines.py). A result stored since the
timeline was computed (it says ``pending``) is scored from the stored document with the same function the
worker uses (shared.clinical.scored.score_result), so a search never misses an acknowledged write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import redis

from shared import keys, store
from shared.clinical.timeline import parse_date
from shared.interop.codes import IS_PERCENT_CODE, LOINC_SYSTEM
from shared.interop.fhir import FhirInvalid, Issue
from shared.schemas import ID_PATTERN

MAX_COUNT = 1000
_DATE_OPS = {
    "eq": lambda d, v: d == v,
    "ge": lambda d, v: d >= v,
    "le": lambda d, v: d <= v,
    "gt": lambda d, v: d > v,
    "lt": lambda d, v: d < v,
}


@dataclass
class Search:
    patient_id: str
    codes_match: bool  # False: a code= our Observations never carry (the answer is empty)
    dates: list[tuple[str, date]]
    count: int


def _bad(param: str, text: str) -> FhirInvalid:
    return FhirInvalid(400, [Issue("error", "invalid", param, text)])


def parse_search(args: Mapping[str, list[str]]) -> Search:
    """The supported parameters (patient, code, date, _count); others are ignored, as FHIR's lenient
    handling allows (http://hl7.org/fhir/R4/search.html#errors)."""
    patients = args.get("patient") or args.get("subject") or []
    if len(patients) != 1:
        raise _bad("patient", "search Observations of one patient: patient=<id> (or Patient/<id>)")
    pid = patients[0].removeprefix("Patient/")
    if not re.fullmatch(ID_PATTERN.removesuffix("$") + r"\Z", pid):
        raise _bad("patient", "must be a patient id: letters, digits and . _ : -")
    codes_match = True
    for value in args.get("code", []):
        # code=<code>, <system>|<code> or |<code>; a comma is OR (http://hl7.org/fhir/R4/search.html#token)
        codes_match &= any(
            t.rpartition("|")[2] == IS_PERCENT_CODE and t.rpartition("|")[0] in ("", LOINC_SYSTEM)
            for t in value.split(",")
        )
    dates = []
    for value in args.get("date", []):
        m = re.fullmatch(r"(eq|ge|le|gt|lt)?(\d{4}-\d{2}-\d{2})", value)
        try:
            dates.append((m.group(1) or "eq", date.fromisoformat(m.group(2))))  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            raise _bad(
                "date", "must be [eq|ge|le|gt|lt]YYYY-MM-DD (compared with the day of collection)"
            ) from None
    counts = args.get("_count", [str(MAX_COUNT)])
    if len(counts) != 1 or not counts[0].isdigit() or not 0 <= int(counts[0]) <= MAX_COUNT:
        raise _bad("_count", f"must be an integer from 0 to {MAX_COUNT}")
    return Search(pid, codes_match, dates, int(counts[0]))


def patient_entries(r: redis.Redis, patient_id: str) -> tuple[list[dict], bool]:
    """(the patient's results with their classification in collection order, whether the worker's timeline
    was behind the stored results)."""
    return store.read_timeline_entries(r, patient_id)


def search(r: redis.Redis, q: Search) -> tuple[list[dict], int, bool]:
    """(the first _count matches, how many matched, behind)."""
    if not q.codes_match:
        return [], 0, False
    entries, behind = patient_entries(r, q.patient_id)
    matches = [
        e for e in entries if all(_DATE_OPS[op](parse_date(e["collected_at"]), d) for op, d in q.dates)
    ]
    return matches[: q.count], len(matches), behind


def read(r: redis.Redis, result_id: str) -> dict | None:
    """One result by its id (the laboratory's accession), with its classification; None if unknown."""
    index = r.hget(keys.RESULT_INDEX, result_id)
    if index is None:
        return None
    patient_id = index.decode().partition("|")[0]
    entries, _ = patient_entries(r, patient_id)
    return next((e for e in entries if e["result_id"] == result_id), None)
