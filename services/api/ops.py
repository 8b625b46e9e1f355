"""The ops view: queues and workers, the audit trail, dead letters, Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from services.api.context import ctx, enqueue
from services.api.errors import Problem
from services.api.observability import metrics_response
from shared import ops, store
from shared.metrics import TaskCollector
from shared.queue import TASK_FOR_KIND

bp = Blueprint("ops", __name__)


@bp.get("/v1/ops/queues")
def queues() -> Response:
    return jsonify(ops.queue_report(ctx().redis))


@bp.get("/v1/ops/audit")
def audit() -> Response:
    try:
        count = int(request.args.get("count", 100))
    except ValueError:
        count = 0
    if not 1 <= count <= 1000:
        raise Problem(
            422, "invalid-input", "The request is not valid", "count: must be an integer from 1 to 1000",
            errors=[{"pointer": "/count", "field": "count", "detail": "must be an integer from 1 to 1000"}],
        )  # fmt: skip
    return jsonify({"entries": ops.audit_entries(ctx().redis, count, request.args.get("before"))})


@bp.get("/v1/ops/dead-letters")
def dead_letters() -> Response:
    return jsonify({"dead_letters": store.dead_letters(ctx().redis)})


@bp.post("/v1/ops/dead-letters/<kind>/<item_id>/retry")
def retry_dead_letter(kind: str, item_id: str) -> Response:
    if kind not in TASK_FOR_KIND:
        raise Problem(404, "unknown-dead-letter", "Unknown dead letter", f"No dead-letter kind {kind}.")
    if not store.retry_dead_letter(ctx().redis, kind, item_id):
        raise Problem(404, "unknown-dead-letter", "Unknown dead letter", f"No failed {kind} {item_id}.")
    enqueue(TASK_FOR_KIND[kind], item_id)
    response = jsonify({"kind": kind, "id": item_id, "state": "requeued"})
    response.status_code = 202
    return response


@bp.get("/metrics")
def metrics() -> Response:
    return metrics_response(TaskCollector(ctx().redis))
