"""GET /v1/tasks/{task_id}: follow the recomputation a write queued.

A task here is "patient P's status must reflect data version V". It is done when the stored status
reflects V or later, whichever worker task got there (recomputations coalesce), so the answer is
read from the data, not from Celery's result backend.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import ctx
from services.api.errors import Problem
from shared import work

bp = Blueprint("tasks", __name__)


@bp.get("/v1/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    doc = work.read_task(ctx().redis, task_id)
    if doc is None:
        raise Problem(404, "unknown-task", "Unknown task", f"No task {task_id} (tasks are kept for a day).")
    done = doc["status_version"] >= doc["version"]
    return jsonify(
        {
            "task_id": task_id,
            "patient_id": doc["patient_id"],
            "state": "done" if done else "pending",
            "data_version": doc["version"],
            "status_data_version": doc["status_version"] if doc["status_version"] >= 0 else None,
            "status_href": f"/v1/patients/{doc['patient_id']}/status",
        }
    )
