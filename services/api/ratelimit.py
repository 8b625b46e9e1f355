"""Per-key request budgets.

Every route but the hot reads is limited by flask-limiter with Redis storage, so all API processes
share one budget per key and operation (``RATE_LIMIT``). The hot reads (status, timeline: one Redis
GET each) are limited per key and operation within each API process (``HOT_READ_RATE_LIMIT``):
flask-limiter's check, even deciding that a route is exempt, costs ~60 us of Python per request, a
fifth of the whole read path (bench/README.md), so its hooks run only on the routes it limits.
Over budget: 429 problem+json with Retry-After.
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits import parse
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.api.auth import caller
from services.api.errors import Problem, problem_response
from services.api.observability import HOT_READS
from shared.config import Settings


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


def init_rate_limits(app: Flask, settings: Settings) -> None:
    limiter = _limiter(settings)
    limiter.init_app(app)
    _gate(app, limiter, HotReadBudget(settings.hot_read_rate_limit))

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded) -> Response:
        # When the current window resets (one Redis read, on the refused request only).
        reset_at = limiter.current_limit.reset_at if limiter.current_limit else time.time() + 1
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return problem_response(
            429, "rate-limited", "Too many requests",
            f"This key is limited to {exc.limit.limit}; retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )  # fmt: skip


def _limiter(settings: Settings) -> Limiter:
    # If Redis is down the limiter steps aside (swallow_errors) and the request meets the store's own
    # 503. Rate headers on every response would cost two more Redis reads: only a 429 says when.
    return Limiter(
        key_func=caller,
        default_limits=[settings.rate_limit],
        storage_uri=settings.redis_url,
        # Bounded like the store's client (shared.store.connect_for_requests), and no retry: with Redis
        # stalled the limiter steps aside after one short timeout and the store's call answers 503.
        storage_options={
            "socket_connect_timeout": 0.25,
            "socket_timeout": 0.25,
            "retry": Retry(NoBackoff(), 0),
        },
        strategy="fixed-window",
        headers_enabled=False,
        swallow_errors=True,
        key_prefix="cml:ratelimit",
    )


def _gate(app: Flask, limiter: Limiter, hot: HotReadBudget) -> None:
    """Swap flask-limiter's request hooks for ones that run it only on the routes it limits."""
    before, after, teardown = (
        app.before_request_funcs[None],
        app.after_request_funcs[None],
        app.teardown_request_funcs[None],
    )
    check = limiter._check_request_limit
    inject = next(f for f in after if getattr(f, "args", None) == (limiter,))
    release = next(f for f in teardown if getattr(f, "__self__", None) is limiter)

    def gated_check() -> None:
        key = caller()
        hot_read = request.endpoint in HOT_READS
        g.rate_limited = key != "anonymous" and not hot_read
        if g.rate_limited:
            check()
        elif hot_read and (wait := hot.spend((key, request.endpoint))) is not None:
            retry_after = max(1, math.ceil(wait))
            raise Problem(
                429, "rate-limited", "Too many requests",
                f"This key is limited to {hot.rate} reads per API process; retry in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )  # fmt: skip

    before[before.index(check)] = gated_check
    after[after.index(inject)] = lambda response: inject(response) if g.get("rate_limited") else response
    teardown[teardown.index(release)] = lambda exc: release(exc) if g.get("rate_limited") else None
