"""gunicorn settings for the API, the one place both ``./scripts/run`` and docker-compose take them from:
``gunicorn -c services/api/gunicorn_conf.py -b HOST:PORT 'services.api:create_app()'``.

Slow clients (README, "Operations"). A sync worker serves one connection at a time: two clients that
send headers and part of a body held both of the old two sync workers until the 30 s timeout killed
them, and ``/healthz`` did not answer meanwhile (tests/test_slow_clients.py). gunicorn's docs put sync
workers behind a buffering proxy, which docker-compose does (nginx, deploy/nginx/nginx.conf); the
threaded worker makes the bare gunicorn of ``./scripts/run`` resist a handful of them too: a slow
client holds one thread of one worker, and ``CLIENT_IDLE_TIMEOUT_S`` bounds how long it may stay
silent mid-request. Many slow clients still need the proxy: that is what it is for.
"""

from __future__ import annotations

import os

# Processes x threads: each thread serves one request at a time. WEB_CONCURRENCY is gunicorn's own name.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))

# A threaded worker heartbeats from its main loop, so `timeout` kills a worker whose process is stuck
# (not one slow request); `graceful_timeout` lets requests in flight finish on a restart or SIGTERM.
timeout = 30
graceful_timeout = 20
# Idle keep-alive connections close after this (above nginx's upstream keepalive_timeout of 4 s, so
# nginx never reuses a connection gunicorn is closing).
keepalive = 5

# Request line and headers: as large as nginx lets through (large_client_header_buffers 4 8k), no more.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Paths carry patient ids: no access log (the app logs routes; README, "Operations").
accesslog = None
# gunicorn 25+ opens a control socket at one per-user path: several gunicorns (the tests, other
# instances on the host) would contend for it, and nothing here uses gunicornc.
control_socket_disable = True

# A client silent this long while sending its body (or reading the response) loses its connection,
# and the thread goes back to the pool (nginx's client_body_timeout and send_timeout do the same).
CLIENT_IDLE_TIMEOUT_S = float(os.environ.get("CLIENT_IDLE_TIMEOUT_S", "10"))


def pre_request(worker, req):
    """Bound each read and write on the client's socket while the app serves the request: gthread
    reads the body on a blocking socket without a timeout, so a stalled client held its thread for
    as long as it kept the connection open. The worker resets the socket for keep-alive afterwards."""
    sock = getattr(getattr(req, "unreader", None), "sock", None)
    if sock is not None:
        sock.settimeout(CLIENT_IDLE_TIMEOUT_S)
