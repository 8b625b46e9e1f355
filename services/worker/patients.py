"""recompute_patient: a patient's status, timeline and cohort follow-up record, from the whole
stored history; recompute_patients: the same for several patients in turn (the results write sends
one message for the patients it finds with no task pending: Celery's per-message cost, paid once).

Idempotent and safe to run twice or concurrently: it recomputes from Redis (never increments), the
commit refuses to replace a newer status with an older one, and the dirty mark is cleared only if
no write arrived meanwhile (design-notes.md, "Tasks are hints; Redis state is the truth").
"""

from __future__ import annotations

import logging

import redis

from services.worker import app, settings
from services.worker.instrument import instrumented, run_instrumented
from services.worker.redis_client import redis_client
from shared import documents, store, work
from shared.queue import RECOMPUTE_PATIENT, RECOMPUTE_PATIENTS, REFRESH_COHORT, send

log = logging.getLogger(__name__)


def _recompute(r: redis.Redis, patient_id: str, cohorts: dict[str, None]) -> str:
    """One patient's recompute; the cohorts whose statistics it calls for are added to ``cohorts``."""
    dirty, data = work.claim_patient(r, patient_id)  # with the snapshot: one round trip
    if not dirty:
        return "clean"  # a duplicate: another task already reflected the latest write
    if data is None:
        return "unknown"
    status, timeline, record = documents.patient_documents(data)
    current, found = store.commit_status(r, data, status, timeline, record)
    cohorts.update(dict.fromkeys(found))
    # A newer write arrived while computing: it enqueued its own task when it found none pending.
    return "stale" if current > data.version else "done"


def _refresh(cohorts: dict[str, None]) -> None:
    for cohort_id in cohorts:
        # Debounced: the refresh reads the cohort after the burst has had time to land.
        send(app, REFRESH_COHORT, cohort_id, countdown=settings.cohort_debounce_s)


@app.task(name=RECOMPUTE_PATIENT, acks_late=True, reject_on_worker_lost=True)
@instrumented("patient", RECOMPUTE_PATIENT)
def recompute_patient(patient_id: str) -> str:
    cohorts: dict[str, None] = {}
    outcome = _recompute(redis_client(), patient_id, cohorts)
    _refresh(cohorts)
    return outcome


@app.task(name=RECOMPUTE_PATIENTS, acks_late=True, reject_on_worker_lost=True)
def recompute_patients(patient_ids: list[str]) -> dict[str, int]:
    """Each patient as recompute_patient would, counted and dead-lettered as its own task (ops see
    RECOMPUTE_PATIENT outcomes either way); a cohort is sent one refresh for the whole list. A transient
    failure (Redis or the broker gone) stops the list: the rest stay dirty, and the sweeper requeues
    them once Redis is back. Returns the outcomes' counts (never an id: the worker logs it)."""
    r = redis_client()
    cohorts: dict[str, None] = {}
    counts: dict[str, int] = {}
    for patient_id in patient_ids:
        outcome = run_instrumented(
            "patient", RECOMPUTE_PATIENT, patient_id, lambda p=patient_id: _recompute(r, p, cohorts)
        )
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "transient":
            break
    try:
        _refresh(cohorts)
    except Exception as exc:  # noqa: BLE001 - the cohorts are dirty: the sweeper sends their refresh
        log.warning(
            "%s: cohort refresh not sent (%s); the sweeper will", RECOMPUTE_PATIENTS, type(exc).__name__
        )
    return counts
