"""Request metrics (Prometheus) and an access log that names routes, not paths: a path carries a
patient id, and application logs carry no patient identifiers.

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (scripts/run and docker-compose do)
so that /metrics sums every worker process; task metrics and queue depths come from Redis.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, Request, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from services.api.auth import caller

access_log = logging.getLogger("cml.access")
# The read path: one Redis GET each. Exempt from the Redis-backed rate limiter and logged at DEBUG
# when successful, because either would cost it a tenth of its speed (bench/README.md).
HOT_READS = frozenset({"patients.get_status", "patients.get_results"})

REQUESTS = Counter(
    "cml_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "cml_http_request_seconds",
    "HTTP request latency by route, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def _route(req: Request) -> str:
    return req.url_rule.rule if req.url_rule else "unmatched"


def configure_logging() -> None:
    """Service logs to stderr (gunicorn and docker collect it), level from LOG_LEVEL."""
    logger = logging.getLogger("cml")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


def init_observability(app: Flask) -> None:
    configure_logging()

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    children: dict[tuple, tuple] = {}  # label lookups cached: they cost more than the increments

    @app.after_request
    def _record(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not six
        status = response.status_code
        labels = (req.endpoint, req.method, status)
        metrics = children.get(labels)
        if metrics is None:
            route, code = _route(req), str(status)
            metrics = (REQUESTS.labels(route, req.method, code), LATENCY.labels(route, req.method, code))
            children[labels] = metrics
        metrics[0].inc()
        metrics[1].observe(elapsed)
        level = logging.DEBUG if req.endpoint in HOT_READS and status < 400 else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(level, "%s %s %s %.1fms key=%s", req.method, _route(req), status,
                           elapsed * 1000, caller())  # fmt: skip
        return response


def metrics_response(extra_collector: object) -> Response:
    """Prometheus text: this process's (or every gunicorn worker's) request metrics, plus Redis-held
    task metrics, queue depths and consumers."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    task_registry = CollectorRegistry()
    task_registry.register(extra_collector)
    return Response(body + generate_latest(task_registry), content_type=CONTENT_TYPE_LATEST)
