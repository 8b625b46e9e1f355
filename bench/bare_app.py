"""The yardsticks: a bare Flask app whose read route does one Redis GET and returns the bytes, and whose
write route parses the JSON body and answers 202 (bench/read_path.py, bench/write_path.py)."""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request

from shared import keys
from shared.store import connect


def create_app() -> Flask:
    app = Flask(__name__)
    r = connect(os.environ["REDIS_URL"])

    @app.get("/v1/patients/<patient_id>/status")
    def status(patient_id: str) -> Response:
        return Response(r.get(keys.status(patient_id)), mimetype="application/json")

    @app.post("/v1/assay-results")
    def post_results() -> Response:
        body = request.get_json()
        response = jsonify({"accepted": len(body) if isinstance(body, list) else 1})
        response.status_code = 202
        return response

    return app
