"""The sweeper: a thread in each worker's main process that makes lost tasks come back in seconds.

With the Redis broker, a task held by a killed worker is redelivered only after the visibility
timeout (an hour by default; celery #5935, #9339, #4991). The dirty set in Redis is the truth: every
few seconds the sweeper re-enqueues patients that have been dirty with no task enqueued for
REQUEUE_AFTER_S, and it writes this worker's heartbeat with the queues it consumes, which /readyz,
/metrics and ops read (a queue no live worker consumes is work that never gets done).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import redis
from celery.signals import worker_ready, worker_shutdown

from services.worker import app, settings
from services.worker.redis_client import redis_client
from shared import documents, work
from shared.queue import RECOMPUTE_PATIENTS, TASK_FOR_KIND, TaskMessages, send

log = logging.getLogger(__name__)
_stop = threading.Event()


def consumed_queues(consumer: object) -> list[str]:
    """The queues this worker consumes, read from its consumer at each heartbeat rather than once at
    start, so a queue added or cancelled at run time (``celery control add_consumer`` /
    ``cancel_consumer``) shows too. The consumer's kombu task consumer holds exactly what ``-Q``
    selected (or, without ``-Q``, every queue of ``task_queues``); while it reconnects to the broker
    it is None, and the app's selection says the same."""
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        return sorted({q.name for q in list(task_consumer.queues)})
    return sorted(app.amqp.queues.consume_from)


def _messages(kind: str, due: list[str]) -> list[tuple[str, str | list[str]]]:
    """(task, argument) per message to send. Patients go a hundred to a message, as the writes send
    them: a rules change marks every patient dirty at once, and a message each would cost Celery's
    per-message work once per patient."""
    if kind != "patient":
        return [(TASK_FOR_KIND[kind], item_id) for item_id in due]
    step = TaskMessages.PATIENTS_PER_MESSAGE
    return [(RECOMPUTE_PATIENTS, due[start : start + step]) for start in range(0, len(due), step)]


def sweep_once(worker: str, queues: Sequence[str]) -> int:
    r = redis_client()
    work.heartbeat(r, worker, queues)
    requeued = 0
    for kind in TASK_FOR_KIND:
        due = work.due_for_requeue(r, kind, settings.requeue_after_s)
        for task, argument in _messages(kind, due):
            send(app, task, argument)
        if due:
            log.info("sweeper requeued %d dirty %ss", len(due), kind)
        requeued += len(due)
    # After the requeue, on its own: housekeeping must never hold up lost work.
    try:
        work.trim_audit(r, settings.audit_retention_days)
    except redis.exceptions.RedisError as exc:
        log.warning("audit trim failed: %s", type(exc).__name__)
    return requeued


def _loop(worker: str, consumer: object) -> None:
    try:
        marked = work.recompute_all_if_rules_changed(redis_client(), documents.rules_fingerprint())
        if marked >= 0:
            log.info("rules changed since the stored documents were made: %d patients to recompute", marked)
    except Exception as exc:  # noqa: BLE001 - Redis may be down at start; the next start retries
        log.warning("rules check failed: %s", type(exc).__name__)
    while not _stop.is_set():
        try:
            sweep_once(worker, consumed_queues(consumer))
        except Exception as exc:  # noqa: BLE001 - Redis may be down; keep sweeping when it is back
            log.warning("sweep failed: %s", type(exc).__name__)
        _stop.wait(settings.sweep_interval_s)


@worker_ready.connect
def _start(sender: object = None, **kwargs: object) -> None:
    # The sender is the worker's Consumer (celery.apps.worker sends worker_ready with it).
    worker = getattr(sender, "hostname", None) or "worker"
    threading.Thread(target=_loop, args=(worker, sender), name="cml-sweeper", daemon=True).start()


@worker_shutdown.connect
def _shutdown(**kwargs: object) -> None:
    _stop.set()
