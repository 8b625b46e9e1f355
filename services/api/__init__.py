"""The HTTP API: an app factory, one blueprint per resource (Superset/Redash layout).

Run with ``gunicorn 'services.api:create_app()'``. Connection pools are made inside the factory,
so each gunicorn worker process gets its own after the fork (design-notes.md, "Processes").
"""

from __future__ import annotations

import logging

from flask import Flask, g, request
from flask_limiter import Limiter

from services.api.auth import caller, init_auth, load_keys
from services.api.context import ApiContext
from services.api.errors import register_error_handlers, register_rate_limit_handler
from services.api.observability import HOT_READS, init_observability
from shared.config import Settings, load_settings
from shared.queue import make_celery
from shared.store import connect

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["cml"] = ApiContext(
        settings=settings,
        redis=connect(settings.redis_url),
        celery=make_celery(settings, "cml-api"),
    )
    register_error_handlers(app)
    init_observability(app)
    keys = load_keys(settings.api_keys, settings.api_keys_file)
    if not keys:
        log.warning("no API keys configured (API_KEYS, API_KEYS_FILE): every protected route answers 401")
    init_auth(app, keys)  # before the limiter: its key is the authenticated caller
    limiter = _limiter(settings)
    limiter.init_app(app)
    _gate_limiter(app, limiter)
    register_rate_limit_handler(app, limiter)

    from services.api import cohorts, health, ops, patients, results, tasks

    for module in (health, patients, results, tasks, cohorts, ops):
        app.register_blueprint(module.bp)
    return app


def _exempt() -> bool:
    # Everything but the hot reads (writes, cohort statistics, images, comparisons, ops) is limited.
    return caller() == "anonymous" or request.endpoint in HOT_READS


def _gate_limiter(app: Flask, limiter: Limiter) -> None:
    """Run flask-limiter's request hooks only on limited routes: even deciding that a route is
    exempt costs it ~60 us of Python per request, a fifth of the whole read path (bench/README.md)."""
    before, after, teardown = (
        app.before_request_funcs[None],
        app.after_request_funcs[None],
        app.teardown_request_funcs[None],
    )
    check = limiter._check_request_limit
    inject = next(f for f in after if getattr(f, "args", None) == (limiter,))
    release = next(f for f in teardown if getattr(f, "__self__", None) is limiter)

    def gated_check() -> None:
        g.rate_limited = not _exempt()
        if g.rate_limited:
            check()

    before[before.index(check)] = gated_check
    after[after.index(inject)] = lambda response: inject(response) if g.get("rate_limited") else response
    teardown[teardown.index(release)] = lambda exc: release(exc) if g.get("rate_limited") else None


def _limiter(settings: Settings) -> Limiter:
    # Per key, shared by every API process through Redis. If Redis is down the limiter steps aside
    # (swallow_errors) and the request meets the 503 of the store itself. Rate headers on every
    # response would cost two more Redis reads per request: only a 429 says when to come back.
    return Limiter(
        key_func=caller,
        default_limits=[settings.rate_limit],
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 2},
        strategy="fixed-window",
        headers_enabled=False,
        swallow_errors=True,
        key_prefix="cml:ratelimit",
    )
