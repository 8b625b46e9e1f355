"""gunicorn's own error answers, as problem+json like every other error of the API.

gunicorn refuses some requests before the app sees them: a request line or header it cannot parse
(400), a request line over ``limit_request_line`` (414), headers over ``limit_request_fields`` or
``limit_request_field_size`` (431), an unsupported transfer coding (501), an ``Expect`` it does not
meet (417). It writes those answers itself, as HTML, through ``gunicorn.util.write_error`` (called
from ``Worker.handle_error``, looked up on the module at each call). There is no gunicorn setting
for their format, so :func:`install` replaces that one function, in the process that runs the app:
``create_app`` calls it, whichever way gunicorn was started (no config file or worker class to keep
in step with the deployment). The answer keeps gunicorn's status and ``Connection: close``.

The request's path is not known there (a request line that could not be parsed has none), so
``instance`` is empty. gunicorn's message says what was wrong (never a header's value: the request
line at most, which the client sent itself), cut to ``MAX_DETAIL`` characters.
"""

from __future__ import annotations

import socket

import orjson

PROBLEM_MIME = "application/problem+json"
MAX_DETAIL = 300
# The app's own slugs where one exists (services/api/errors.py), else the reason phrase's.
_SLUGS = {500: "internal-error"}


def problem_bytes(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP/1.1 answer: status line, headers, problem document."""
    slug = _SLUGS.get(status) or reason.lower().replace(" ", "-")
    detail = message.strip() or reason
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    body = orjson.dumps(
        {"type": f"/problems/{slug}", "title": reason, "status": status, "detail": detail, "instance": ""}
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {PROBLEM_MIME}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error(sock, status_int, reason, mesg)``."""
    from gunicorn import util

    util.write_nonblock(sock, problem_bytes(int(status_int), str(reason), str(mesg)))


def install() -> bool:
    """Make gunicorn write its own error answers as problem+json (harmless in a process that does not
    serve with gunicorn: nothing else calls the function); False when gunicorn is not installed."""
    try:
        from gunicorn import util
    except ImportError:  # pragma: no cover - another WSGI server
        return False
    util.write_error = write_problem
    return True
