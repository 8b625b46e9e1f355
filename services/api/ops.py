"""The ops view: queues and workers, the audit trail, dead letters, Prometheus metrics."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from services.api.context import audit_entry, ctx, enqueue
from services.api.errors import Problem, invalid_parameter
from services.api.observability import metrics_response
from shared import ops, work
from shared.metrics import TaskCollector
from shared.queue import TASK_FOR_KIND

bp = Blueprint("ops", __name__)


@bp.get("/v1/ops/queues")
def queues() -> Response:
    return jsonify(ops.queue_report(ctx().redis))


# A Redis stream id: milliseconds and a sequence number, each within 64 bits.
STREAM_ID = re.compile(r"\d{1,19}-\d{1,19}")


@bp.get("/v1/ops/audit")
def audit() -> Response:
    try:
        count = int(request.args.get("count", 100))
    except ValueError:
        count = 0
    if not 1 <= count <= 1000:
        raise invalid_parameter("count", "must be an integer from 1 to 1000")
    before = request.args.get("before")
    if before is not None and not (STREAM_ID.fullmatch(before) and max(map(int, before.split("-"))) < 2**64):
        raise invalid_parameter("before", "must be an audit entry id such as 1732500000000-0")
    return jsonify({"entries": ops.audit_entries(ctx().redis, count, before)})


@bp.get("/v1/ops/dead-letters")
def dead_letters() -> Response:
    return jsonify({"dead_letters": work.dead_letters(ctx().redis)})


@bp.post("/v1/ops/dead-letters/<kind>/<item_id>/retry")
def retry_dead_letter(kind: str, item_id: str) -> Response:
    if kind not in TASK_FOR_KIND:
        raise Problem(404, "unknown-dead-letter", "Unknown dead letter", f"No dead-letter kind {kind}.")
    if not work.retry_dead_letter(ctx().redis, kind, item_id, audit_entry(kind=kind, item_id=item_id)):
        raise Problem(404, "unknown-dead-letter", "Unknown dead letter", f"No failed {kind} {item_id}.")
    enqueue(TASK_FOR_KIND[kind], item_id)
    response = jsonify({"kind": kind, "id": item_id, "state": "requeued"})
    response.status_code = 202
    return response


@bp.get("/metrics")
def metrics() -> Response:
    return metrics_response(TaskCollector(ctx().redis))
