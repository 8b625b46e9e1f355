"""Idempotency-Key on the batch posts (results, events): a retried request gets the first answer.

The first request with a key reserves it (SET NX) with the hash of its route and canonical JSON
body, then stores its response there. A retry with the same body replays that response; with a
different body it is 422; while the first is still being handled it is 409 (retry shortly). A
request that is refused (4xx) or fails releases the key: nothing was stored under it.

The reservation is a lease of LEASE_S held by a token of the request handling it, renewed every
RENEW_EVERY_S by a thread while the request runs: an API worker killed mid-request (gunicorn's
timeout, an OOM kill, a deploy) stops renewing, and its key frees within LEASE_S, so the client's
retry is handled instead of being told 409 for a minute. Only the owner renews, releases or answers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator

import redis
from flask import Response, request

from services.api.auth import caller
from services.api.context import ctx, json_body
from services.api.errors import Problem
from shared import store

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
# A reservation lapses this long after its owner stops renewing it (it renews every RENEW_EVERY_S).
LEASE_S = 5.0
RENEW_EVERY_S = 1.0


def _key_problem(
    status: int, slug: str, title: str, detail: str, reason: str, headers: dict | None = None
) -> Problem:
    errors = [{"pointer": "", "field": HEADER, "detail": reason}]
    return Problem(status, slug, title, detail, headers, errors=errors)


def _request_key() -> tuple[str, str] | None:
    """(Idempotency-Key, hash of route and canonical body) when the caller sent the header."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not KEY_PATTERN.fullmatch(key):
        reason = "must be 1-128 visible ASCII characters"
        raise _key_problem(
            422, "invalid-input", "The request is not valid", f"{HEADER} header: {reason}", reason
        )
    # The parsed body, canonical: the same JSON re-indented or with keys reordered is the same request.
    body = store.canonical(json_body())
    return key, hashlib.sha256(request.path.encode() + b"\0" + body).hexdigest()


def _answer_to_retry(stored: dict, request_hash: str) -> Response:
    if stored["request_hash"] != request_hash:
        raise _key_problem(
            422, "idempotency-key-reused", "Idempotency-Key reused",
            f"This {HEADER} was used with a different body; use a new key for a new request.",
            "reused with a different body",
        )  # fmt: skip
    if stored["status"] is None:
        raise _key_problem(
            409, "idempotency-key-in-use", "Request in progress",
            f"A request with this {HEADER} is still being handled; retry shortly.", "in use",
            headers={"Retry-After": "1"},
        )  # fmt: skip
    response = Response(store.remembered_body(stored), status=stored["status"], mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


@contextlib.contextmanager
def _lease(r: redis.Redis, who: str, key: str, owner: str) -> Iterator[None]:
    """Renew the reservation every RENEW_EVERY_S while the request runs (a daemon thread: it dies with
    the process, and the lease lapses)."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(RENEW_EVERY_S):
            try:
                if not store.renew_idempotency_key(r, who, key, owner, LEASE_S):
                    return
            except redis.exceptions.RedisError:
                continue  # Redis unavailable: the request meets it too and answers 503

    thread = threading.Thread(target=renew, name="idempotency-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    @functools.wraps(view)
    def run(*args: object, **kwargs: object) -> Response:
        idem = _request_key()
        if idem is None:
            return view(*args, **kwargs)
        c, who = ctx(), caller()
        key, request_hash = idem
        owner = secrets.token_hex(8)
        stored = store.reserve_idempotency_key(c.redis, who, key, request_hash, LEASE_S, owner)
        if stored is not None:
            return _answer_to_retry(stored, request_hash)
        try:
            with _lease(c.redis, who, key, owner):
                response = view(*args, **kwargs)
        except BaseException:
            # With Redis gone (the view's 503) the release fails too: the reservation then lapses
            # within LEASE_S, and a retry meanwhile is told 409, retry shortly.
            with contextlib.suppress(redis.exceptions.RedisError):
                store.release_idempotency_key(c.redis, who, key, owner)
            raise
        try:
            if response.status_code >= 300:
                store.release_idempotency_key(c.redis, who, key, owner)
            else:
                store.remember_response(
                    c.redis, who, key, request_hash, response.status_code, response.get_data(),
                    c.settings.idempotency_ttl_s, owner,
                )  # fmt: skip
        except redis.exceptions.RedisError as exc:
            # The write itself is stored: its 202 stands. A retry meets the reservation (409, retry) until
            # it lapses (LEASE_S), then is stored again as "unchanged": the data's own idempotency holds.
            log.warning("could not remember an Idempotency-Key answer: %s", type(exc).__name__)
        return response

    return run
