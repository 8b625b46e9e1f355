"""recompute_patient: a patient's status and timeline, from the whole stored history.

Idempotent and safe to run twice or concurrently: it recomputes from Redis (never increments), the
commit refuses to replace a newer status with an older one, and the dirty mark is cleared only if
no write arrived meanwhile (design-notes.md, "Tasks are hints; Redis state is the truth").
"""

from __future__ import annotations

import logging

from services.worker import app
from services.worker.redis_client import redis_client
from shared import documents, store
from shared.queue import RECOMPUTE_PATIENT

log = logging.getLogger(__name__)


@app.task(name=RECOMPUTE_PATIENT, acks_late=True, reject_on_worker_lost=True)
def recompute_patient(patient_id: str) -> str:
    r = redis_client()
    if not store.claim_recompute(r, patient_id):
        return "clean"  # a duplicate: another task already reflected the latest write
    data = store.load_patient(r, patient_id)
    if data is None:
        return "unknown"
    status, timeline = documents.patient_documents(data)
    current = store.commit_status(r, patient_id, data.version, status, timeline)
    # A newer write arrived while computing: it enqueued its own task when it found none pending.
    return "stale" if current > data.version else "done"
