"""Per-app resources (Redis client, Celery client, settings) and the helpers routes share."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from celery import Celery
from flask import current_app, request

from services.api.auth import caller
from services.api.errors import Problem
from shared import store, work
from shared.config import Settings
from shared.queue import RECOMPUTE_PATIENT, REFRESH_COHORT, send

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    settings: Settings
    redis: redis.Redis
    celery: Celery


def ctx() -> ApiContext:
    return current_app.extensions["cml"]


_PARSED = "cml.json_body"


def json_body() -> Any:
    """The request body parsed as JSON (once per request: the Idempotency-Key hash and the route both
    read it), or a 415/400 problem saying what is wrong with it."""
    cached = request.environ.get(_PARSED)
    if cached is not None:
        return cached[0]
    if not request.is_json:
        raise Problem(
            415, "unsupported-media-type", "Unsupported media type", "Send the body as application/json."
        )
    try:
        body = orjson.loads(request.get_data(cache=True))
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "malformed-json", "Malformed JSON", f"The body is not valid JSON: {exc}") from exc
    request.environ[_PARSED] = (body,)  # on the request itself: flask.g may outlive one request
    return body


def audit_entry(**ids: object) -> dict:
    """Who did what when, for the audit stream (written atomically with the data it describes)."""
    rule = request.url_rule.rule if request.url_rule else request.path
    return {
        "who": caller(),
        "what": f"{request.method} {rule}",
        "when": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **ids,
    }


def enqueue(task: str, item_id: str, task_id: str | None = None) -> None:
    """Send a task; the data and its dirty mark are already stored, so a failure is only logged:
    the worker's sweeper finds the dirty item and enqueues it."""
    try:
        send(ctx().celery, task, item_id, task_id=task_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure is recovered by the sweeper
        log.warning("enqueue failed (%s); the sweeper will requeue", type(exc).__name__)


def dispatch(outcome: store.WriteOutcome) -> list[dict]:
    """Track and enqueue the recomputations a write calls for; return how to follow them."""
    c = ctx()
    tracked = {uuid.uuid4().hex: (pid, v) for pid, v in outcome.versions.items()}
    work.track_tasks(c.redis, tracked, c.settings.task_ttl_s)
    fresh = set(outcome.to_enqueue)
    for task_id, (pid, _) in tracked.items():
        if pid in fresh:
            enqueue(RECOMPUTE_PATIENT, pid, task_id=task_id)
    for cohort_id in outcome.cohorts_to_enqueue:
        enqueue(REFRESH_COHORT, cohort_id)
    return [
        {"task_id": t, "patient_id": pid, "data_version": v, "href": f"/v1/tasks/{t}"}
        for t, (pid, v) in tracked.items()
    ]
