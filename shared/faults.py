"""Which failures are Redis being unavailable for a while, not a fault of the item or the request.

Out of memory (``maxmemory`` reached under ``noeviction``), loading its AOF after a restart, a
read-only replica during a failover, a timeout, a dropped connection: each passes by itself, so the
API answers 503 with Retry-After and the worker leaves the item dirty for the sweeper (never a dead
letter, which would park it until ops retry it). redis-py raises the first three as
``ResponseError`` subclasses, not ``ConnectionError`` (design-notes.md, "Under pressure").
"""

from __future__ import annotations

import redis
from kombu.exceptions import OperationalError

TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError: a restarted Redis replaying its AOF
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,  # maxmemory reached with noeviction
    redis.exceptions.ReadOnlyError,  # a replica during failover
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    OperationalError,  # kombu's wrapper of the above on publish
)

# Error replies Redis gives for a passing condition that redis-py raises as a plain ResponseError
# (or inside an aborted MULTI): out of memory, a failing background save, loading, read-only.
# UNBLOCKED: a blocking command (WAIT) cut short by the instance turning replica (a failover).
_TRANSIENT_REPLIES = (
    "OOM", "MISCONF", "LOADING", "READONLY", "BUSY", "NOREPLICAS", "TRYAGAIN", "MASTERDOWN", "UNBLOCKED",
)  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is Redis unavailable for a while."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TRANSIENT):
            return True
        if isinstance(current, redis.exceptions.ResponseError):
            text = str(current)
            if text.startswith(_TRANSIENT_REPLIES) or "used memory > 'maxmemory'" in text:
                return True
        current = current.__cause__ or current.__context__
    return False
