"""The HTTP API: an app factory, one blueprint per resource (Superset/Redash layout).

Run with ``gunicorn 'services.api:create_app()'``. Connection pools are made inside the factory,
so each gunicorn worker process gets its own after the fork (design-notes.md, "Processes").
"""

from __future__ import annotations

import logging

from flask import Flask

from services.api.auth import init_auth, load_keys
from services.api.context import ApiContext
from services.api.errors import register_error_handlers
from services.api.observability import init_observability
from services.api.ratelimit import init_rate_limits
from services.api.server_errors import install as install_server_errors
from shared.config import Settings, load_settings
from shared.interop.codes import load_code_map
from shared.queue import make_celery
from shared.store import connect_from_settings, connect_replica

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["cml"] = ApiContext(
        settings=settings,
        redis=connect_from_settings(settings, for_requests=True),
        celery=make_celery(settings, "cml-api", request_path=True),
        replica=connect_replica(settings),
    )
    app.extensions["cml.hl7_codes"] = load_code_map(settings.lab_codes_file)
    register_error_handlers(app)
    install_server_errors()  # gunicorn's own 400/414/431 answers as problem+json too
    init_observability(app)
    keys = load_keys(settings.api_keys, settings.api_keys_file)
    if not keys:
        log.warning("no API keys configured (API_KEYS, API_KEYS_FILE): every protected route answers 401")
    init_auth(app, keys)  # before the limiter: its key is the authenticated caller
    init_rate_limits(app, settings)

    from services.api import (
        cohorts,
        dashboard,
        docs,
        fhir,
        health,
        hl7v2,
        ops,
        patients,
        reference,
        results,
        tasks,
    )

    modules = (health, docs, dashboard, patients, results, hl7v2, tasks, cohorts, ops, reference, fhir)
    for module in modules:
        app.register_blueprint(module.bp)
    docs.check_assets()
    dashboard.check_assets()
    return app
