"""refresh_cohort: a cohort's statistics from its members' follow-up records.

One refresh runs at a time per cohort (a lock); a refresh finding the lock taken retries after the
debounce. The document is swapped in with one script, with the data version it reflects.
"""

from __future__ import annotations

from celery import Task

from services.worker import app, settings
from services.worker.instrument import instrumented
from services.worker.redis_client import redis_client
from shared import cohort_store, cohorts, documents, work
from shared.queue import REFRESH_COHORT


@app.task(name=REFRESH_COHORT, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
@instrumented("cohort", REFRESH_COHORT)
def refresh_cohort(self: Task, cohort_id: str) -> str:
    r = redis_client()
    if not work.claim(r, "cohort", cohort_id):
        return "clean"
    token = cohort_store.acquire_lock(r, cohort_id, settings.cohort_lock_ttl_s)
    if token is None:
        raise self.retry(countdown=settings.cohort_debounce_s)
    try:
        with cohort_store.paused_gc():
            snap = cohort_store.load_cohort(r, cohort_id)
            data = cohorts.cohort_data(snap.records, snap.definition)
            doc, curve = documents.cohort_documents(snap, data)
        current = cohort_store.commit_cohort(
            r, cohort_id, snap.version, doc, cohort_store.encode_arrays(data, curve)
        )
    finally:
        cohort_store.release_lock(r, cohort_id, token)
    return "stale" if current > snap.version else "done"
