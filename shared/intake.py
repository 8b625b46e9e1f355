"""The one way results come in. Every door (the JSON API, HL7 v2 over HTTP and MLLP, FHIR, the import tool)
turns its message into result documents, then calls `validate_results` and `submit_results`; each door only
translates the refusals back into its own idiom (problem+json pointer, HL7 ERR segment, FHIRPath).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from celery import Celery

from shared import store, work
from shared.config import Settings
from shared.queue import RECOMPUTE_PATIENT, RECOMPUTE_PATIENTS, REFRESH_COHORT, TaskMessages, same_redis, send
from shared.schemas import AssayResultSchema, ValidationError, duplicate_ids, fast_load_results

log = logging.getLogger(__name__)

# One schema for every request (building one costs more than loading a result with it).
_RESULTS = AssayResultSchema(many=True)


def validate_results(items: Sequence[dict]) -> list[dict]:
    """The canonical result documents, or ValidationError whose messages are {index: {field: [reasons]}}
    (a batch with any bad item is refused whole)."""
    items = list(items)
    loaded = fast_load_results(items)
    if loaded is None:  # something unusual or wrong: the schema decides, with its messages
        try:
            loaded = _RESULTS.load(items)
        except ValidationError as err:
            raise ValidationError(err.messages) from err
    dupes = duplicate_ids(loaded, "result_id")
    if dupes:
        raise ValidationError(dupes)
    return loaded


def audit_record(who: str, what: str, **ids: object) -> dict:
    """Who did what when, for the audit stream (written atomically with the data it describes)."""
    return {"who": who, "what": what, "when": datetime.now(UTC).isoformat(timespec="milliseconds"), **ids}


def enqueue(celery: Celery, task: str, item_id: str, task_id: str | None = None) -> None:
    """Send a task; the data and its dirty mark are already stored, so a failure is only logged:
    the worker's sweeper finds the dirty item and enqueues it."""
    try:
        send(celery, task, item_id, task_id=task_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure is recovered by the sweeper
        log.warning("enqueue failed (%s); the sweeper will requeue", type(exc).__name__)


def dispatch(r: redis.Redis, celery: Celery, outcome: store.WriteOutcome, task_ttl_s: int) -> list[dict]:
    """Track and enqueue the recomputations a write calls for; return how to follow them."""
    tracked = {uuid.uuid4().hex: (pid, v) for pid, v in outcome.versions.items()}
    work.track_tasks(r, tracked, task_ttl_s)
    fresh = set(outcome.to_enqueue)
    for task_id, (pid, _) in tracked.items():
        if pid in fresh:
            enqueue(celery, RECOMPUTE_PATIENT, pid, task_id=task_id)
    for cohort_id in outcome.cohorts_to_enqueue:
        enqueue(celery, REFRESH_COHORT, cohort_id)
    return _follow(tracked)


def task_messages(celery: Celery) -> TaskMessages:
    """The app's message builder (its templates are made once per app)."""
    found = getattr(celery, "_cml_task_messages", None)
    if found is None:
        found = celery._cml_task_messages = TaskMessages(celery)  # type: ignore[attr-defined]
    return found


def _follow(tracked: dict[str, tuple[str, int]]) -> list[dict]:
    return [
        {"task_id": t, "patient_id": pid, "data_version": v, "href": f"/v1/tasks/{t}"}
        for t, (pid, v) in tracked.items()
    ]


@dataclass(frozen=True)
class WritePolicy:
    """How a door's write is stored and followed, from the configuration: how long its task records
    are kept (TASK_TTL_S), whether the store's own script enqueues the recomputes (the broker is this
    Redis: queue.same_redis), and how many replicas must confirm it (WRITE_REPLICAS, issue 12)."""

    task_ttl_s: int
    follow_in_script: bool = False
    replication: store.Replication = store.NO_REPLICATION

    @classmethod
    def of(cls, settings: Settings) -> WritePolicy:
        return cls(settings.task_ttl_s, same_redis(settings), store.Replication.of(settings))


@dataclass
class Submission:
    outcome: store.WriteOutcome
    tasks: list[dict]


def submit_results(
    r: redis.Redis,
    celery: Celery,
    docs: Sequence[dict],
    audit: dict,
    policy: WritePolicy,
) -> Submission:
    """Store validated result documents atomically (store.StoreError, writing nothing, on a conflict or
    an unknown patient), then queue their recomputation.

    Once the store has answered, the results are stored with their dirty marks: a Redis failure while
    tracking the follow-up tasks must not make a door say "not stored" (an HL7 AR, a 503) about a stored
    result. It is logged, no task is offered to follow, and the sweeper recomputes the patients.

    With ``policy.follow_in_script`` (the broker is this Redis: queue.same_redis) the store's script
    itself records the tasks and LPUSHes the task messages of patients with none pending
    (RECOMPUTE_PATIENTS, one message per up to 100 of them): the whole write is one round trip, and a
    recompute is enqueued atomically with the write that calls for it.

    With ``policy.replication`` (WRITE_REPLICAS, issue 12) the write is also confirmed by that many replicas
    before this returns, or store.NotReplicated is raised: stored on the primary, not acknowledged."""
    task_ttl_s, replication = policy.task_ttl_s, policy.replication
    if policy.follow_in_script:
        tracking = {pid: uuid.uuid4().hex for pid in dict.fromkeys(d["patient_id"] for d in docs)}
        messages = task_messages(celery)
        queue, shape = messages.shape(RECOMPUTE_PATIENTS)
        follow = store.FollowUp(task_ttl_s, queue, tracking, shape, messages.ids_for(len(tracking)))
        with store.replicated(r, replication) as w:
            outcome = store.store_results(w, docs, audit, follow)
        tracked = {tracking[pid]: (pid, v) for pid, v in outcome.versions.items()}
        return Submission(outcome, _follow(tracked))
    with store.replicated(r, replication) as w:
        outcome = store.store_results(w, docs, audit)
    try:
        tasks = dispatch(r, celery, outcome, task_ttl_s)
    except redis.exceptions.RedisError as exc:
        log.warning("results stored; tracking their recomputation failed (%s): the sweeper will", exc)
        tasks = []
    return Submission(outcome, tasks)
