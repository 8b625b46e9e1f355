"""POST /v1/hl7v2: an HL7 v2 ORU^R01 (or an FHS/BHS batch) in, its ACK out (shared/interop/hl7v2.py).

The ACK is the answer whatever the outcome; the HTTP status repeats it for clients that only read the
status line: 200 AA, 422 AE (content refused), 409 AE (a conflict with what is stored, or a control id
re-used for another message), 400 AR (not a message this service takes), 503 AR (not stored: re-send).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from services.api.auth import caller
from services.api.context import _read_body, ctx
from services.api.errors import Problem
from shared.interop.hl7v2 import Door, handle_message

bp = Blueprint("hl7v2", __name__)

ER7 = "x-application/hl7-v2+er7"
MEDIA_TYPES = (ER7, "text/plain")
CODES = "cml.hl7_codes"  # the lab code map, loaded once by create_app (a bad LAB_CODES_FILE fails start-up)


@bp.post("/v1/hl7v2")
def post_hl7v2() -> Response:
    if request.mimetype not in MEDIA_TYPES:
        raise Problem(
            415, "unsupported-media-type", "Unsupported media type",
            f"Send one ER7 message (or an FHS/BHS batch) as {ER7} or text/plain.",
        )  # fmt: skip
    c = ctx()
    door = Door(caller(), "POST /v1/hl7v2")
    ack = handle_message(c.redis, c.celery, _read_body(), door, c.settings, current_app.extensions[CODES])
    response = Response(ack.text, status=ack.http_status, mimetype=request.mimetype)
    if ack.retry:
        response.headers["Retry-After"] = "1"
    return response
