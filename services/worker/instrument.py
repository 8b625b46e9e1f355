"""Around every task: latency and outcome counted in Redis (exported by the API's /metrics), and a
failure sent to the dead-letter hash with its error, out of the sweeper's way, for ops to retry.
Logs carry the task name and error type, never a patient id or a result value."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable

import redis
from celery.exceptions import Retry

from services.worker.redis_client import redis_client
from shared import metrics, work
from shared.faults import TRANSIENT, is_transient

log = logging.getLogger(__name__)

__all__ = ["TRANSIENT", "instrumented", "run_instrumented"]


def _count(task_name: str, outcome: str, seconds: float) -> None:
    # Metrics are best effort: Redis being down is reported by /readyz and the ops view.
    with contextlib.suppress(redis.exceptions.RedisError):
        metrics.record_task(redis_client(), task_name, outcome, seconds)


def _dead_letter(kind: str, item_id: str, task_name: str, exc: Exception) -> None:
    """Park an item whose task fails for a reason that will repeat. If Redis itself fails now, the
    item stays dirty and the sweeper retries it: never lose it from both the dirty set and the dead
    letters."""
    try:
        work.dead_letter(redis_client(), kind, item_id, task_name, f"{type(exc).__name__}: {exc}")
    except redis.exceptions.RedisError as failure:
        log.warning("%s: dead letter not stored: %s", task_name, type(failure).__name__)


def run_instrumented(kind: str, task_name: str, item_id: str, body: Callable[[], str]) -> str:
    """``body()`` for one item, counted and, on a failure that will repeat, dead-lettered; its outcome
    (``"transient"`` when Redis or the broker went away: the item stays dirty for the sweeper)."""
    start = time.perf_counter()
    outcome = "interrupted"  # until the body returns or raises an Exception (not a shutdown)
    try:
        outcome = body()
    except Retry:
        outcome = "retry"
        raise
    except Exception as exc:
        if not is_transient(exc):
            outcome = "failed"
            log.error("%s failed: %s", task_name, type(exc).__name__)
            _dead_letter(kind, item_id, task_name, exc)
            return outcome
        # Redis or the broker went away mid-task: not the data's fault. The item stays dirty
        # and the sweeper retries it once Redis is back; a dead letter would park it for good.
        outcome = "transient"
        log.warning("%s interrupted: %s", task_name, type(exc).__name__)
        return outcome
    finally:
        _count(task_name, outcome, time.perf_counter() - start)
    return outcome


def instrumented(kind: str, task_name: str) -> Callable:
    def wrap(body: Callable[..., str]) -> Callable[..., str]:
        @functools.wraps(body)
        def run(*args: object) -> str:
            return run_instrumented(kind, task_name, str(args[-1]), lambda: body(*args))

        return run

    return wrap
