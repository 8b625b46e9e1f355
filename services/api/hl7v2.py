"""POST /v1/hl7v2: an HL7 v2 ORU^R01 (or an FHS/BHS batch) in, its ACK out (shared/interop/hl7v2.py).

The ACK is the answer whatever the outcome; the HTTP status repeats it for clients that only read the
status line: 200 AA, 422 AE (content refused), 409 AE (a conflict with what is stored, or a control id
re-used for another message), 400 AR (not a message this service takes), 503 AR (maybe not stored:
re-send). What the app refuses before a message is read (401, 403, 413, 415, 429, 503, ...) is an ACK
too: its problem+json is rewritten here into an AR (HL7 v2.5 section 2.9.2) with one ERR carrying the
problem's detail, keeping status and headers (Retry-After, WWW-Authenticate), as /fhir rewrites them into
OperationOutcomes. The ACK is written in the message's character set (MSH-18) and says so in its
Content-Type.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app, request

from services.api.auth import caller
from services.api.context import _read_body, ctx
from services.api.errors import PROBLEM_MIME, Problem
from shared.interop.hl7_ack import Ack, build_ack, escape
from shared.interop.hl7_oru import INTERNAL_ERROR, Header, Issue
from shared.interop.hl7v2 import Door, handle_message, header_of

bp = Blueprint("hl7v2", __name__)

ER7 = "x-application/hl7-v2+er7"
MEDIA_TYPES = (ER7, "text/plain")
CODES = "cml.hl7_codes"  # the lab code map, loaded once by create_app (a bad LAB_CODES_FILE fails start-up)
ROUTE = "/v1/hl7v2"


def _content_type(mimetype: str, ack: Ack) -> str:
    return f"{mimetype}; charset={ack.charset}"


@bp.post(ROUTE)
def post_hl7v2() -> Response:
    if request.mimetype not in MEDIA_TYPES:
        raise Problem(
            415, "unsupported-media-type", "Unsupported media type",
            f"Send one ER7 message (or an FHS/BHS batch) as {ER7} or text/plain.",
        )  # fmt: skip
    c = ctx()
    door = Door(caller(), "POST /v1/hl7v2")
    ack = handle_message(c.redis, c.celery, _read_body(), door, c.settings, current_app.extensions[CODES])
    response = Response(ack.encoded(), status=ack.http_status)
    response.headers["Content-Type"] = _content_type(request.mimetype, ack)
    if ack.retry:
        response.headers["Retry-After"] = "1"
    return response


def _sender(status: int) -> Header:
    """The message's MSH, for MSA-2, when its body is at hand and small enough to read: an oversized
    (413) or unframed (chunked) body is not read here."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    length = request.content_length
    if status == 413 or length is None or length > limit:
        return Header()
    return header_of(request.get_data(cache=True))


@bp.after_app_request
def _problems_as_acks(response: Response) -> Response:
    """A problem+json answer on /v1/hl7v2 becomes an ACK AR (same status and headers)."""
    if response.mimetype != PROBLEM_MIME or request.path != ROUTE:
        return response
    problem = orjson.loads(response.get_data())
    slug = str(problem.get("type", "/problems/error")).rsplit("/", 1)[-1]
    # ERR-5 (application error code, section 2.15.5.5) carries the problem type, ERR-8 its detail.
    app_code = f"{escape(slug)}^{escape(str(problem.get('title', '')))}"
    issue = Issue(None, INTERNAL_ERROR, str(problem.get("detail", "")), app_code=app_code)
    ack = build_ack(_sender(response.status_code), "AR", [issue], response.status_code)
    response.set_data(ack.encoded())
    response.headers["Content-Type"] = _content_type(ER7, ack)
    return response
