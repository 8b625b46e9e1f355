"""recompute_patient: a patient's status, timeline and cohort follow-up record, from the whole
stored history.

Idempotent and safe to run twice or concurrently: it recomputes from Redis (never increments), the
commit refuses to replace a newer status with an older one, and the dirty mark is cleared only if
no write arrived meanwhile (design-notes.md, "Tasks are hints; Redis state is the truth").
"""

from __future__ import annotations

from services.worker import app, settings
from services.worker.instrument import instrumented
from services.worker.redis_client import redis_client
from shared import documents, store, work
from shared.queue import RECOMPUTE_PATIENT, REFRESH_COHORT, send


@app.task(name=RECOMPUTE_PATIENT, acks_late=True, reject_on_worker_lost=True)
@instrumented("patient", RECOMPUTE_PATIENT)
def recompute_patient(patient_id: str) -> str:
    r = redis_client()
    dirty, data = work.claim_patient(r, patient_id)  # with the snapshot: one round trip
    if not dirty:
        return "clean"  # a duplicate: another task already reflected the latest write
    if data is None:
        return "unknown"
    status, timeline, record = documents.patient_documents(data)
    current, cohorts = store.commit_status(r, data, status, timeline, record)
    for cohort_id in cohorts:
        # Debounced: the refresh reads the cohort after the burst has had time to land.
        send(app, REFRESH_COHORT, cohort_id, countdown=settings.cohort_debounce_s)
    # A newer write arrived while computing: it enqueued its own task when it found none pending.
    return "stale" if current > data.version else "done"
