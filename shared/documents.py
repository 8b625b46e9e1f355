"""The documents the worker stores for readers: a patient's status and result timeline, a cohort's
statistics and curve.

All are built from the whole stored data every time (so recomputation is idempotent) by the rules in
:mod:`shared.clinical` and the estimators in :mod:`shared.stats`; this module adds the envelope
readers rely on: ``pending``, ``computed_at`` and the ``data_version`` the document reflects. The
timeline is stored as its envelope and classifications and built on read (:mod:`shared.timelines`).

``pending`` comes first, as ``{"pending":false,`` (orjson keeps insertion order and writes no
spaces): a later write flips it in place in Redis with one SETRANGE at a fixed offset, whatever the
document's size, so the read path can stay one GET of the stored bytes (``shared.store``,
``_PENDING``). Documents are always computed with ``pending: false``; only the store's scripts say
``true``, because only they know whether a write arrived meanwhile.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path

from shared import cohorts, timelines
from shared.clinical.scored import included_results, stored_entries
from shared.clinical.status import status_of_scored
from shared.cohort_store import CohortSnapshot
from shared.result_codec import decode_result, encode_result
from shared.store import PatientData


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def patient_documents(data: PatientData) -> tuple[dict, bytes, dict]:
    """(status document, stored timeline (shared.timelines), cohort follow-up record) of one patient.

    Every result is scored once per content (shared.clinical.scored.stored_entry, by its stored bytes)
    and the status, the timeline and the record fold those scores."""
    envelope = {
        "pending": False,  # first: see the module's docstring
        "patient_id": data.patient_id,
        "computed_at": _now(),
        "data_version": data.version,
    }
    raws = (x if isinstance(x, bytes) else encode_result(x) for x in data.results)
    entries = stored_entries(raws, partial(decode_result, patient_id=data.patient_id))
    scored, withdrawn = included_results(entries)
    status = {**envelope, **status_of_scored(data.registration, scored, withdrawn, data.events)}
    record = cohorts.follow_up_record_of_scored(data.registration, scored, data.events)
    return status, timelines.encode(envelope, entries), record


def cohort_documents(snap: CohortSnapshot, data: cohorts.CohortData) -> tuple[dict, dict]:
    """(statistics document at the default horizons, step curve) of one cohort."""
    envelope = {
        "pending": False,  # first: see the module's docstring
        "cohort_id": snap.cohort_id,
        "computed_at": _now(),
        "data_version": snap.version,
        "definition": snap.definition,
    }
    return {**envelope, **cohorts.statistics(data)}, {**envelope, **cohorts.curve(data)}


@cache
def rules_fingerprint() -> str:
    """A hash of the code every stored document is computed by (clinical rules, cohort definitions,
    estimators, these documents): when a deployment changes it, every patient is recomputed."""
    root = Path(__file__).resolve().parent
    files = sorted(
        [
            *root.glob("clinical/*.py"),
            *root.glob("stats/*.py"),
            root / "cohorts.py",
            root / "worklist.py",  # the worklist rows are made with each status
            root / "timelines.py",  # the stored timeline's layout
            root / "result_codec.py",  # how stored results read
            Path(__file__),
        ]
    )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()
