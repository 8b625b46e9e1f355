"""Patients: registration, clinical events, and the computed status and timeline (read-only)."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, jsonify

from services.api.context import audit_entry, ctx, dispatch, json_body
from services.api.errors import Problem, checked_id
from services.api.idempotency import idempotent
from shared import store
from shared.schemas import EventSchema, PatientSchema, ValidationError, duplicate_ids

bp = Blueprint("patients", __name__)

JSON = "application/json"


def _unknown(patient_id: str) -> Problem:
    return Problem(404, "unknown-patient", "Unknown patient", f"No patient {patient_id} is registered.")


@bp.put("/v1/patients/<patient_id>")
def put_patient(patient_id: str) -> Response:
    c = ctx()
    checked_id("patient_id", patient_id)
    doc = {"patient_id": patient_id, **PatientSchema().load(json_body())}
    state, outcome = store.register_patient(c.redis, patient_id, doc, audit_entry(patient_id=patient_id))
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
        outcome = store.add_events(
            c.redis, patient_id, events, audit_entry(patient_id=patient_id, event_ids=ids)
        )
    except store.StoreError as err:
        raise _unknown(patient_id) from err
    response = jsonify({"accepted": ids, "tasks": dispatch(outcome)})
    response.status_code = 202
    return response


@bp.get("/v1/patients/<patient_id>/status")
def get_status(patient_id: str) -> Response:
    # The read path: one GET, bytes returned as stored (bench/README.md measures it).
    c = ctx()
    raw = store.read_status(c.redis, patient_id)
    if raw is not None:
        return Response(raw, mimetype=JSON)
    if not store.patient_exists(c.redis, patient_id):
        raise _unknown(patient_id)
    pending = {"patient_id": patient_id, "pending": True, "computed_at": None, "data_version": None}
    return Response(orjson.dumps(pending), mimetype=JSON)


@bp.get("/v1/patients/<patient_id>/results")
def get_results(patient_id: str) -> Response:
    c = ctx()
    raw = store.read_timeline(c.redis, patient_id)
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
