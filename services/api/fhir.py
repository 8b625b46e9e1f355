"""FHIR R4 REST under /fhir (http://hl7.org/fhir/R4/http.html): HTTP only; the mapping is shared/interop.

Bodies are read as the JSON routes read them (services/api/context.py: MAX_BODY_BYTES, depth, duplicate
keys), sent as application/fhir+json (application/json is taken too); answers are application/fhir+json.
Every error under /fhir is an OperationOutcome, also those the app answers before a route runs (401/403
from auth, 429, 503, 404, 405, 413, 415): their problem+json is rewritten here, keeping status and headers,
with the problem type in issue.details (FHIR clients read OperationOutcome, not RFC 9457).
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app, request

from services.api.auth import caller
from services.api.context import ctx, json_body
from services.api.errors import PROBLEM_MIME, Problem
from shared.interop import fhir_read, fhir_write
from shared.interop.codes import CodeMap, load_code_map
from shared.interop.fhir import FhirInvalid, Issue
from shared.interop.fhir_out import (
    FHIR_MIME,
    capability_statement,
    observation,
    operation_outcome,
    outcome_from_problem,
    searchset,
)

bp = Blueprint("fhir", __name__)

# application/json+fhir is DSTU2's FHIR media type, still sent by EHRs (http://hl7.org/fhir/R4/http.html#mime-type)
_ACCEPTED_MEDIA = ("application/fhir+json", "application/json", "application/json+fhir")
_JSON_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")


def _fhir(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype=FHIR_MIME, headers=headers)


def _base_url() -> str:
    return request.url_root.rstrip("/") + "/fhir"


def _codes() -> CodeMap:
    ext = current_app.extensions
    if "cml.lab_codes" not in ext:  # read once per app: LAB_CODES_FILE does not change while it runs
        ext["cml.lab_codes"] = load_code_map(ctx().settings.lab_codes_file)
    return ext["cml.lab_codes"]


def _door() -> fhir_write.Door:
    c = ctx()
    rule = request.url_rule.rule if request.url_rule else request.path
    return fhir_write.Door(
        c.redis,
        c.celery,
        _codes(),
        c.settings.patient_id_authority,
        caller(),
        f"{request.method} {rule}",
        c.write_policy,
    )


def _body() -> object:
    if request.mimetype not in _ACCEPTED_MEDIA:
        raise Problem(
            415, "unsupported-media-type", "Unsupported media type", "Send the body as application/fhir+json."
        )
    return json_body(media_checked=True)


@bp.before_request
def _format() -> None:
    """JSON only: ``_format`` other than json, or an Accept header taking no JSON, is 406
    (http://hl7.org/fhir/R4/http.html#mime-type); ``_format=json`` is taken and ignored."""
    fmt = request.args.get("_format")
    accepts = request.accept_mimetypes
    takes_json = not request.headers.get("Accept") or accepts.best_match(list(_JSON_FORMATS[1:]))
    if (fmt is not None and fmt not in _JSON_FORMATS) or not takes_json:
        raise FhirInvalid(
            406,
            [Issue("error", "not-supported", "_format", "this server answers application/fhir+json only")],
        )


@bp.errorhandler(FhirInvalid)
def _invalid(err: FhirInvalid) -> Response:
    return _fhir(operation_outcome(err.issues), err.status)


@bp.after_app_request
def _problems_as_outcomes(response: Response) -> Response:
    """A problem+json answer under /fhir becomes an OperationOutcome (same status and headers)."""
    if response.mimetype != PROBLEM_MIME or not (
        request.path == "/fhir" or request.path.startswith("/fhir/")
    ):
        return response
    problem = orjson.loads(response.get_data())
    slug = str(problem.get("type", "/problems/error")).rsplit("/", 1)[-1]
    outcome = outcome_from_problem(
        response.status_code, slug, problem.get("title", ""), problem.get("detail", "")
    )
    response.set_data(orjson.dumps(outcome))
    response.mimetype = FHIR_MIME
    return response


@bp.get("/fhir/metadata")
def metadata() -> Response:
    """Public, as FHIR servers publish their CapabilityStatement (http://hl7.org/fhir/R4/http.html#capabilities)."""
    return _fhir(capability_statement(_base_url()))


def _written(answer: fhir_write.Answer) -> Response:
    headers = {"Location": f"/fhir/{answer.location}"} if answer.location else None
    return _fhir(answer.body, answer.status, headers)


@bp.post("/fhir/Observation")
def create() -> Response:
    """Create; with If-None-Exist a conditional create (http://hl7.org/fhir/R4/http.html#ccreate)."""
    body = _body()
    write = fhir_write.Write("POST", request.headers.get("If-None-Exist") or None, "If-None-Exist")
    return _written(fhir_write.write_one(_door(), body, write, prefer=request.headers.get("Prefer", "")))


@bp.put("/fhir/Observation")
def conditional_update() -> Response:
    """Conditional update (http://hl7.org/fhir/R4/http.html#cond-update)."""
    body = _body()
    query = request.query_string.decode("utf-8", "replace")
    if not [k for k in request.args if k != "_format"]:
        raise FhirInvalid(
            400, [Issue("error", "required", "Observation", "PUT /fhir/Observation?identifier=...")]
        )
    return _written(fhir_write.write_one(_door(), body, fhir_write.Write("PUT", query, "Observation")))


@bp.put("/fhir/Observation/<result_id>")
def update(result_id: str) -> Response:
    """Update by id (http://hl7.org/fhir/R4/http.html#update): the id is the result id, so the
    Observation's identifier[0].value must be it; an unknown id is created (updateCreate)."""
    body = _body()
    write = fhir_write.Write("PUT", None, "Observation.id", result_id)
    return _written(fhir_write.write_one(_door(), body, write))


@bp.post("/fhir")
def bundle() -> Response:
    body = _body()
    return _written(fhir_write.write_bundle(_door(), body, ctx().settings.max_batch))


@bp.get("/fhir/Observation")
def search() -> Response:
    q = fhir_read.parse_search(request.args.to_dict(flat=False))
    found, total, behind = fhir_read.search(ctx().redis, q)
    notes = []
    if behind:
        notes.append(
            Issue(
                "information",
                "informational",
                "Observation",
                "some results were scored at read time: the patient's recomputation is pending",
            )
        )
    links = fhir_read.links(q, total, _base_url())
    return _fhir(searchset(found, total, _base_url(), links, notes))


@bp.get("/fhir/Observation/<result_id>")
def read(result_id: str) -> Response:
    found = fhir_read.read(ctx().redis, result_id)
    if found is None:
        raise FhirInvalid(404, [Issue("error", "not-found", "Observation.id", f"no Observation {result_id}")])
    return _fhir(observation(found))
