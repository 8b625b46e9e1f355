"""The read-path yardstick: a bare Flask app whose one route does one Redis GET and returns the bytes."""

from __future__ import annotations

import os

from flask import Flask, Response

from shared import keys
from shared.store import connect


def create_app() -> Flask:
    app = Flask(__name__)
    r = connect(os.environ["REDIS_URL"])

    @app.get("/v1/patients/<patient_id>/status")
    def status(patient_id: str) -> Response:
        return Response(r.get(keys.status(patient_id)), mimetype="application/json")

    return app
