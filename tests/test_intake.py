"""shared/intake.py, the one path every door stores results by (real Redis, real worker)."""

from __future__ import annotations

import redis

from shared import intake, store, work
from tests.support import register, result, wait_status


def test_a_failure_after_the_store_never_says_not_stored(app, client, r, pid, monkeypatch) -> None:
    """The results are stored (with their dirty marks) before the follow-up tasks are tracked: a Redis
    error there leaves no task to follow, but the submission stands and the sweeper recomputes."""
    register(client, pid)
    c = app.extensions["cml"]

    def broken(*args, **kwargs):
        raise redis.exceptions.ConnectionError("gone after the store")

    monkeypatch.setattr(work, "track_tasks", broken)
    docs = intake.validate_results([result(pid, f"{pid}-1", bcr_abl1_copies=5)])
    audit = intake.audit_record("tests", "test")
    done = intake.submit_results(c.redis, c.celery, docs, audit, intake.WritePolicy(task_ttl_s=60))
    assert done.tasks == [] and done.outcome.outcomes == ["created"]
    monkeypatch.undo()
    assert store.load_patient(r, pid).results[0]["result_id"] == f"{pid}-1"
    status = wait_status(client, pid, lambda d: d["results_count"] == 1, timeout=30)
    assert status["response_level"] == "MR4"
