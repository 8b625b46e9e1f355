"""Liveness and readiness for load balancers and orchestrators (no auth, no patient data)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.context import ctx
from services.api.errors import problem_response
from shared import ops, work

bp = Blueprint("health", __name__)

# A worker heartbeats every few seconds (services/worker/sweeper.py); silence for this long = gone.
WORKER_SILENCE_S = work.WORKER_SILENCE_S


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when Redis answers, a worker is alive, and every queue the app routes to has a live
    consumer: a worker started with ``-Q patients`` alone leaves cohort refreshes waiting forever,
    and that must show here, not only as statistics stuck at ``pending``."""
    c = ctx()
    checks: dict[str, dict] = {}
    try:
        c.redis.ping()
        checks["redis"] = {"ok": True}
        workers = work.live_workers(c.redis, WORKER_SILENCE_S)
        checks["workers"] = {"ok": bool(workers), "alive": len(workers)}
        consumers = work.consumers(work.worker_queues(c.redis, workers))
        idle = [q for q, listening in consumers.items() if not listening]
        checks["queues"] = {"ok": not idle, "without_consumer": idle}
        # A warning, not a failure: reads still work at maxmemory, and taking every instance out of
        # the load balancer would turn "writes will soon fail" into "nothing works".
        memory = ops.redis_memory(c.redis)
        checks["memory"] = {
            "ok": True,
            "used_ratio": memory["used_ratio"],
            "near_limit": memory["near_limit"],
        }
        if memory["near_limit"]:
            checks["memory"]["warning"] = (
                f"Redis uses {memory['used_ratio']:.0%} of its maxmemory: writes answer 503 when it is full"
            )
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as not ready
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        checks["workers"] = {"ok": False, "alive": None}
        checks["queues"] = {"ok": False, "without_consumer": None}
    if all(check["ok"] for check in checks.values()):
        return jsonify({"status": "ready", "checks": checks})
    failing = ", ".join(_failing(name, check) for name, check in checks.items() if not check["ok"])
    return problem_response(503, "not-ready", "Not ready", f"Failing: {failing}.", checks=checks)


def _failing(name: str, check: dict) -> str:
    if name == "queues" and check.get("without_consumer"):
        return f"queues (no live worker consumes {', '.join(check['without_consumer'])})"
    return name
