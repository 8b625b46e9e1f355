"""Patients: registration, clinical events, and the computed status and timeline (read-only)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import orjson
from flask import Blueprint, Response, jsonify, request

from services.api.context import audit_entry, ctx, dispatch, json_body
from services.api.errors import Problem, checked_id, invalid_parameter
from services.api.idempotency import idempotent
from shared import cohort_store, store, worklist
from shared.clinical.actions import ACTION_CODES
from shared.clinical.response import LEVELS
from shared.schemas import ID_PATTERN, EventSchema, PatientSchema, ValidationError, duplicate_ids

bp = Blueprint("patients", __name__)

JSON = "application/json"


def _unknown(patient_id: str) -> Problem:
    return Problem(404, "unknown-patient", "Unknown patient", f"No patient {patient_id} is registered.")


def _worklist_query() -> worklist.Query:
    args = request.args
    cohort = args.get("cohort")
    if cohort is not None:
        checked_id("cohort", cohort)
        if not cohort_store.cohort_exists(ctx().redis, cohort):
            raise Problem(404, "unknown-cohort", "Unknown cohort", f"No cohort {cohort} exists.")
    level = args.get("level")
    if level is not None and level not in LEVELS:
        raise invalid_parameter("level", f"must be one of {', '.join(LEVELS)}")
    action = args.get("action")
    codes = (*ACTION_CODES, worklist.SAMPLE_OVERDUE)
    if action is not None and action not in codes:
        raise invalid_parameter("action", f"must be one of {', '.join(codes)}")
    overdue = args.get("overdue", "false").lower()
    if overdue not in ("true", "false"):
        raise invalid_parameter("overdue", "must be true or false")
    try:
        as_of = date.fromisoformat(args["as_of"]) if "as_of" in args else None
    except ValueError:
        raise invalid_parameter("as_of", "must be a date, YYYY-MM-DD") from None
    try:
        limit = int(args.get("limit", 100))
    except ValueError:
        limit = 0
    if not 1 <= limit <= worklist.MAX_PAGE:
        raise invalid_parameter("limit", f"must be an integer from 1 to {worklist.MAX_PAGE}")
    after = None
    if "cursor" in args:
        try:
            after = worklist.decode_cursor(args["cursor"])
        except ValueError:
            after = ""
        if not re.fullmatch(ID_PATTERN, after):
            raise invalid_parameter("cursor", "must be the next_cursor of a previous page")
    return worklist.Query(cohort, level, action, overdue == "true", as_of, after, limit)


@bp.get("/v1/patients")
def list_patients() -> Response:
    """The worklist: patients with their level, ELN assessment, open actions and next sample due."""
    q = _worklist_query()
    today = q.as_of or datetime.now(UTC).date()
    return Response(orjson.dumps(worklist.query(ctx().redis, q, today)), mimetype=JSON)


@bp.put("/v1/patients/<patient_id>")
def put_patient(patient_id: str) -> Response:
    c = ctx()
    checked_id("patient_id", patient_id)
    doc = {"patient_id": patient_id, **PatientSchema().load(json_body())}
    with store.replicated(c.redis, c.replication) as w:
        state, outcome = store.register_patient(w, patient_id, doc, audit_entry(patient_id=patient_id))
    response = jsonify({"patient": doc, "outcome": state, "tasks": dispatch(outcome)})
    response.status_code = 201 if state == "created" else 200
    return response


@bp.post("/v1/patients/<patient_id>/events")
@idempotent
def post_events(patient_id: str) -> Response:
    c = ctx()
    checked_id("patient_id", patient_id)
    body = json_body()
    single = isinstance(body, dict)
    try:
        events = EventSchema(many=True).load([body] if single else body)
    except ValidationError as err:
        raise ValidationError(err.messages[0] if single else err.messages) from err
    if not events:
        raise ValidationError("send an event object or a non-empty array of events")
    dupes = duplicate_ids(events, "event_id")
    if dupes:
        raise ValidationError(dupes)
    try:
        ids = [store.event_id(e) for e in events]
        audit = audit_entry(patient_id=patient_id, event_ids=ids)
        with store.replicated(c.redis, c.replication) as w:
            outcome = store.add_events(w, patient_id, events, audit)
    except store.StoreError as err:
        raise _unknown(patient_id) from err
    response = jsonify({"accepted": ids, "tasks": dispatch(outcome)})
    response.status_code = 202
    return response


@bp.get("/v1/patients/<patient_id>/status")
def get_status(patient_id: str) -> Response:
    # The read path: one GET, bytes returned as stored (bench/README.md measures it).
    c = ctx()
    raw = store.read_preferring(c.replica, c.redis, lambda r: store.read_status(r, patient_id))
    if raw is not None:
        return Response(raw, mimetype=JSON)
    if not store.patient_exists(c.redis, patient_id):
        raise _unknown(patient_id)
    pending = {"patient_id": patient_id, "pending": True, "computed_at": None, "data_version": None}
    return Response(orjson.dumps(pending), mimetype=JSON)


@bp.get("/v1/patients/<patient_id>/results")
def get_results(patient_id: str) -> Response:
    c = ctx()
    raw = store.read_preferring(c.replica, c.redis, lambda r: store.read_timeline(r, patient_id))
    if raw is not None:
        return Response(raw, mimetype=JSON)
    if not store.patient_exists(c.redis, patient_id):
        raise _unknown(patient_id)
    pending = {
        "patient_id": patient_id,
        "pending": True,
        "computed_at": None,
        "data_version": None,
        "results": [],
    }
    return Response(orjson.dumps(pending), mimetype=JSON)
