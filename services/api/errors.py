"""Error mapping: every error leaves the API as RFC 9457 application/problem+json.

A problem names what went wrong and, for bad input, each offending field as a JSON pointer into the
request body (``/3/control_copies`` is item 3 of a batch), so an interface engineer can fix the
message without reading our code.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

import orjson
import redis
from flask import Flask, Response, request
from kombu.exceptions import OperationalError
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from shared.faults import is_transient
from shared.schemas import ID_PATTERN
from shared.store import NotReplicated

log = logging.getLogger(__name__)

PROBLEM_MIME = "application/problem+json"


class Problem(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, headers: dict | None = None, **extra: Any
    ):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.extra = status, slug, title, detail, extra
        self.headers = headers


def invalid_parameter(param: str, detail: str) -> Problem:
    """A 422 naming a path or query parameter (pointer ``/<param>``: there is no body to point into)."""
    return Problem(
        422, "invalid-input", "The request is not valid", f"{param}: {detail}",
        errors=[{"pointer": f"/{param}", "field": param, "detail": detail}],
    )  # fmt: skip


def checked_id(param: str, value: str) -> str:
    """A patient or cohort id from the path, held to the same alphabet as ids in bodies."""
    if not re.fullmatch(ID_PATTERN, value):
        raise invalid_parameter(param, "must be 1-64 characters: letters, digits and . _ : -")
    return value


def problem_response(
    status: int, slug: str, title: str, detail: str, headers: dict | None = None, **extra: Any
) -> Response:
    body = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    return Response(orjson.dumps(body), status=status, mimetype=PROBLEM_MIME, headers=headers)


def _pointer(path: tuple) -> str:
    # RFC 6901: "" is the whole document, "/3/control_copies" a field of item 3.
    return "".join(f"/{p}" for p in path)


def flatten_messages(messages: Any, path: tuple = ()) -> list[dict[str, str]]:
    """Turn marshmallow's nested messages into [{pointer, field, detail}]."""
    if isinstance(messages, dict):
        # "_schema" holds errors of the object itself: they point at the object, not a field.
        return [
            e
            for key, value in messages.items()
            for e in flatten_messages(value, path if key == "_schema" else (*path, key))
        ]
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        field = next((str(p) for p in reversed(path) if not isinstance(p, int)), "")
        return [{"pointer": _pointer(path), "field": field, "detail": m} for m in messages]
    if isinstance(messages, list):
        return [e for i, m in enumerate(messages) for e in flatten_messages(m, (*path, i))]
    return [{"pointer": _pointer(path), "field": "", "detail": str(messages)}]


def validation_problem(err: ValidationError, prefix: tuple = ()) -> Response:
    errors = flatten_messages(err.messages, prefix)
    detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    return problem_response(422, "invalid-input", "The request body is not valid", detail, errors=errors)


def _stacks(exc: BaseException) -> str:
    """The stacks of an exception and of those it was raised from, by type, never by message: an
    exception's text may quote a patient id or a value."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}:\n{''.join(traceback.format_tb(current.__traceback__))}")
        current = current.__cause__ or current.__context__
    return "during which, or from:\n".join(reversed(parts))


def store_unavailable_reason(exc: BaseException) -> str:
    """A word for why Redis is unavailable, for clients and ops (never the reply's text)."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if isinstance(current, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
            return "out of memory"
        if isinstance(current, redis.exceptions.BusyLoadingError):
            return "loading"
        if isinstance(current, redis.exceptions.ReadOnlyError):
            return "read-only"
        if isinstance(current, redis.exceptions.TimeoutError):
            return "timeout"
        if isinstance(current, redis.exceptions.ConnectionError):
            return "connection"
        current = current.__cause__ or current.__context__
    return "unavailable"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> Response:
        return validation_problem(exc)

    @app.errorhandler(NotReplicated)
    def _not_replicated(exc: NotReplicated) -> Response:
        # Stored on the primary, not (yet) on WRITE_REPLICAS replicas: not acknowledged, since a failover
        # now could lose it (issue 12). The retry is a no-op on the primary that waits for them again.
        log.warning("write not replicated: %s of %s replicas", exc.confirmed, exc.wanted)
        return problem_response(
            503,
            "not-replicated",
            "The write is not yet replicated",
            f"The write is stored on the primary but not yet replicated: {exc.confirmed} of the "
            f"{exc.wanted} replicas required (WRITE_REPLICAS) confirmed it within {exc.timeout_ms} ms, "
            "so it is not acknowledged. Retry it with the same content (and Idempotency-Key): the "
            "retry stores nothing twice (it is answered as unchanged) and waits for the replicas again.",
            headers={"Retry-After": "1"},
            reason="not replicated",
            replicas_required=exc.wanted,
            replicas_confirmed=exc.confirmed,
        )

    @app.errorhandler(redis.exceptions.RedisError)
    @app.errorhandler(OperationalError)
    def _store_down(exc: Exception) -> Response:
        if not is_transient(exc):
            return _unexpected(exc)
        # Unavailable for a while: out of memory, loading, failing over, not answering in time. The
        # request may have taken effect (a write can land as Redis resumes from a stall, or be stored
        # before its enqueue failed): say so, and that a retry with the same content is safe
        # (design-notes.md, "durable before the 202"; a result stored twice is "unchanged").
        reason = store_unavailable_reason(exc)
        log.warning("store unavailable: %s (%s)", type(exc).__name__, reason)
        return problem_response(
            503,
            "store-unavailable",
            "The data store is unavailable",
            f"Redis is unavailable ({reason}). The outcome of this request is unknown: it may or may "
            "not have been stored. Retrying it with the same content (and Idempotency-Key) is safe.",
            headers={"Retry-After": "2"},
            reason=reason,
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        slug = (exc.name or "error").lower().replace(" ", "-")
        # Keep the exception's own headers but its HTML content type: a 405 must say Allow (RFC 9110).
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return problem_response(exc.code or 500, slug, exc.name, exc.description or exc.name, headers or None)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if is_transient(exc):  # wrapped by a library in an exception of its own
            return _store_down(exc)
        log.error(
            "unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url_rule, _stacks(exc)
        )
        return problem_response(500, "internal-error", "Internal error", "An unexpected error occurred.")
