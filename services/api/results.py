"""POST /v1/assay-results: one result or a batch, validated whole, stored atomically, then queued."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response

from services.api.context import audit_entry, ctx, json_body
from services.api.errors import Problem
from services.api.idempotency import idempotent
from shared import intake, store
from shared.schemas import ValidationError

bp = Blueprint("results", __name__)

# Refusals that depend on what is already stored (the Lua write checks them atomically).
_STORE_PROBLEMS = {
    "unknown_patient": (
        422, "unknown-patient", "Unknown patient", "patient_id",
        "patient {value} is not registered: PUT /v1/patients/{value} first",
    ),
    "patient_mismatch": (
        409, "result-conflict", "Result conflict", "patient_id",
        "this result_id was received for another patient",
    ),
    "conflict": (
        409, "result-conflict", "Result conflict", "result_id",
        "result {value} was already received with other content; "
        "send status amended or corrected to replace it",
    ),
}  # fmt: skip


def _load(body: object, limit: int) -> tuple[list[dict], bool]:
    """Validate the body; a batch with any bad item is refused whole, naming every bad item."""
    single = isinstance(body, dict)
    items = [body] if single else body
    if not isinstance(items, list) or not items:
        raise ValidationError("send a result object or a non-empty array of results")
    if len(items) > limit:
        # The pointer is the first item over the limit: what the sender must split off.
        reason = f"a batch holds at most {limit} results (MAX_BATCH); got {len(items)}"
        raise Problem(
            413, "batch-too-large", "Batch too large", f"/{limit}: {reason}",
            errors=[{"pointer": f"/{limit}", "field": "", "detail": reason}],
        )  # fmt: skip
    try:
        loaded = intake.validate_results(items)
    except ValidationError as err:
        raise ValidationError(err.messages[0] if single else err.messages) from err
    return loaded, single


def _store_problem(err: store.StoreError, single: bool) -> Problem:
    status, slug, title, field, template = _STORE_PROBLEMS[err.code]
    pointer = f"/{field}" if single else f"/{err.index}/{field}"
    reason = template.format(value=err.value)
    return Problem(
        status,
        slug,
        title,
        f"{pointer}: {reason}",
        errors=[{"pointer": pointer, "field": field, "detail": reason}],
    )


@bp.post("/v1/assay-results")
@idempotent
def post_results() -> Response:
    c = ctx()
    items, single = _load(json_body(), c.settings.max_batch)
    audit = audit_entry(result_ids=[d["result_id"] for d in items])
    try:
        done = intake.submit_results(c.redis, c.celery, items, audit, c.write_policy)
    except store.StoreError as err:
        raise _store_problem(err, single) from err
    tasks = done.tasks
    accepted = [
        {"result_id": d["result_id"], "patient_id": d["patient_id"], "outcome": o}
        for d, o in zip(items, done.outcome.outcomes, strict=True)
    ]
    # The bytes jsonify would send (compact, a newline; ids and outcomes are ASCII), made by orjson.
    body = orjson.dumps({"accepted": accepted, "tasks": tasks}) + b"\n"
    response = Response(body, status=202, mimetype="application/json")
    if tasks:
        response.headers["Location"] = tasks[0]["href"]
    return response
