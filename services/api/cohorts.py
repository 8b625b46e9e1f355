"""Cohorts: definitions, statistics (stored by the worker), curves, and comparisons."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, jsonify, request

from services.api.context import audit_entry, ctx, enqueue, json_body
from services.api.errors import Problem, checked_id, invalid_parameter
from shared import cohort_store, cohorts, keys, store
from shared.plots import FORMATS, render_curve
from shared.queue import REFRESH_COHORT
from shared.schemas import CohortSchema, ValidationError, not_reserved_cohort_id

bp = Blueprint("cohorts", __name__)

JSON = "application/json"
MAX_HORIZONS = 24
IMAGE_TTL_S = 3600


def _unknown(cohort_id: str) -> Problem:
    return Problem(404, "unknown-cohort", "Unknown cohort", f"No cohort {cohort_id} exists.")


def _horizons() -> list[float] | None:
    raw = request.args.get("horizons")
    if raw is None:
        return None
    try:
        values = [float(x) for x in raw.split(",") if x.strip()]
    except ValueError as exc:
        raise invalid_parameter("horizons", "must be a comma-separated list of months, e.g. 3,6,12") from exc
    if not values or len(values) > MAX_HORIZONS or any(not 0 < v <= 600 for v in values):
        raise invalid_parameter("horizons", f"1 to {MAX_HORIZONS} months, each above 0 and at most 600")
    return values


class NotComputedYet(Exception):
    """A known cohort whose first refresh has not finished (seconds after its first member)."""


def _data(cohort_id: str):
    """The last refresh's data of a cohort; 404 if unknown, NotComputedYet before its first refresh."""
    loaded = cohort_store.read_data(ctx().redis, cohort_id)
    if loaded is not None:
        return loaded
    if not cohort_store.cohort_exists(ctx().redis, cohort_id):
        raise _unknown(cohort_id)
    raise NotComputedYet(cohort_id)


def _not_computed(cohort_id: str) -> Problem:
    # A 4xx, not a 503: nothing is unavailable; the figures simply do not exist yet.
    return Problem(
        409, "not-computed-yet", "Not computed yet",
        f"Cohort {cohort_id} is being computed; retry in a second.", headers={"Retry-After": "1"},
    )  # fmt: skip


def _pending(cohort_id: str) -> Response:
    doc = {"cohort_id": cohort_id, "pending": True, "computed_at": None, "data_version": None}
    return Response(orjson.dumps(doc), mimetype=JSON)


@bp.put("/v1/cohorts/<cohort_id>")
def put_cohort(cohort_id: str) -> Response:
    checked_id("cohort_id", cohort_id)
    try:
        not_reserved_cohort_id(cohort_id)
    except ValidationError as err:
        raise invalid_parameter("cohort_id", str(err.messages[0])) from err
    doc = CohortSchema().load(json_body())
    c = ctx()
    with store.replicated(c.redis, c.replication) as w:
        state, fresh = cohort_store.define_cohort(w, cohort_id, doc, audit_entry(cohort_id=cohort_id))
    if fresh:
        enqueue(REFRESH_COHORT, cohort_id)  # a changed definition is recomputed at once
    response = jsonify({"cohort_id": cohort_id, "definition": cohorts.definition(doc), "outcome": state})
    response.status_code = 201 if state == "created" else 200
    return response


@bp.get("/v1/cohorts")
def list_cohorts() -> Response:
    return jsonify({"cohorts": cohort_store.list_cohorts(ctx().redis)})


@bp.get("/v1/cohorts/<cohort_id>/statistics")
def get_statistics(cohort_id: str) -> Response:
    horizons = _horizons()
    if horizons is None:
        raw = cohort_store.read_stats(ctx().redis, cohort_id)  # one GET: the stored document
        if raw is not None:
            return Response(raw, mimetype=JSON)
    try:
        data, curve, _ = _data(cohort_id)
    except NotComputedYet:
        return _pending(cohort_id)
    # The stored document's envelope, pending included (the same refresh: shared.cohort_store.read_data).
    envelope = {k: curve[k] for k in ("pending", "cohort_id", "computed_at", "data_version", "definition")}
    return jsonify({**envelope, **cohorts.statistics(data, horizons or cohorts.DEFAULT_HORIZONS_MONTHS)})


@bp.get("/v1/cohorts/<cohort_id>/curve")
def get_curve(cohort_id: str) -> Response:
    best = request.accept_mimetypes.best_match([JSON, *FORMATS.values()], default=JSON)
    try:
        data, curve, version = _data(cohort_id)
    except NotComputedYet:
        if best == JSON:
            return _pending(cohort_id)
        raise _not_computed(cohort_id) from None
    if best == JSON:
        return jsonify(curve)
    fmt = next(f for f, mime in FORMATS.items() if mime == best)
    r = ctx().redis
    key = keys.cohort_image(cohort_id, version, fmt)
    image = r.get(key)
    if image is None:
        image = render_curve(curve, data, fmt)
        r.set(key, image, ex=IMAGE_TTL_S)
    return Response(image, mimetype=best)


@bp.get("/v1/cohorts/compare")
def compare() -> Response:
    a, b = request.args.get("a"), request.args.get("b")
    for name, value in (("a", a), ("b", b)):
        if not value:
            raise invalid_parameter(name, "is required: a cohort id")
    try:
        data_a, curve_a, _ = _data(a)
        data_b, curve_b, _ = _data(b)
    except NotComputedYet as exc:
        raise _not_computed(str(exc)) from None
    endpoints = (curve_a["definition"]["endpoint"], curve_b["definition"]["endpoint"])
    result = cohorts.compare(data_a, data_b, _horizons() or cohorts.DEFAULT_HORIZONS_MONTHS, endpoints)
    result["a"] = {"cohort_id": a, "data_version": curve_a["data_version"], **result["a"]}
    result["b"] = {"cohort_id": b, "data_version": curve_b["data_version"], **result["b"]}
    return Response(orjson.dumps(result), mimetype=JSON)
