"""Liveness and readiness for load balancers and orchestrators (no auth, no patient data)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import ctx
from services.api.errors import problem_response
from shared import work

bp = Blueprint("health", __name__)

# A worker heartbeats every few seconds (services/worker/sweeper.py); silence for this long = gone.
WORKER_SILENCE_S = 15.0


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    c = ctx()
    checks: dict[str, dict] = {}
    try:
        c.redis.ping()
        checks["redis"] = {"ok": True}
        workers = work.live_workers(c.redis, WORKER_SILENCE_S)
        checks["workers"] = {"ok": bool(workers), "alive": len(workers)}
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as not ready
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        checks["workers"] = {"ok": False, "alive": None}
    if all(check["ok"] for check in checks.values()):
        return jsonify({"status": "ready", "checks": checks})
    failing = ", ".join(name for name, check in checks.items() if not check["ok"])
    return problem_response(503, "not-ready", "Not ready", f"Failing: {failing}.", checks=checks)
