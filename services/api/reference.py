"""Reference documents derived from the clinical rules (shared/clinical), for clients that draw them."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from shared.clinical.reference import response_reference

bp = Blueprint("reference", __name__)


@bp.get("/v1/reference/response-levels")
def response_levels() -> Response:
    response = jsonify(response_reference())
    response.headers["Cache-Control"] = "private, max-age=3600"  # changes only with a deployment
    return response
