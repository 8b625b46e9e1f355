"""Around every task: latency and outcome counted in Redis (exported by the API's /metrics), and a
failure sent to the dead-letter hash with its error, out of the sweeper's way, for ops to retry.
Logs carry the task name and error type, never a patient id or a result value."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from celery.exceptions import Retry

from services.worker.redis_client import redis_client
from shared import metrics, work

log = logging.getLogger(__name__)


def instrumented(kind: str, task_name: str) -> Callable:
    def wrap(body: Callable[..., str]) -> Callable[..., str]:
        @functools.wraps(body)
        def run(*args: object) -> str:
            item_id = str(args[-1])
            start = time.perf_counter()
            try:
                outcome = body(*args)
            except Retry:
                outcome = "retry"
                raise
            except Exception as exc:
                outcome = "failed"
                log.error("%s failed: %s", task_name, type(exc).__name__)
                work.dead_letter(redis_client(), kind, item_id, task_name, f"{type(exc).__name__}: {exc}")
                return outcome
            finally:
                metrics.record_task(redis_client(), task_name, outcome, time.perf_counter() - start)
            return outcome

        return run

    return wrap
