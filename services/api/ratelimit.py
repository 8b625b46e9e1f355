"""Per-key request budgets.

Every route but the hot reads is limited per key and operation by a fixed window counted in Redis, so
all API processes share one budget (``RATE_LIMIT``): one short script a request (INCR; EXPIRE on the
window's first). That was flask-limiter's job; its check cost ~0.6 ms of Python a request, a fifth of
a single-result write
(bench/README.md, "Write path"). The hot reads (status, timeline: one Redis GET each) are limited
per key and operation within each API process (``HOT_READ_RATE_LIMIT``), since even one Redis round
trip is a large share of them. Over budget: 429 problem+json with Retry-After.
"""

from __future__ import annotations

import math
import time

import redis
from flask import Flask, request
from limits import parse

from services.api.auth import caller
from services.api.errors import Problem
from services.api.observability import HOT_READS
from shared import keys, store
from shared.config import Settings

# Bounded like the store's client, and no retry: with Redis stalled the check steps aside after one
# short timeout and the store's own call answers 503 (README, "Operations").
_TIMEOUT_S = 0.25


class HotReadBudget:
    """Fixed windows counted in a dict of this process (about a microsecond a request)."""

    def __init__(self, rate: str):
        item = parse(rate)
        self.rate, self.amount, self.period = rate, item.amount, item.get_expiry()
        self.window, self.counts = -1, {}

    def spend(self, key: tuple) -> float | None:
        """None when within budget, otherwise the seconds until the window resets."""
        now = time.time()
        window = int(now // self.period)
        if window != self.window:
            self.window, self.counts = window, {}  # old windows are dropped: memory stays bounded
        self.counts[key] = n = self.counts.get(key, 0) + 1
        return None if n <= self.amount else (window + 1) * self.period - now


_SPEND = store.LuaScript(
    """
-- KEYS[1] the counter; ARGV[1] the budget, [2] the window in s. A window starts at its first request
-- (the counter's expiry ends it). Returns 0 within budget, else the ms until the window ends.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return 0 end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""
)


class SharedBudget:
    """Fixed windows counted in Redis, shared by every API process: one command a request."""

    def __init__(self, rate: str, r: redis.Redis):
        item = parse(rate)
        self.limit, self.amount, self.period = str(item), item.amount, item.get_expiry()
        self.redis = r

    def spend(self, key: str, operation: str) -> float | None:
        """None when within budget (or Redis cannot say: the request meets the store's 503), otherwise
        the seconds until the window resets."""
        counter = keys.rate_limit(self.amount, self.period, operation, key)
        try:
            wait_ms = _SPEND(self.redis, 1, counter, self.amount, self.period)
        except redis.exceptions.RedisError:
            return None
        return wait_ms / 1000 if wait_ms else None


def init_rate_limits(app: Flask, settings: Settings) -> None:
    r = store.connect_from_settings(
        settings, for_requests=True, socket_timeout=_TIMEOUT_S, connect_timeout=_TIMEOUT_S
    )
    shared, hot = SharedBudget(settings.rate_limit, r), HotReadBudget(settings.hot_read_rate_limit)

    @app.before_request
    def _check_budget() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        endpoint = req.endpoint
        key = caller()
        if endpoint is None or key == "anonymous":
            return  # unknown URL (404 follows), or a public route
        if endpoint in HOT_READS:
            wait, limit, when = hot.spend((key, endpoint)), f"{hot.rate} reads per API process", "in"
        else:
            wait, limit, when = shared.spend(key, endpoint), shared.limit, "after"
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise Problem(
                429, "rate-limited", "Too many requests",
                f"This key is limited to {limit}; retry {when} {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )  # fmt: skip
