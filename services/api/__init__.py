"""The HTTP API: an app factory, one blueprint per resource (Superset/Redash layout).

Run with ``gunicorn 'services.api:create_app()'``. Connection pools are made inside the factory,
so each gunicorn worker process gets its own after the fork (design-notes.md, "Processes").
"""

from __future__ import annotations

from flask import Flask

from services.api.context import ApiContext
from services.api.errors import register_error_handlers
from shared.config import Settings, load_settings
from shared.queue import make_celery
from shared.store import connect


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

    from services.api import cohorts, health, patients, results, tasks

    for module in (health, patients, results, tasks, cohorts):
        app.register_blueprint(module.bp)
    return app
