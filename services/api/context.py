"""Per-app resources (Redis client, Celery client, settings) and the helpers routes share."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
import redis
from celery import Celery
from flask import current_app, request

from services.api.auth import caller
from services.api.errors import Problem
from shared import intake, store
from shared.config import Settings

log = logging.getLogger(__name__)

try:  # the chunk-framing errors gunicorn raises while the body is read
    from gunicorn.http.errors import ParseException as _ChunkError
except ImportError:  # pragma: no cover - another WSGI server

    class _ChunkError(Exception):  # type: ignore[no-redef]
        pass


@dataclass
class ApiContext:
    settings: Settings
    redis: redis.Redis
    celery: Celery
    # REDIS_READ_URL's replica for the hot reads (store.read_preferring), or None.
    replica: redis.Redis | None = None

    @property
    def replication(self) -> store.Replication:
        return self.write_policy.replication

    @cached_property
    def write_policy(self) -> intake.WritePolicy:
        """Derived once from the settings (not per request: same_redis builds URLs to compare)."""
        return intake.WritePolicy.of(self.settings)


def ctx() -> ApiContext:
    return current_app.extensions["cml"]


_PARSED = "cml.json_body"
# Deeper than any document the API takes (a batch of results is two levels); orjson's serialiser,
# which the canonical hash uses, refuses more than 254 levels, and a deeper body must be a 4xx.
MAX_DEPTH = 32
_READ_CHUNK = 64 * 1024


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "request-entity-too-large", "Request Entity Too Large",
        f"The body is larger than {limit} bytes (MAX_BODY_BYTES).",
    )  # fmt: skip


def _malformed(detail: str) -> Problem:
    return Problem(400, "malformed-json", "Malformed JSON", detail)


def _read_body() -> bytes:
    """The body, bounded by MAX_BODY_BYTES however it is framed. With Content-Length, werkzeug refuses
    a longer one up front (413). A chunked body has no length: gunicorn passes it through as a stream
    (``wsgi.input_terminated``), and werkzeug's limit would stop reading at the limit and hand back
    the first MAX_BODY_BYTES as if they were the whole body. So it is read here, one byte past the
    limit: more than the limit is a 413, never a truncated parse; bad chunk framing is a 400."""
    limit = ctx().settings.max_body_bytes
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=True)
    stream = request.environ["wsgi.input"]
    parts, size = [], 0
    try:
        while size <= limit:
            chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
    except (OSError, ValueError, _ChunkError) as exc:
        # gunicorn: InvalidChunkSize, ChunkMissingTerminator, ... (ParseException); NoMoreData (OSError)
        # when the client stops before the last chunk.
        raise Problem(
            400, "malformed-body", "Malformed body",
            f"The chunked body could not be read ({type(exc).__name__}).",
        ) from exc  # fmt: skip
    if size > limit:
        raise _too_large(limit)
    return b"".join(parts)


# Every JSON string, escapes included: what is left once they are removed holds a colon per object key.
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _canonical_tree(value: Any) -> tuple[int, int]:
    """Walk a parsed body once (iteratively: orjson parses up to 1024 levels): make every number
    canonical in place (canonical_number), and return its nesting depth and how many keys its
    objects hold."""
    deepest, keys, stack = 0, 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if type(node) is dict:
            keys += len(node)
            for k, child in node.items():
                t = type(child)
                if t is float or t is int:
                    node[k] = float(child) + 0.0
                elif t is dict or t is list:
                    stack.append((child, depth + 1))
        elif type(node) is list:
            for i, child in enumerate(node):
                t = type(child)
                if t is float or t is int:
                    node[i] = float(child) + 0.0
                elif t is dict or t is list:
                    stack.append((child, depth + 1))
    return deepest, keys


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> None:
    # Python's json and orjson keep the last of duplicate keys; an interface engine that keeps the
    # first would read another result than the one stored (design-notes.md, "Under pressure").
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)


def canonical_number(value: float | int) -> float:
    """Every JSON number as the double it denotes, with -0 as 0: ``100000``, ``100000.0`` and ``1e5``
    are one value and hash alike, and ``-0.0`` copies are stored as ``0.0``."""
    return float(value) + 0.0


def _parse(raw: bytes) -> Any:
    """Strict JSON: orjson (it refuses NaN, invalid UTF-8 and lone surrogates, and bounds depth), then a
    bounded depth, then duplicate keys, which orjson cannot tell: the body's text names more keys than
    the parsed objects hold only if an object repeats one, and only then does Python's parser find
    which. Numbers come out canonical (canonical_number)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _malformed(f"The body is not valid JSON: {exc}") from exc
    depth, keys = _canonical_tree(body)
    if depth > MAX_DEPTH:
        raise _malformed(f"The body is nested {depth} levels deep; at most {MAX_DEPTH} are accepted.")
    if keys and _STRINGS.sub(b"", raw).count(b":") != keys:
        try:
            json.loads(raw, object_pairs_hook=_refuse_duplicates)
        except _DuplicateKey as exc:
            key = exc.args[0]
            raise Problem(
                400, "duplicate-key", "Duplicate key",
                f"The key {key!r} appears twice in one object; send each key once.",
                errors=[{"pointer": "", "field": key, "detail": "appears twice in one object"}],
            ) from exc  # fmt: skip
        except (ValueError, OverflowError, RecursionError) as exc:  # orjson said it was valid: be safe
            raise _malformed(f"The body is not valid JSON: {type(exc).__name__}") from exc
        raise _malformed("The body is not valid JSON: its objects' keys could not be counted")
    return body


def json_body(media_checked: bool = False) -> Any:
    """The request body parsed as JSON (once per request: the Idempotency-Key hash and the route both
    read it), or a 415/413/400 problem saying what is wrong with it: larger than MAX_BODY_BYTES however
    it is sent, malformed, nested deeper than MAX_DEPTH, or repeating a key in one object.
    ``media_checked``: the caller has checked the media type itself (FHIR takes application/json+fhir)."""
    cached = request.environ.get(_PARSED)
    if cached is not None:
        return cached[0]
    if not media_checked and not request.is_json:
        raise Problem(
            415, "unsupported-media-type", "Unsupported media type", "Send the body as application/json."
        )
    body = _parse(_read_body())
    request.environ[_PARSED] = (body,)  # on the request itself: flask.g may outlive one request
    return body


def audit_entry(**ids: object) -> dict:
    """Who did what when, for the audit stream (written atomically with the data it describes)."""
    rule = request.url_rule.rule if request.url_rule else request.path
    return intake.audit_record(caller(), f"{request.method} {rule}", **ids)


def enqueue(task: str, item_id: str, task_id: str | None = None) -> None:
    """Send a task (a failure is only logged: the sweeper requeues the dirty item)."""
    intake.enqueue(ctx().celery, task, item_id, task_id=task_id)


def dispatch(outcome: store.WriteOutcome) -> list[dict]:
    """Track and enqueue the recomputations a write calls for; return how to follow them."""
    c = ctx()
    return intake.dispatch(c.redis, c.celery, outcome, c.settings.task_ttl_s)
