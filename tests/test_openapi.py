"""The OpenAPI document (openapi.yaml) against the real app: valid 3.1, same routes, real answers conform.

Every exchange below goes through the real Flask app, the real Redis and the real Celery worker of
conftest.py; each request/response pair is then validated with openapi-core. Each scenario test also
checks that it exercised every response status the spec documents for the operations it covers (500
is never triggered on purpose; 503 is covered by the store-down test; 401, 403 and 429 by the
authentication and rate-limit tests, for every operation), so a status added to the spec without a
test, or a test whose status is missing from the spec, fails.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import validate as validate_spec
from openapi_spec_validator.versions.shortcuts import get_spec_version
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Response

from shared import keys, store
from tests.conftest import FULL_KEY, SCOPED_KEYS
from tests.procs import wait_for
from tests.support import register, result, wait_status

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
JSON = "application/json"
PROBLEM = "application/problem+json"
FHIR = "application/fhir+json"  # FHIR routes answer errors as OperationOutcome (services/api/fhir.py)
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
NEVER_TRIGGERED = {"500"}  # the catch-all handler; no request makes the app fail on purpose
GUARDED = {"401", "403", "429"}  # answered before the route runs; covered per operation by their own tests
AUTH = {"Authorization": f"Bearer {FULL_KEY}"}
PATIENT = "/v1/patients/{patient_id}"
EVENTS = "/v1/patients/{patient_id}/events"
STATUS = "/v1/patients/{patient_id}/status"
WORKLIST = "/v1/patients"
TIMELINE = "/v1/patients/{patient_id}/results"
RESULTS = "/v1/assay-results"
TASK = "/v1/tasks/{task_id}"
COHORTS = "/v1/cohorts"
COHORT = "/v1/cohorts/{cohort_id}"
STATISTICS = "/v1/cohorts/{cohort_id}/statistics"
CURVE = "/v1/cohorts/{cohort_id}/curve"
COMPARE = "/v1/cohorts/compare"
QUEUES = "/v1/ops/queues"
AUDIT = "/v1/ops/audit"
DEAD_LETTERS = "/v1/ops/dead-letters"
RETRY = "/v1/ops/dead-letters/{kind}/{item_id}/retry"
METRICS = "/metrics"
FHIR_BASE, FHIR_OBS, FHIR_READ, FHIR_META = (
    "/fhir",
    "/fhir/Observation",
    "/fhir/Observation/{result_id}",
    "/fhir/metadata",
)
PNG, SVG, TEXT = "image/png", "image/svg+xml", "text/plain"
HL7V2, ER7 = "/v1/hl7v2", "x-application/hl7-v2+er7"
REGISTRATION = {"cohorts": ["ACTIM"], "enrolled_on": "2023-01-10", "tki": "Imatinib",
                "tki_started_on": "2019-06-01", "dose_mg": 400}  # fmt: skip


def _json_loads(value: bytes, **parameters: str) -> Any:
    return json.loads(value)


def _text(value: bytes | str, **parameters: str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    # openapi-core only knows how to parse application/json; problem documents are JSON too.
    config = Config(
        extra_media_type_deserializers={PROBLEM: _json_loads, FHIR: _json_loads, ER7: _text, TEXT: _text}
    )
    return OpenAPI.from_file_path(str(SPEC_PATH), config=config)


def documented(spec: dict, method: str, path: str) -> set[str]:
    return set(spec["paths"][path][method]["responses"])


class Exchanges:
    """Sends requests through a test client and validates each request/response pair with openapi-core.
    Requests carry ``Authorization: Bearer <key>`` (the full-scope key unless told otherwise) unless the
    test passes its own Authorization header (``""``: none)."""

    def __init__(self, client, openapi: OpenAPI, spec: dict, key: str = FULL_KEY):
        self.client, self.openapi, self.spec, self.key = client, openapi, spec, key
        self.seen: set[tuple[str, str, str]] = set()

    def __call__(
        self,
        method: str,
        path: str,
        template: str,
        status: int,
        *,
        valid_request: bool | None = True,
        mimetype: str = JSON,
        **kw,
    ) -> TestResponse:
        """Send; check the status and media type; validate the response (and the request: conforming or
        not). ``mimetype`` is the media type a success must have; errors are problem+json, but for an
        operation answering another media type (HL7 v2's ACK) whatever status it documents with it."""
        kw["headers"] = {"Authorization": f"Bearer {self.key}", **kw.get("headers", {})}
        resp = self.client.open(path, method=method, **kw)
        assert resp.status_code == status, resp.get_data(as_text=True)
        # A fresh copy of the request (the app consumed the original body stream).
        request = WerkzeugOpenAPIRequest(EnvironBuilder(path=path, method=method, **kw).get_request())
        self.openapi.validate_response(request, WerkzeugOpenAPIResponse(resp))
        if valid_request is True:
            self.openapi.validate_request(request)
        elif valid_request is False:
            with pytest.raises(OpenAPIError):
                self.openapi.validate_request(request)
        if status >= 400 and template.startswith("/fhir"):
            assert resp.mimetype == FHIR and resp.get_json()["resourceType"] == "OperationOutcome"
        elif template == HL7V2:
            # Every answer is an ACK: the route's in the request's media type, the app's refusals before
            # the route (401, 403, 413, 415, 429, ...) in x-application/hl7-v2+er7 (services/api/hl7v2.py).
            assert resp.mimetype == (ER7 if mimetype == JSON else mimetype)
            assert ack_lines(resp)[1].startswith(("MSA|AA|", "MSA|AE|", "MSA|AR|"))
        elif status >= 400 and mimetype == JSON:
            assert resp.mimetype == PROBLEM
            assert resp.get_json()["status"] == status
        else:
            assert resp.mimetype == mimetype
        self.seen.add((method.lower(), template, str(status)))
        return resp

    def assert_covered(self, method: str, template: str, skip: set[str]) -> None:
        """Every status documented for the operation (except ``skip`` and GUARDED) was exercised."""
        method = method.lower()
        exercised = {s for m, t, s in self.seen if (m, t) == (method, template)} - GUARDED
        assert exercised == documented(self.spec, method, template) - skip - GUARDED, (method, template)

    def statuses(self, status: str) -> set[tuple[str, str]]:
        """The operations this exchange got ``status`` from."""
        return {(m, t) for m, t, s in self.seen if s == status}


def ack_lines(resp: TestResponse) -> list[str]:
    return resp.get_data().decode(resp.mimetype_params.get("charset", "utf-8")).strip("\r").split("\r")


def problem(resp: TestResponse) -> dict:
    """The problem an answer carries: problem+json as is; an OperationOutcome (under /fhir) carries the
    problem type in issue.details.coding and the detail in diagnostics; an HL7 v2 ACK (/v1/hl7v2) is an
    AR whose one ERR carries the problem type in ERR-5 and the detail in ERR-8."""
    if resp.mimetype == ER7:
        lines = ack_lines(resp)
        errs = [line.split("|") for line in lines if line.startswith("ERR|")]
        assert lines[1].startswith("MSA|AR|") and len(errs) == 1, lines
        return {"type": f"/problems/{errs[0][5].split('^')[0]}", "detail": errs[0][8]}
    body = resp.get_json()
    if body.get("resourceType") != "OperationOutcome":
        return body
    issue = body["issue"][0]
    return {"type": f"/problems/{issue['details']['coding'][0]['code']}", "detail": issue["diagnostics"]}


def documenting(spec: dict, status: str) -> set[tuple[str, str]]:
    """The operations whose spec documents ``status``."""
    return {(m, path) for path, item in spec["paths"].items() for m, op in item.items()
            if m in METHODS and status in op["responses"]}  # fmt: skip


@pytest.fixture
def call(client, openapi, spec) -> Exchanges:
    return Exchanges(client, openapi, spec)


# --- the document itself ----------------------------------------------------------------------------


def test_spec_is_valid_openapi_31(spec):
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["version"] == "0.1.0"
    assert get_spec_version(spec).major == "3" and get_spec_version(spec).minor == "1"
    validate_spec(spec)  # raises on any violation of the OpenAPI 3.1 schema or a dangling $ref


def test_spec_declares_the_schemas_clients_rely_on(spec):
    schemas = spec["components"]["schemas"]
    for name in ("AssayResult", "Patient", "Event", "PatientStatus", "Timeline", "Classification",
                 "TaskState", "Accepted202", "Problem", "Readiness", "CohortDefinition", "CohortList",
                 "CohortStatistics", "CohortCurve", "CohortComparison", "GroupTest", "QueueReport",
                 "AuditEntry", "AuditTrail", "DeadLetter", "DeadLetters", "DeadLetterRequeued"):  # fmt: skip
        assert name in schemas, name
    assert schemas["ResponseLevel"]["enum"] == ["NONE", "MR1", "MR2", "MMR", "MR4", "MR4.5", "MR5"]
    assert set(schemas["ErrorItem"]["required"]) == {"pointer", "field", "detail"}
    status = schemas["PatientStatus"]["properties"]
    for key in ("response_level", "is_percent", "first_reached", "computed_at", "data_version",
                "results_count", "pending"):  # fmt: skip
        assert key in status, key


def test_batch_limit_matches_the_configured_default(spec):
    from shared.config import load_settings

    body = spec["paths"]["/v1/assay-results"]["post"]["requestBody"]["content"][JSON]["schema"]
    batch = next(s for s in body["oneOf"] if s.get("type") == "array")
    assert batch["maxItems"] == load_settings().max_batch == 1000
    assert batch["minItems"] == 1


def test_cohort_schemas_match_the_code(spec):
    """Enumerations, defaults and limits the spec states are the ones the code applies."""
    from services.api.cohorts import MAX_HORIZONS
    from shared import cohorts
    from shared.clinical.response import LEVELS
    from shared.schemas import EVENT_TYPES, CohortSchema

    schemas, parameters = spec["components"]["schemas"], spec["components"]["parameters"]
    assert schemas["EventType"]["enum"] == list(EVENT_TYPES)
    assert schemas["EndpointLevel"]["enum"] == list(cohorts.ENDPOINT_LEVELS)
    defaults = {k: v.get("default") for k, v in schemas["CohortDefinition"]["properties"].items()}
    assert defaults == CohortSchema().load({}) == cohorts.DEFAULT_DEFINITION
    assert set(schemas["StoredCohortDefinition"]["required"]) == set(cohorts.DEFAULT_DEFINITION)
    horizons = parameters["Horizons"]["schema"]
    assert horizons["maxItems"] == MAX_HORIZONS and horizons["items"]["maximum"] == 600
    assert "`3,6,12,24,48`" in parameters["Horizons"]["description"]
    assert cohorts.DEFAULT_HORIZONS_MONTHS == (3, 6, 12, 24, 48)
    levels = schemas["CohortStatistics"]["allOf"][2]["properties"]["counts_by_level"]["required"]
    assert levels == [*reversed(LEVELS), "no_result"]


def test_security_matches_the_code(app, spec):
    """Each operation's security requirement lists (as roles) exactly the scopes auth.REQUIRED grants it
    by, its description names them, and it documents 401, 403 and 429."""
    from services.api.auth import PUBLIC, REQUIRED, SCOPES

    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert all(f"`{scope}`" in scheme["description"] for scope in SCOPES)
    assert spec["security"] == [{"bearerAuth": []}]  # the default for an operation that says nothing
    checked = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        template = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = spec["paths"][template][method.lower()]
            checked.add((method.lower(), template))
            if rule.endpoint in PUBLIC:
                assert op["security"] == [] and not GUARDED & set(op["responses"]), template
                continue
            assert all(list(requirement) == ["bearerAuth"] for requirement in op["security"]), template
            roles = {role for requirement in op["security"] for role in requirement["bearerAuth"]}
            assert roles == REQUIRED[rule.endpoint], (method, template)
            scope_line = next(line for line in op["description"].splitlines() if line.startswith("Scope:"))
            assert {s for s in SCOPES if f"`{s}`" in scope_line} == roles, (method, template)
            assert GUARDED & set(op["responses"]) == {"401", "403", "429"}, (method, template)
    assert len(checked) == len(REQUIRED) + len(PUBLIC - {"static"})


def test_ops_schemas_match_the_code(spec):
    from shared import keys
    from shared.queue import QUEUES, TASK_FOR_KIND

    schemas = spec["components"]["schemas"]
    report = schemas["QueueReport"]["properties"]
    assert report["queues"]["items"]["properties"]["queue"]["enum"] == list(QUEUES)
    assert set(report["backlog"]["required"]) == set(keys.DIRTY) == set(TASK_FOR_KIND)
    assert set(report["failed"]["required"]) == set(keys.DEAD) == set(TASK_FOR_KIND)
    dead = schemas["DeadLetter"]["properties"]
    assert dead["kind"]["enum"] == list(TASK_FOR_KIND) and dead["task"]["enum"] == list(
        TASK_FOR_KIND.values()
    )
    retry = spec["paths"][RETRY]["parameters"][0]
    assert retry["name"] == "kind" and retry["schema"]["enum"] == list(TASK_FOR_KIND)
    idempotency = spec["components"]["parameters"]["IdempotencyKey"]
    assert idempotency["name"] == "Idempotency-Key"
    ref = {"$ref": "#/components/parameters/IdempotencyKey"}
    assert spec["paths"][RESULTS]["post"]["parameters"] == [ref]
    assert spec["paths"][EVENTS]["post"]["parameters"] == [ref]
    from services.api.idempotency import KEY_PATTERN as IDEMPOTENCY_KEY

    spec_pattern = re.compile(idempotency["schema"]["pattern"])
    for probe in [chr(c) for c in range(256)] + ["k" * 128, "k" * 129, "lab-1:batch/2024"]:
        assert bool(spec_pattern.search(probe)) == bool(IDEMPOTENCY_KEY.fullmatch(probe)), repr(probe)


def _examples(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS or "requestBody" not in op:
                continue
            content = op["requestBody"]["content"]
            media_type = JSON if JSON in content else next(iter(content))
            media = content[media_type]
            found = {"example": media["example"]} if "example" in media else {}
            found |= {name: ex["value"] for name, ex in media.get("examples", {}).items()}
            assert found, f"{method.upper()} {path} has no request example"
            for name, value in found.items():
                path = path.replace("{patient_id}", "P-000042").replace("{cohort_id}", "ACTIM")
                path = path.replace("{result_id}", "LAB-2024-000123")
                if (method, path) == ("put", FHIR_OBS):
                    path += "?identifier=LAB-2024-000123"  # a conditional update names its identifier
                yield method, path, name, value, media_type


def test_request_examples_conform_to_their_schemas(spec, openapi):
    examples = list(_examples(spec))
    assert len(examples) >= 8
    for method, path, name, value, media_type in examples:
        if media_type in (JSON, FHIR):
            body = {"data": json.dumps(value), "content_type": media_type}
        else:
            body = {"data": value, "content_type": media_type}
        request = EnvironBuilder(path=path, method=method, headers=AUTH, **body).get_request()
        try:
            openapi.validate_request(WerkzeugOpenAPIRequest(request))
        except OpenAPIError as exc:
            pytest.fail(
                f"example {name!r} of {method.upper()} {path}: {exc!r} {getattr(exc, '__cause__', '')}"
            )


def test_request_schemas_refuse_what_the_api_refuses(openapi, pid):
    """The request schemas are not looser than the API on the rules a sender most often gets wrong."""
    bad_results = [
        result(pid, control_copies=0),  # control copies must be > 0
        result(pid, is_percent=0.1),  # both bcr_abl1_copies and is_percent
        {k: v for k, v in result(pid).items() if k != "bcr_abl1_copies"},  # neither
        result(pid, control_gene="HPRT"),
        result(pid, status="preliminary"),
        result(pid, unknown_field=1),
        result(pid, collected_at="01/03/2024"),
        result(pid, result_id="-starts-with-dash"),
        [],
        [result(pid)] * 1001,
        result(pid, bcr_abl1_copies=1e-320),  # no assay's value (0 or from 0.001)
        result(pid, bcr_abl1_copies=None, is_percent=1e-320),
        result(pid, lab="Lab\x00One"),  # free text: no control characters
        result(pid, transcript="e14a2\n"),
    ]
    for body in bad_results:
        request = EnvironBuilder(path=RESULTS, method="POST", json=body, headers=AUTH).get_request()
        with pytest.raises(OpenAPIError):
            openapi.validate_request(WerkzeugOpenAPIRequest(request))
    withdrawal = {
        "result_id": "R-w",
        "patient_id": pid,
        "collected_at": "2024-01-05",
        "status": "entered-in-error",
    }
    request = EnvironBuilder(path=RESULTS, method="POST", json=withdrawal, headers=AUTH).get_request()
    openapi.validate_request(WerkzeugOpenAPIRequest(request))
    for key in ("", "has space", "x" * 129, "tab\there"):  # the Idempotency-Key header's alphabet
        request = EnvironBuilder(
            path=RESULTS, method="POST", json=withdrawal, headers={**AUTH, "Idempotency-Key": key}
        ).get_request()
        with pytest.raises(OpenAPIError):
            openapi.validate_request(WerkzeugOpenAPIRequest(request))


def test_cohort_definition_schema_refuses_what_the_api_refuses(openapi):
    bad_definitions = [
        {"endpoint": "MR3.5"},
        {"endpoint": "MR2"},
        {"competing_events": ["relapse"]},
        {"competing_events": "death"},
        {"data_cutoff": "2024-02-30"},
        {"data_cutoff": "30/06/2024"},
        {"description": ""},
        {"description": "x" * 501},
        {"members": ["P-1"]},
        {"description": "x\x1b[31m"},
        [],
    ]
    for body in bad_definitions:
        request = EnvironBuilder(
            path="/v1/cohorts/ACTIM", method="PUT", json=body, headers=AUTH
        ).get_request()
        with pytest.raises(OpenAPIError):
            openapi.validate_request(WerkzeugOpenAPIRequest(request))
    for cohort_id in ("compare", "Compare"):  # a word of the routes
        request = EnvironBuilder(path=f"/v1/cohorts/{cohort_id}", method="PUT", json={}, headers=AUTH)
        with pytest.raises(OpenAPIError):
            openapi.validate_request(WerkzeugOpenAPIRequest(request.get_request()))
    patient = EnvironBuilder(
        path="/v1/patients/P-1", method="PUT", json={"cohorts": ["compare"]}, headers=AUTH
    )
    with pytest.raises(OpenAPIError):
        openapi.validate_request(WerkzeugOpenAPIRequest(patient.get_request()))
    for body in ({}, {"competing_events": [], "data_cutoff": None, "description": "two\nlines"}):
        request = EnvironBuilder(
            path="/v1/cohorts/ACTIM", method="PUT", json=body, headers=AUTH
        ).get_request()
        openapi.validate_request(WerkzeugOpenAPIRequest(request))


# --- routes -----------------------------------------------------------------------------------------


def test_app_routes_equal_spec_paths(app, spec):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <int:x> and <x> -> {x}
        routes |= {(m.lower(), path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented_ops = {(m, path) for path, item in spec["paths"].items() for m in item if m in METHODS}
    assert routes - documented_ops == set(), "routes missing from openapi.yaml"
    assert documented_ops - routes == set(), "operations in openapi.yaml the app does not serve"


# --- real exchanges ---------------------------------------------------------------------------------


def test_registration_status_and_timeline_conform(call, pid):
    url = f"/v1/patients/{pid}"
    # Reads before registration: unknown patient.
    call("GET", f"{url}/status", STATUS, 404)
    call("GET", f"{url}/results", TIMELINE, 404)

    created = call("PUT", url, PATIENT, 201, json=REGISTRATION).get_json()
    assert created["outcome"] == "created" and created["patient"]["tki"] == "imatinib"
    assert call("PUT", url, PATIENT, 200, json=REGISTRATION).get_json()["outcome"] == "unchanged"
    updated = call("PUT", url, PATIENT, 200, json={**REGISTRATION, "dose_mg": 300}).get_json()
    assert updated["outcome"] == "updated"

    # Refusals: body fields, path id, not an object, malformed JSON, wrong media type, too big.
    bad = call(
        "PUT", url, PATIENT, 422, valid_request=False, json={**REGISTRATION, "enrolled_on": "2023-02-30"}
    )
    assert bad.get_json()["errors"][0]["pointer"] == "/enrolled_on"
    bad_id = call("PUT", "/v1/patients/-bad", PATIENT, 422, valid_request=False, json=REGISTRATION)
    assert bad_id.get_json()["errors"][0]["pointer"] == "/patient_id"
    call("PUT", url, PATIENT, 422, valid_request=False, json=[REGISTRATION])
    call("PUT", url, PATIENT, 400, valid_request=False, data=b'{"cohorts": [', content_type=JSON)
    call("PUT", url, PATIENT, 415, valid_request=False, data=b"cohorts=ACTIM", content_type="text/plain")
    big = json.dumps({"cohorts": ["A"] * 700_000}).encode()
    too_big = call("PUT", url, PATIENT, 413, valid_request=False, data=big, content_type=JSON)
    assert too_big.get_json()["type"] == "/problems/request-entity-too-large"

    # Reads after registration: a pending stub or the computed documents, both documented.
    call("GET", f"{url}/status", STATUS, 200)
    call("GET", f"{url}/results", TIMELINE, 200)
    rids = ["R-" + uuid.uuid4().hex for _ in range(4)]
    batch = [
        result(pid, rids[0], collected_at="2024-01-05", bcr_abl1_copies=500),
        result(pid, rids[1], collected_at="2024-02-05T09:30:00+01:00", bcr_abl1_copies=0,
               control_gene="GUSB", control_copies=80000, transcript="e14a2"),
        result(pid, rids[2], collected_at="2024-03-05", is_percent=0.0025, bcr_abl1_copies=None,
               control_copies=40000, conversion_factor=0.9, lab="Central lab", assay="qPCR"),
        result(pid, rids[3], collected_at="2024-04-05", control_gene="BCR", bcr_abl1_copies=3),
    ]  # fmt: skip
    call("POST", RESULTS, RESULTS, 202, json=batch)
    withdrawal = {"result_id": batch[0]["result_id"], "patient_id": pid, "collected_at": "2024-01-05",
                  "status": "entered-in-error"}  # fmt: skip
    call("POST", RESULTS, RESULTS, 202, json=withdrawal)
    call("POST", f"{url}/events", EVENTS, 202, json={"type": "tki_stopped", "date": "2024-05-01"})
    wait_status(call.client, pid, lambda d: d["results_count"] == 3 and d["events"])

    status = call("GET", f"{url}/status", STATUS, 200).get_json()
    assert status["pending"] is False and status["results_withdrawn"] == 1
    assert status["milestones"] and status["latest_result"]["control_gene"] == "BCR"
    timeline = call("GET", f"{url}/results", TIMELINE, 200).get_json()
    assert [r["withdrawn"] for r in timeline["results"]] == [True, False, False, False]
    assert timeline["results"][0]["classification"] is None

    # A registered patient without tki_started_on and without results: nulls everywhere.
    other = f"P-{uuid.uuid4().hex[:12]}"
    call("PUT", f"/v1/patients/{other}", PATIENT, 201, json={})
    wait_status(call.client, other, lambda d: d["data_version"] >= 1)
    bare = call("GET", f"/v1/patients/{other}/status", STATUS, 200).get_json()
    assert bare["response_level"] is None and bare["milestones"] == []

    # A small undetectable sample last: sensitivity-limited, the current time point not assessable.
    small = f"P-{uuid.uuid4().hex[:12]}"
    call(
        "PUT", f"/v1/patients/{small}", PATIENT, 201, json={"tki": "imatinib", "tki_started_on": "2022-01-03"}
    )
    call("POST", RESULTS, RESULTS, 202, json=[
        result(small, collected_at="2024-01-10", bcr_abl1_copies=50),
        result(small, collected_at="2024-03-01", bcr_abl1_copies=0, control_copies=500),
    ])  # fmt: skip
    wait_status(call.client, small, lambda d: d["results_count"] == 2)
    limited = call("GET", f"/v1/patients/{small}/status", STATUS, 200).get_json()
    assert limited["latest_result"]["sensitivity_limited"] is True and limited["response_level"] == "MMR"
    assert limited["eln_assessment"] == "not_assessable" and limited["response_level_on"] == "2024-01-10"

    call.assert_covered("PUT", PATIENT, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", STATUS, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", TIMELINE, NEVER_TRIGGERED | {"503"})


def test_pending_documents_conform(call, app, pid):
    """Registered but not yet computed: the stub documents. The registration is written straight to
    Redis without a dirty mark or a task, so nothing computes it during the test (no worker race)."""
    redis = app.extensions["cml"].redis
    registration = {"patient_id": pid, "cohorts": [], "enrolled_on": None, "tki": None,
                    "tki_started_on": None, "dose_mg": None}  # fmt: skip
    redis.set(keys.registration(pid), json.dumps(registration))
    redis.sadd(keys.PATIENTS, pid)
    status = call("GET", f"/v1/patients/{pid}/status", STATUS, 200).get_json()
    assert status == {"patient_id": pid, "pending": True, "computed_at": None, "data_version": None}
    timeline = call("GET", f"/v1/patients/{pid}/results", TIMELINE, 200).get_json()
    assert timeline == {**status, "results": []}  # the same envelope as the status


def test_computed_documents_marked_pending_conform(call, app, pid):
    """A computed status, timeline and statistics that a later write marked pending (the bytes the write
    scripts leave: the flag flipped in place) conform too. Flipped here the way the scripts flip it, so
    no recompute races the reads."""
    redis = app.extensions["cml"].redis
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    register(call.client, pid, cohorts=[cohort], enrolled_on="2023-01-10")
    call("POST", RESULTS, RESULTS, 202, json=result(pid, collected_at="2023-02-01"))
    wait_status(call.client, pid, lambda d: d["results_count"] == 1)
    _wait_cohort(call.client, redis, cohort, [pid])
    for key in (keys.status(pid), keys.timeline(pid), keys.cohort_stats(cohort)):
        assert redis.getrange(key, 0, len(store.PENDING_FALSE) - 1) == store.PENDING_FALSE
        redis.setrange(key, 0, store.PENDING_TRUE)
    status = call("GET", f"/v1/patients/{pid}/status", STATUS, 200).get_json()
    assert status["pending"] is True and status["results_count"] == 1
    timeline = call("GET", f"/v1/patients/{pid}/results", TIMELINE, 200).get_json()
    assert timeline["pending"] is True and len(timeline["results"]) == 1
    url = f"/v1/cohorts/{cohort}/statistics"
    stats = call("GET", url, STATISTICS, 200).get_json()
    assert stats["pending"] is True and stats["n_evaluable"] == 1
    # Other horizons and the JSON curve come from the same refresh: they carry the same flag.
    assert call("GET", f"{url}?horizons=6", STATISTICS, 200).get_json()["pending"] is True
    assert call("GET", f"/v1/cohorts/{cohort}/curve", CURVE, 200).get_json()["pending"] is True


def test_assay_results_conform(call, pid):
    register(call.client, pid)
    rid = "R-" + uuid.uuid4().hex

    single = call("POST", RESULTS, RESULTS, 202, json=result(pid, rid, bcr_abl1_copies=50))
    body = single.get_json()
    assert body["accepted"] == [{"result_id": rid, "patient_id": pid, "outcome": "created"}]
    assert single.headers["Location"] == body["tasks"][0]["href"]

    again = call("POST", RESULTS, RESULTS, 202, json=result(pid, rid, bcr_abl1_copies=50))
    assert again.get_json() == {"accepted": [{"result_id": rid, "patient_id": pid, "outcome": "unchanged"}],
                                "tasks": []}  # fmt: skip
    assert "Location" not in again.headers

    amended = call("POST", RESULTS, RESULTS, 202, json=[result(pid, rid, bcr_abl1_copies=5, status="amended"),
                                                       result(pid, "R-" + uuid.uuid4().hex)])  # fmt: skip
    assert [a["outcome"] for a in amended.get_json()["accepted"]] == ["replaced", "created"]

    conflict = call("POST", RESULTS, RESULTS, 409, json=[result(pid), result(pid, rid, bcr_abl1_copies=7)])
    assert conflict.get_json()["errors"][0]["pointer"] == "/1/result_id"
    other = "P-" + uuid.uuid4().hex[:12]
    register(call.client, other)
    mismatch = call(
        "POST", RESULTS, RESULTS, 409, json=result(other, rid, bcr_abl1_copies=5, status="amended")
    )
    assert mismatch.get_json()["errors"][0]["pointer"] == "/patient_id"

    batch = [result(pid) for _ in range(5)]
    batch[3]["control_copies"] = 0
    invalid = call("POST", RESULTS, RESULTS, 422, valid_request=False, json=batch)
    assert [e["pointer"] for e in invalid.get_json()["errors"]] == ["/3/control_copies"]
    unknown = call("POST", RESULTS, RESULTS, 422, json=[result(pid), result("P-nobody-" + pid)])
    assert unknown.get_json()["type"] == "/problems/unknown-patient"
    assert unknown.get_json()["errors"][0]["pointer"] == "/1/patient_id"
    call("POST", RESULTS, RESULTS, 422, valid_request=False, json=[])
    duplicated = call("POST", RESULTS, RESULTS, 422, json=[result(pid, "R-dup"), result(pid, "R-dup")])
    assert duplicated.get_json()["errors"][0]["pointer"] == "/1/result_id"

    call("POST", RESULTS, RESULTS, 400, valid_request=False, data=b"[{", content_type=JSON)
    call(
        "POST", RESULTS, RESULTS, 415, valid_request=False, data=b"<result/>", content_type="application/xml"
    )
    call("POST", RESULTS, RESULTS, 415, valid_request=False, data=json.dumps(result(pid)))  # no content type
    over = call("POST", RESULTS, RESULTS, 413, valid_request=False, json=[result(pid) for _ in range(1001)])
    assert over.get_json()["type"] == "/problems/batch-too-large"
    huge = json.dumps([result(pid, lab="x" * 100, assay="y" * 100) for _ in range(6000)]).encode()
    call("POST", RESULTS, RESULTS, 413, valid_request=False, data=huge, content_type=JSON)

    call.assert_covered("POST", RESULTS, NEVER_TRIGGERED | {"503"})


def _oru(pid: str, accession: str, control: str, copies: str = "50", status: str = "F") -> str:
    return (
        f"MSH|^~\\&|LAB|HOSP|CML|HOSP|20240301090000||ORU^R01|{control}|P|2.5.1\r"
        f"PID|1||{pid}^^^HOSP^MR\rOBR|1||{accession}^LAB||||20240301\r"
        f"OBX|1|NM|BCRABL1-COPIES^^L||{copies}||||||{status}\rOBX|2|NM|ABL1-COPIES^^L||100000||||||{status}\r"
    )


def test_hl7v2_conforms(call, pid):
    """Each documented answer of POST /v1/hl7v2: the ACK as the request's media type, problems for what
    the app refuses before reading a message (media type, size)."""
    register(call.client, pid)
    run = uuid.uuid4().hex[:8]

    def send(status: int, text: str, media: str = ER7, **kw) -> str:
        resp = call("POST", HL7V2, HL7V2, status, mimetype=media, data=text, content_type=media, **kw)
        return resp.get_data(as_text=True)

    assert "MSA|AA|A-" in send(200, _oru(pid, f"X-{run}", f"A-{run}"))
    assert "MSA|AA|T-" in send(200, _oru(pid, f"Y-{run}", f"T-{run}"), TEXT)
    assert "MSA|AE|" in send(409, _oru(pid, f"X-{run}", f"B-{run}", copies="7"))
    assert "MSA|AE|" in send(422, _oru(pid, f"Z-{run}", f"C-{run}", status="P"))
    assert "MSA|AR|" in send(400, "not a message", TEXT)
    # Refused before the message is read: ACKs AR too, not problem+json.
    wrong = call("POST", HL7V2, HL7V2, 415, valid_request=False, json={"message": "MSH"})
    assert problem(wrong)["type"] == "/problems/unsupported-media-type"
    big = "MSH|" + "x" * (3 * 1024 * 1024)
    over = call("POST", HL7V2, HL7V2, 413, data=big, content_type=ER7)
    assert problem(over)["type"] == "/problems/request-entity-too-large"
    assert ack_lines(over)[1] == "MSA|AR|"
    call.assert_covered("POST", HL7V2, NEVER_TRIGGERED | {"503"})


def test_worklist_conforms(call, pid):
    register(call.client, pid, cohorts=["WL-SPEC"])
    call("POST", RESULTS, RESULTS, 202, json=result(pid, bcr_abl1_copies=0, control_copies=5000))
    wait_status(call.client, pid, lambda d: d["results_count"] == 1)
    page = call("GET", f"{WORKLIST}?cohort=WL-SPEC&overdue=true&limit=1", WORKLIST, 200).get_json()
    assert page["patients"][0]["overdue"] is True
    call("GET", f"{WORKLIST}?action=repeat_sample&level=MMR&as_of=2024-01-01", WORKLIST, 200)
    call("GET", f"{WORKLIST}?level=MR3", WORKLIST, 422, valid_request=False)
    call("GET", f"{WORKLIST}?cohort=NOPE-{pid}", WORKLIST, 404)


def test_events_conform(call, pid):
    url = f"/v1/patients/{pid}/events"
    call("POST", url, EVENTS, 404, json={"type": "death", "date": "2024-02-01"})
    register(call.client, pid)
    stop = {"type": "tki_stopped", "date": "2024-02-01", "reason": "treatment_free_remission"}
    one = call("POST", url, EVENTS, 202, json=stop)
    # Any case and spacing of a code is the code (the spec lists the canonical spelling).
    repost = call(
        "POST", url, EVENTS, 202, valid_request=False, json={**stop, "reason": "Treatment free remission"}
    )
    assert repost.get_json()["accepted"] == one.get_json()["accepted"]
    assert repost.get_json()["tasks"][0]["data_version"] == one.get_json()["tasks"][0]["data_version"]
    events = [{"event_id": "EV-1", "type": "tki_changed", "date": "2024-03-01", "tki": "nilotinib",
               "dose_mg": 600, "reason": "intolerance"},
              {"type": "add_on_started", "date": "2024-03-02", "note": "interferon"}]  # fmt: skip
    many = call("POST", url, EVENTS, 202, json=events).get_json()
    assert many["accepted"][0] == "EV-1" and many["accepted"][1].startswith("ev-")

    bad = call(
        "POST", url, EVENTS, 422, valid_request=False, json=[events[0], {"type": "relapse", "date": "x"}]
    )
    assert {e["pointer"] for e in bad.get_json()["errors"]} == {"/1/type", "/1/date"}
    call("POST", url, EVENTS, 422, valid_request=False, json={"type": "death"})
    free_text = call("POST", url, EVENTS, 422, valid_request=False, json={**stop, "reason": "TFR attempt"})
    assert [e["pointer"] for e in free_text.get_json()["errors"]] == ["/reason"]
    assert "reason_text" in free_text.get_json()["errors"][0]["detail"]
    call("POST", url, EVENTS, 422, valid_request=False, json=[])
    call("POST", "/v1/patients/-bad/events", EVENTS, 422, valid_request=False, json=events[1])
    call("POST", url, EVENTS, 400, valid_request=False, data=b"{type: death}", content_type=JSON)
    call("POST", url, EVENTS, 415, valid_request=False, data=b"type=death", content_type="text/plain")
    note = {"type": "death", "date": "2024-02-01", "note": "x" * (3 * 1024 * 1024)}
    call("POST", url, EVENTS, 413, valid_request=False, json=note)

    # 409: an Idempotency-Key in use (test_idempotency_key_in_use_and_on_events_conform)
    call.assert_covered("POST", EVENTS, NEVER_TRIGGERED | {"503", "409"})


def test_tasks_and_health_conform(call, pid):
    register(call.client, pid)
    accepted = call("POST", RESULTS, RESULTS, 202, json=result(pid)).get_json()
    task = accepted["tasks"][0]
    state = call("GET", task["href"], TASK, 200).get_json()
    assert state["state"] in ("pending", "done") and state["data_version"] == task["data_version"]
    wait_status(call.client, pid, lambda d: d["data_version"] >= task["data_version"])
    done = call("GET", task["href"], TASK, 200).get_json()
    assert done["state"] == "done" and done["status_data_version"] >= task["data_version"]
    call("GET", f"/v1/tasks/{uuid.uuid4().hex}", TASK, 404)

    assert call("GET", "/healthz", "/healthz", 200).get_json() == {"status": "ok"}
    ready = call("GET", "/readyz", "/readyz", 200).get_json()
    assert ready["checks"]["workers"]["alive"] >= 1
    assert ready["checks"]["queues"] == {"ok": True, "without_consumer": []}

    call.assert_covered("GET", TASK, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", "/healthz", NEVER_TRIGGERED)


# --- cohorts ----------------------------------------------------------------------------------------

# Enrolled 2023-01-10; ABL1 control, 100,000 copies: 50 copies is 0.05 % (MMR, not MR4.5), 2 copies
# 0.002 % (MR4.5, the default endpoint).
ENROLLED = "2023-01-10"
IN_MMR, IN_MR45 = 50, 2


def _wait_cohort(client, r, cohort_id: str, pids: Iterable[str]) -> dict:
    """The cohort's statistics once its members are computed and the refresh reflects their data."""

    def settled():
        if any(r.zscore(keys.DIRTY_PATIENTS, p) is not None for p in pids):
            return None
        if r.zscore(keys.DIRTY_COHORTS, cohort_id) is not None:
            return None
        resp = client.get(f"/v1/cohorts/{cohort_id}/statistics")
        if resp.status_code != 200:
            return None
        doc = resp.get_json()
        current = doc["data_version"] == int(r.get(keys.cohort_version(cohort_id)) or 0)
        return doc if current and doc["pending"] is False else None

    return wait_for(settled, 60, interval=0.1, what=f"statistics of cohort {cohort_id}")


@pytest.fixture(scope="module")
def two_cohorts(app, worker, redis_url) -> dict:
    """Cohort ``c`` (a definition of its own; two patients reach MR4.5, one dies first, one is censored,
    one has no result since enrolment) and cohort ``d`` (sharing one patient with ``c``), computed."""
    import redis

    client, r = app.test_client(), redis.Redis.from_url(redis_url)
    run = uuid.uuid4().hex[:8]
    c, d = f"C-{run}", f"D-{run}"
    definition = {"endpoint": "MR4.5", "description": "MR4.5 from enrolment"}
    assert client.put(f"/v1/cohorts/{c}", json=definition).status_code == 201
    visits = {  # patient: (cohorts, [(date, copies)], events)
        f"{c}-0": ([c, d], [(ENROLLED, IN_MMR), ("2023-04-10", IN_MR45)], []),
        f"{c}-1": ([c], [(ENROLLED, IN_MMR), ("2023-04-10", 20), ("2023-07-10", IN_MR45)], []),
        f"{c}-2": ([c], [(ENROLLED, IN_MMR)], [{"type": "death", "date": "2023-05-10"}]),
        f"{c}-3": ([c], [(ENROLLED, IN_MMR), ("2023-10-10", 40)], []),
        f"{c}-4": ([c], [], []),  # no result since enrolment: not evaluable
        f"{d}-1": ([d], [(ENROLLED, IN_MMR), ("2023-03-10", IN_MR45)], []),
        f"{d}-2": ([d], [(ENROLLED, IN_MMR), ("2023-06-10", IN_MMR)], []),
    }
    batch = []
    for pid, (cohorts, results, events) in visits.items():
        register(client, pid, cohorts=cohorts, enrolled_on=ENROLLED)
        batch += [result(pid, collected_at=day, bcr_abl1_copies=copies) for day, copies in results]
        if events:
            assert client.post(f"/v1/patients/{pid}/events", json=events).status_code == 202
    assert client.post(RESULTS, json=batch).status_code == 202
    docs = {x: _wait_cohort(client, r, x, visits) for x in (c, d)}
    return {"c": c, "d": d, "patients": sorted(visits), "stats": docs, "redis": r}


def _not_computed_cohort(redis) -> str:
    """A cohort that exists but was never refreshed, as a registration naming it leaves it until the
    member's first computation and the cohort's refresh (written straight to Redis: no worker race)."""
    cohort_id = f"E-{uuid.uuid4().hex[:8]}"
    redis.sadd(keys.COHORTS, cohort_id)
    return cohort_id


def _lengths(table: dict) -> set[int]:
    return {len(v) for part in ("one_minus_km", "aalen_johansen") for v in table[part].values()}


def test_cohort_definitions_conform(call):
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    url = f"/v1/cohorts/{cohort}"
    body = {"endpoint": "MMR", "competing_events": ["death", "progression", "death"],
            "censoring_events": ["tki_stopped", "lost_to_follow_up"],
            "data_cutoff": "2024-06-30"}  # fmt: skip
    created = call("PUT", url, COHORT, 201, json=body).get_json()
    assert created == {"cohort_id": cohort, "outcome": "created", "definition": {
        "endpoint": "MMR", "competing_events": ["death", "progression"],
        "censoring_events": ["lost_to_follow_up", "tki_stopped"], "data_cutoff": "2024-06-30",
        "description": None}}  # fmt: skip
    assert call("PUT", url, COHORT, 200, json=body).get_json()["outcome"] == "unchanged"
    updated = call("PUT", url, COHORT, 200, json={**body, "description": "MMR by mid-2024"}).get_json()
    assert updated["outcome"] == "updated" and updated["definition"]["description"] == "MMR by mid-2024"
    defaults = call("PUT", url, COHORT, 200, json={}).get_json()
    assert defaults["outcome"] == "updated" and defaults["definition"] == {
        "endpoint": "MR4.5", "competing_events": ["death", "progression", "tki_stopped"],
        "censoring_events": ["lost_to_follow_up"], "data_cutoff": None, "description": None}  # fmt: skip

    # Refusals name the field: body fields, the path id, not an object, malformed, media type, size.
    bad = call("PUT", url, COHORT, 422, valid_request=False, json={"endpoint": "MR3.5"})
    assert bad.get_json()["errors"][0]["pointer"] == "/endpoint"
    bad = call("PUT", url, COHORT, 422, valid_request=False, json={"competing_events": ["death", "relapse"]})
    assert bad.get_json()["errors"][0]["pointer"] == "/competing_events/1"
    bad = call("PUT", url, COHORT, 422, valid_request=False, json={"data_cutoff": "2024-02-30"})
    assert bad.get_json()["errors"][0]["pointer"] == "/data_cutoff"
    bad = call("PUT", url, COHORT, 422, valid_request=False, json={"members": ["P-1"]})
    assert bad.get_json()["errors"][0]["pointer"] == "/members"
    # Competing and censoring at once: valid for the schema (JSON Schema cannot say it), refused by the API.
    both = call("PUT", url, COHORT, 422, json={"censoring_events": ["death", "lost_to_follow_up"]})
    assert both.get_json()["errors"][0]["pointer"] == "/censoring_events"
    bad_id = call("PUT", "/v1/cohorts/-bad", COHORT, 422, valid_request=False, json={})
    assert bad_id.get_json()["errors"][0]["pointer"] == "/cohort_id"
    call("PUT", url, COHORT, 422, valid_request=False, json=[body])
    call("PUT", url, COHORT, 400, valid_request=False, data=b'{"endpoint": ', content_type=JSON)
    call("PUT", url, COHORT, 415, valid_request=False, data=b"endpoint=MMR", content_type="text/plain")
    big = json.dumps({"description": "x" * (3 * 1024 * 1024)}).encode()
    call("PUT", url, COHORT, 413, valid_request=False, data=big, content_type=JSON)
    # The last stored definition is still the defaults.
    assert call("PUT", url, COHORT, 200, json={}).get_json()["outcome"] == "unchanged"

    call.assert_covered("PUT", COHORT, NEVER_TRIGGERED | {"503"})


def test_cohort_statistics_conform(call, two_cohorts):
    c, redis = two_cohorts["c"], two_cohorts["redis"]
    url = f"/v1/cohorts/{c}/statistics"
    doc = call("GET", url, STATISTICS, 200).get_json()
    assert doc == two_cohorts["stats"][c]
    assert doc["definition"]["description"] == "MR4.5 from enrolment"
    assert doc["n"] == 5 and doc["n_evaluable"] == 4
    assert doc["not_evaluable"] == {"count": 1, "patients": [f"{c}-4"]}
    assert doc["outcomes"] == {"endpoint": 2, "competing": 1, "censored": 1}
    assert doc["counts_by_level"]["MR4.5"] == 2 and doc["counts_by_level"]["no_result"] == 1
    assert doc["last_follow_up_days"] == 273.0  # 2023-01-10 to 2023-10-10
    assert doc["horizons_months"] == [3.0, 6.0, 12.0, 24.0, 48.0] and _lengths(doc) == {5}
    # Beyond the last follow-up (about 9 months) every estimate is null and no one is at risk.
    for part in ("one_minus_km", "aalen_johansen"):
        assert doc[part]["estimate"][2:] == [None, None, None] and doc[part]["n_at_risk"][2:] == [0, 0, 0]
    # 90 days is just under 3 months (91.3 days): one endpoint of four by 3 months.
    assert doc["aalen_johansen"]["estimate"][0] == doc["one_minus_km"]["estimate"][0] == 0.25
    assert doc["median_time_to_endpoint"]["median_days"] == 181.0

    other = call("GET", f"{url}?horizons=1,12,600", STATISTICS, 200).get_json()
    assert other["horizons_months"] == [1.0, 12.0, 600.0] and _lengths(other) == {3}
    assert {k: other[k] for k in ("computed_at", "data_version", "n", "outcomes")} == {
        k: doc[k] for k in ("computed_at", "data_version", "n", "outcomes")
    }
    assert other["one_minus_km"]["estimate"] == [0.0, None, None]
    assert other["aalen_johansen"]["estimate"] == [0.0, None, None]
    assert other["aalen_johansen"]["n_at_risk"] == [4, 0, 0]

    for horizons in ("abc", "0", "3,700", ",".join(["3"] * 25), "-3"):
        bad = call("GET", f"{url}?horizons={horizons}", STATISTICS, 422, valid_request=False)
        assert bad.get_json()["errors"][0]["pointer"] == "/horizons"
    call("GET", f"/v1/cohorts/nobody-{c}/statistics", STATISTICS, 404)
    pending_id = _not_computed_cohort(redis)
    pending = call("GET", f"/v1/cohorts/{pending_id}/statistics", STATISTICS, 200).get_json()
    assert pending == {"cohort_id": pending_id, "pending": True, "computed_at": None, "data_version": None}
    assert (
        call("GET", f"/v1/cohorts/{pending_id}/statistics?horizons=12", STATISTICS, 200).get_json() == pending
    )
    assert doc["pending"] is False and other["pending"] is False

    call.assert_covered("GET", STATISTICS, NEVER_TRIGGERED | {"503"})


def test_cohort_curve_conform(call, two_cohorts):
    c, redis = two_cohorts["c"], two_cohorts["redis"]
    url = f"/v1/cohorts/{c}/curve"
    curve = call("GET", url, CURVE, 200, headers={"Accept": JSON}).get_json()
    assert curve["cohort_id"] == c and curve["data_version"] == two_cohorts["stats"][c]["data_version"]
    assert curve["time_days"] == [90.0, 181.0] and curve["last_time_days"] == 273.0
    assert curve["aalen_johansen"]["n_at_risk"] == [4, 2]  # at 181 days: patients 1 and 3
    assert {len(v) for p in ("one_minus_km", "aalen_johansen") for v in curve[p].values()} == {2}
    # The at-risk row is closed: a field that drifts in is caught.
    request = WerkzeugOpenAPIRequest(EnvironBuilder(path=url, method="GET").get_request())
    drifted = {**curve, "at_risk": {**curve["at_risk"], "n_censored": [0, 1]}}
    with pytest.raises(OpenAPIError):
        body = Response(json.dumps(drifted), status=200, mimetype=JSON)
        call.openapi.validate_response(request, WerkzeugOpenAPIResponse(body))
    # JSON is the default, and the answer when Accept names none of the three formats.
    assert call("GET", url, CURVE, 200).get_json() == curve
    assert call("GET", url, CURVE, 200, headers={"Accept": "text/csv"}).get_json() == curve
    png = call("GET", url, CURVE, 200, headers={"Accept": PNG}, mimetype=PNG)
    assert png.get_data().startswith(b"\x89PNG\r\n\x1a\n")
    svg = call("GET", url, CURVE, 200, headers={"Accept": f"{PNG};q=0.5, {SVG}"}, mimetype=SVG)
    assert b"<svg" in svg.get_data()

    call("GET", f"/v1/cohorts/nobody-{c}/curve", CURVE, 404)
    # Before the first refresh: a pending stub as JSON; no figure (409, retry shortly).
    pending_id = _not_computed_cohort(redis)
    pending = call("GET", f"/v1/cohorts/{pending_id}/curve", CURVE, 200).get_json()
    assert pending == {"cohort_id": pending_id, "pending": True, "computed_at": None, "data_version": None}
    for accept in (PNG, SVG):
        refused = call("GET", f"/v1/cohorts/{pending_id}/curve", CURVE, 409, headers={"Accept": accept})
        assert refused.get_json()["type"] == "/problems/not-computed-yet"
        assert int(refused.headers["Retry-After"]) > 0

    call.assert_covered("GET", CURVE, NEVER_TRIGGERED | {"503"})


def test_cohort_compare_and_list_conform(call, two_cohorts):
    c, d, redis = two_cohorts["c"], two_cohorts["d"], two_cohorts["redis"]
    compared = call("GET", f"{COMPARE}?a={c}&b={d}", COMPARE, 200).get_json()
    assert compared["overlap"] == 1
    assert compared["logrank"]["test"] == "logrank" and compared["gray"]["test"] == "gray"
    assert compared["logrank"]["groups"] == ["a", "b"] and compared["logrank"]["df"] == 1
    for side, cohort in (("a", c), ("b", d)):
        assert compared[side]["cohort_id"] == cohort
        assert compared[side]["data_version"] == two_cohorts["stats"][cohort]["data_version"]
        assert compared[side]["horizons_months"] == [3.0, 6.0, 12.0, 24.0, 48.0]
    assert compared["a"]["aalen_johansen"] == two_cohorts["stats"][c]["aalen_johansen"]
    at = call("GET", f"{COMPARE}?a={c}&b={d}&horizons=1,12", COMPARE, 200).get_json()
    assert at["a"]["horizons_months"] == at["b"]["horizons_months"] == [1.0, 12.0] and _lengths(at["b"]) == {
        2
    }
    same = call("GET", f"{COMPARE}?a={c}&b={c}", COMPARE, 200).get_json()
    assert same["overlap"] == 4 and same["logrank"]["statistic"] == 0.0

    missing = call("GET", f"{COMPARE}?a={c}", COMPARE, 422, valid_request=False)
    assert missing.get_json()["errors"][0]["pointer"] == "/b"
    call("GET", COMPARE, COMPARE, 422, valid_request=False)
    bad = call("GET", f"{COMPARE}?a={c}&b={d}&horizons=0", COMPARE, 422, valid_request=False)
    assert bad.get_json()["errors"][0]["pointer"] == "/horizons"
    unknown = call("GET", f"{COMPARE}?a={c}&b=nobody-{d}", COMPARE, 404)
    assert unknown.get_json()["type"] == "/problems/unknown-cohort"
    pending_id = _not_computed_cohort(redis)
    not_yet = call("GET", f"{COMPARE}?a={c}&b={pending_id}&horizons=0", COMPARE, 409, valid_request=False)
    assert not_yet.get_json()["type"] == "/problems/not-computed-yet"
    assert int(not_yet.headers["Retry-After"]) > 0

    listed = {x["cohort_id"]: x for x in call("GET", COHORTS, COHORTS, 200).get_json()["cohorts"]}
    assert listed[c]["n"] == 5 and listed[d]["n"] == 3
    assert listed[c]["definition"] == two_cohorts["stats"][c]["definition"]
    assert listed[c]["computed_at"] == two_cohorts["stats"][c]["computed_at"]
    assert listed[d]["data_version"] == two_cohorts["stats"][d]["data_version"]
    assert listed[pending_id]["computed_at"] is None and listed[pending_id]["data_version"] is None

    call.assert_covered("GET", COMPARE, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", COHORTS, NEVER_TRIGGERED | {"503"})


# --- FHIR R4 ---------------------------------------------------------------------------------------


def _fhir(body: object) -> dict:
    return {"data": json.dumps(body), "content_type": FHIR}


def _observation(pid: str, result_id: str, status: str = "final", copies: float = 50) -> dict:
    def component(code: str, value: float) -> dict:
        system = "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr"
        return {"code": {"coding": [{"system": system, "code": code}]}, "valueQuantity": {"value": value}}

    return {
        "resourceType": "Observation", "status": status, "identifier": [{"value": result_id}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "69380-4"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2024-03-01",
        "component": [component("ABL1-COPIES", 100000), component("BCRABL1-COPIES", copies)],
    }  # fmt: skip


def _bundle(kind: str, *resources: dict) -> dict:
    entries = [{"resource": o, "request": {"method": "POST", "url": "Observation"}} for o in resources]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_fhir_conforms(call, pid):
    """Every documented answer of the FHIR routes, OperationOutcomes included."""
    register(call.client, pid)
    meta = call("GET", FHIR_META, FHIR_META, 200, mimetype=FHIR, headers={"Authorization": ""})
    assert meta.get_json()["fhirVersion"] == "4.0.1"

    rid = f"R-{uuid.uuid4().hex}"
    created = call("POST", FHIR_OBS, FHIR_OBS, 201, mimetype=FHIR, **_fhir(_observation(pid, rid)))
    assert created.headers["Location"] == f"/fhir/Observation/{rid}"
    call("POST", FHIR_OBS, FHIR_OBS, 200, mimetype=FHIR, **_fhir(_observation(pid, rid)))
    call("POST", FHIR_OBS, FHIR_OBS, 409, **_fhir(_observation(pid, rid, copies=7)))
    call("POST", FHIR_OBS, FHIR_OBS, 422, **_fhir(_observation(pid, rid, status="preliminary")))
    call("POST", FHIR_OBS, FHIR_OBS, 400, **_fhir({**_observation(pid, rid), "status": "done"}))
    call("POST", FHIR_OBS, FHIR_OBS, 415, valid_request=False, data="x", content_type="text/plain")
    big = _fhir({**_observation(pid, rid), "note": [{"text": "x" * (3 * 1024 * 1024)}]})
    call("POST", FHIR_OBS, FHIR_OBS, 413, **big)

    put = f"{FHIR_OBS}?identifier={rid}-2"
    call("PUT", put, FHIR_OBS, 201, mimetype=FHIR, **_fhir(_observation(pid, f"{rid}-2")))
    call("PUT", put, FHIR_OBS, 200, mimetype=FHIR, **_fhir(_observation(pid, f"{rid}-2", "amended", 5)))
    call("PUT", put, FHIR_OBS, 409, **_fhir(_observation(pid, f"{rid}-2", copies=9)))
    call("PUT", put, FHIR_OBS, 400, **_fhir(_observation(pid, f"{rid}-3")))
    call("PUT", put, FHIR_OBS, 422, **_fhir(_observation(f"{pid}-nobody", f"{rid}-2")))
    call("PUT", put, FHIR_OBS, 415, valid_request=False, data="x", content_type="text/plain")
    call("PUT", put, FHIR_OBS, 413, **big)

    done = call(
        "POST",
        FHIR_BASE,
        FHIR_BASE,
        200,
        mimetype=FHIR,
        **_fhir(_bundle("batch", _observation(pid, f"{rid}-4"))),
    )
    assert done.get_json()["type"] == "batch-response"
    tx = _bundle("transaction", _observation(pid, f"{rid}-5"), _observation(pid, rid, copies=8))
    conflict = call("POST", FHIR_BASE, FHIR_BASE, 409, **_fhir(tx))
    assert conflict.get_json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.identifier[0].value"]
    tx = _bundle("transaction", _observation(pid, f"{rid}-5"), _observation(pid, f"{rid}-6", "preliminary"))
    call("POST", FHIR_BASE, FHIR_BASE, 422, **_fhir(tx))
    call("POST", FHIR_BASE, FHIR_BASE, 400, **_fhir({"resourceType": "Bundle", "type": "transaction"}))
    call("POST", FHIR_BASE, FHIR_BASE, 415, valid_request=False, data="x", content_type="text/plain")
    over = _bundle("transaction", *[_observation(pid, f"{rid}-{i}") for i in range(1001)])
    call("POST", FHIR_BASE, FHIR_BASE, 413, **_fhir(over))

    wait_status(call.client, pid, lambda d: d["results_count"] == 3)
    found = call("GET", f"{FHIR_OBS}?patient={pid}&date=ge2024-01-01&_count=10", FHIR_OBS, 200, mimetype=FHIR)
    assert found.get_json()["total"] == 3
    call("GET", f"{FHIR_OBS}?patient={pid}&date=2024-3", FHIR_OBS, 400, valid_request=False)
    read = call("GET", f"{FHIR_OBS}/{rid}", FHIR_READ, 200, mimetype=FHIR).get_json()
    assert read["interpretation"][0]["text"] == "MMR"
    call("GET", f"{FHIR_OBS}/{rid}-none", FHIR_READ, 404)
    # A conditional create matching a stored result: 200, the stored Observation when asked for.
    criteria = {"If-None-Exist": f"identifier={rid}", "Prefer": "return=representation"}
    corrected = _fhir(_observation(pid, rid, "corrected", 2))
    matched = call("POST", FHIR_OBS, FHIR_OBS, 200, mimetype=FHIR, headers=criteria, **corrected)
    assert matched.get_json()["resourceType"] == "Observation"

    _fhir_update_by_id(call, pid, f"{rid}-7")
    for method, template, path in _FHIR_OPERATIONS:  # XML is not served
        resource = _observation(pid, f"{rid}-8")
        body = {} if method == "GET" else _fhir(_bundle("batch", resource) if path == FHIR_BASE else resource)
        url = path.format(rid=rid) + ("&" if "?" in path else "?") + "_format=xml"
        public = {"Authorization": ""} if template == FHIR_META else {}
        call(method, url, template, 406, headers=public, **body)
    for method, template, _ in _FHIR_OPERATIONS:
        call.assert_covered(method, template, NEVER_TRIGGERED | {"503"})


_FHIR_OPERATIONS = (("POST", FHIR_OBS, FHIR_OBS), ("PUT", FHIR_OBS, f"{FHIR_OBS}?identifier={{rid}}-8"),
                    ("POST", FHIR_BASE, FHIR_BASE), ("GET", FHIR_OBS, f"{FHIR_OBS}?patient=P-1"),
                    ("GET", FHIR_READ, f"{FHIR_OBS}/{{rid}}"), ("PUT", FHIR_READ, f"{FHIR_OBS}/{{rid}}-8"),
                    ("GET", FHIR_META, FHIR_META))  # fmt: skip


def _fhir_update_by_id(call, pid: str, rid: str) -> None:
    """PUT /fhir/Observation/<id>: creates, replaces, and refuses another identifier."""
    url = f"{FHIR_OBS}/{rid}"
    call("PUT", url, FHIR_READ, 201, mimetype=FHIR, **_fhir(_observation(pid, rid)))
    call("PUT", url, FHIR_READ, 200, mimetype=FHIR, **_fhir(_observation(pid, rid, "amended", 5)))
    call("PUT", url, FHIR_READ, 409, **_fhir(_observation(pid, rid, copies=9)))
    call("PUT", url, FHIR_READ, 400, **_fhir(_observation(pid, f"{rid}-other")))
    call("PUT", url, FHIR_READ, 422, **_fhir(_observation(f"{pid}-nobody", rid)))
    call("PUT", url, FHIR_READ, 415, valid_request=False, data="x", content_type="text/plain")
    big = _fhir({**_observation(pid, rid), "note": [{"text": "x" * (3 * 1024 * 1024)}]})
    call("PUT", url, FHIR_READ, 413, **big)


# --- authentication, rate limits, idempotency keys, ops ------------------------------------------------


def _requests(pid: str) -> dict[tuple[str, str], tuple[str, dict]]:
    """A conforming request for every protected operation: (method, template) -> (path, client kwargs)."""
    cohort = f"C-{uuid.uuid4().hex[:8]}"
    return {
        ("put", PATIENT): (f"/v1/patients/{pid}", {"json": REGISTRATION}),
        ("post", EVENTS): (f"/v1/patients/{pid}/events", {"json": {"type": "death", "date": "2024-02-01"}}),
        ("get", STATUS): (f"/v1/patients/{pid}/status", {}),
        ("get", WORKLIST): (WORKLIST, {}),
        ("get", TIMELINE): (f"/v1/patients/{pid}/results", {}),
        ("post", RESULTS): (RESULTS, {"json": result(pid)}),
        ("post", HL7V2): (HL7V2, {"data": _oru(pid, f"R-{pid}", f"C-{pid}"), "content_type": ER7}),
        ("get", TASK): (f"/v1/tasks/{uuid.uuid4().hex}", {}),
        ("get", COHORTS): (COHORTS, {}),
        ("put", COHORT): (f"/v1/cohorts/{cohort}", {"json": {}}),
        ("get", STATISTICS): (f"/v1/cohorts/{cohort}/statistics", {}),
        ("get", CURVE): (f"/v1/cohorts/{cohort}/curve", {}),
        ("get", COMPARE): (f"{COMPARE}?a={cohort}&b={cohort}", {}),
        # The thresholds the dashboard draws (services/api/reference.py).
        ("get", "/v1/reference/response-levels"): ("/v1/reference/response-levels", {}),
        ("get", QUEUES): (QUEUES, {}),
        ("get", AUDIT): (f"{AUDIT}?count=5", {}),
        ("get", DEAD_LETTERS): (DEAD_LETTERS, {}),
        ("post", RETRY): (f"/v1/ops/dead-letters/patient/{pid}/retry", {}),
        ("get", METRICS): (METRICS, {}),
        ("post", FHIR_BASE): (FHIR_BASE, _fhir(_bundle("transaction", _observation(pid, "R-auth")))),
        ("post", FHIR_OBS): (FHIR_OBS, _fhir(_observation(pid, "R-auth"))),
        ("put", FHIR_OBS): (f"{FHIR_OBS}?identifier=R-auth", _fhir(_observation(pid, "R-auth"))),
        ("get", FHIR_OBS): (f"{FHIR_OBS}?patient={pid}", {}),
        ("get", FHIR_READ): (f"{FHIR_OBS}/R-auth", {}),
        ("put", FHIR_READ): (f"{FHIR_OBS}/R-auth", _fhir(_observation(pid, "R-auth"))),
    }


def test_no_key_unknown_key_and_missing_scope_conform(call, spec, pid):
    """Every protected operation answers 401 without a valid key and 403 for each key without its scope."""
    requests = _requests(pid)
    assert set(requests) == documenting(spec, "401") == documenting(spec, "403")
    for (method, template), (path, kw) in requests.items():
        roles = {
            r
            for requirement in spec["paths"][template][method]["security"]
            for r in requirement["bearerAuth"]
        }
        # No key (the request does not conform: the spec requires one), or one the API does not know.
        for header, conforming in (
            ("", False),
            ("Basic dGVzdHM6dGVzdHM=", False),
            ("Bearer not-a-key", True),
        ):
            headers = {"Authorization": header}
            resp = call(method, path, template, 401, valid_request=conforming, headers=headers, **kw)
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="cml"'
            assert problem(resp)["type"] == "/problems/unauthorized"
        for key, (scope,) in SCOPED_KEYS.items():
            if scope in roles:
                continue
            refused = call(method, path, template, 403, headers={"Authorization": f"Bearer {key}"}, **kw)
            assert problem(refused)["type"] == "/problems/forbidden"
            assert all(role in problem(refused)["detail"] for role in roles)
    assert call.statuses("401") == call.statuses("403") == set(requests)
    # The probes need no key.
    call("GET", "/healthz", "/healthz", 200, headers={"Authorization": ""})
    call("GET", "/readyz", "/readyz", 200, headers={"Authorization": ""})


def test_rate_limits_conform(openapi, spec, redis_url, monkeypatch, pid):
    """With 3 requests a minute per key and operation, every operation answers 429 on the 4th (the hot
    reads by their per-process limit). A key of its own, so no other test's counters interfere."""
    from services.api import create_app
    from shared.config import load_settings

    key = f"rate-{uuid.uuid4().hex}"
    monkeypatch.setenv("REDIS_URL", redis_url)
    api_keys = json.dumps({key: {"name": key, "scopes": ["results:write", "status:read", "cohorts:write",
                                                           "ops:read"]}})  # fmt: skip
    settings = dataclasses.replace(
        load_settings(), rate_limit="3/minute", hot_read_rate_limit="3/minute", api_keys=api_keys
    )
    call = Exchanges(create_app(settings).test_client(), openapi, spec, key=key)

    def status_of(method: str, path: str, kw: dict) -> int:
        return call.client.open(
            path, method=method, headers={"Authorization": f"Bearer {key}"}, **kw
        ).status_code

    for (method, template), (path, kw) in _requests(pid).items():
        # Counted per key and operation: the first three requests of each operation pass (the hot
        # reads in this process's memory, the others in Redis).
        assert 429 not in [status_of(method, path, kw) for _ in range(3)], template
        # A fixed window may roll over between requests: keep on until the limit bites.
        assert any(status_of(method, path, kw) == 429 for _ in range(3)), template
        limited = call(method, path, template, 429, **kw)
        assert problem(limited)["type"] == "/problems/rate-limited"
        assert int(limited.headers["Retry-After"]) > 0
    assert call.statuses("429") == documenting(spec, "429") == set(_requests(pid))


def test_idempotency_key_conform(call, pid):
    register(call.client, pid)
    batch = [result(pid), result(pid)]
    key = {"Idempotency-Key": f"lab-1:{pid}/batch-1"}
    first = call("POST", RESULTS, RESULTS, 202, json=batch, headers=key)
    assert "Idempotent-Replayed" not in first.headers and first.headers["Location"]
    again = call("POST", RESULTS, RESULTS, 202, json=batch, headers=key)
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_data() == first.get_data()
    assert "Location" not in again.headers  # the replay carries the body only
    # Not a replay: the key belongs to the API key that sent it (here the results:write key).
    other_key = next(k for k, scopes in SCOPED_KEYS.items() if scopes == ["results:write"])
    fresh = call(
        "POST", RESULTS, RESULTS, 202, json=batch, headers={**key, "Authorization": f"Bearer {other_key}"}
    )
    assert "Idempotent-Replayed" not in fresh.headers
    assert [a["outcome"] for a in fresh.get_json()["accepted"]] == ["unchanged", "unchanged"]

    reused = call("POST", RESULTS, RESULTS, 422, json=batch[:1], headers=key).get_json()
    assert reused["type"] == "/problems/idempotency-key-reused"
    assert reused["errors"] == [
        {"pointer": "", "field": "Idempotency-Key", "detail": "reused with a different body"}
    ]
    for bad in ("", "two words", "k" * 129):
        malformed = call(
            "POST", RESULTS, RESULTS, 422, valid_request=False, json=batch, headers={"Idempotency-Key": bad}
        )
        assert malformed.get_json()["type"] == "/problems/invalid-input"
        assert malformed.get_json()["errors"][0]["field"] == "Idempotency-Key"
    # A refusal is not remembered: the corrected request may use the same key.
    retry_key = {"Idempotency-Key": f"lab-1:{pid}/batch-2"}
    call(
        "POST",
        RESULTS,
        RESULTS,
        422,
        valid_request=False,
        json=[result(pid, control_copies=0)],
        headers=retry_key,
    )
    corrected = call("POST", RESULTS, RESULTS, 202, json=[result(pid)], headers=retry_key)
    assert "Idempotent-Replayed" not in corrected.headers
    assert corrected.get_json()["accepted"][0]["outcome"] == "created"


def _hold(r, key: str) -> None:
    """Put a key back to the moment its first request was being handled: reserved, no answer yet."""
    held = orjson.loads(r.get(keys.idempotency("tests", key)))
    r.set(
        keys.idempotency("tests", key), orjson.dumps({"request_hash": held["request_hash"], "status": None})
    )


def test_idempotency_key_in_use_and_on_events_conform(call, r, pid):
    register(call.client, pid)
    key, batch = f"lab-1:{pid}/busy", [result(pid)]
    call("POST", RESULTS, RESULTS, 202, json=batch, headers={"Idempotency-Key": key})
    _hold(r, key)
    busy = call("POST", RESULTS, RESULTS, 409, json=batch, headers={"Idempotency-Key": key})
    assert busy.get_json()["type"] == "/problems/idempotency-key-in-use" and busy.headers["Retry-After"]

    url, events = f"/v1/patients/{pid}/events", [{"type": "add_on_started", "date": "2024-03-02"}]
    key = f"ehr-1:{pid}/events-1"
    first = call("POST", url, EVENTS, 202, json=events, headers={"Idempotency-Key": key})
    again = call("POST", url, EVENTS, 202, json=events, headers={"Idempotency-Key": key})
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_data() == first.get_data()
    reused = call("POST", url, EVENTS, 422, json=events * 2, headers={"Idempotency-Key": key}).get_json()
    assert reused["type"] == "/problems/idempotency-key-reused"
    _hold(r, key)
    busy = call("POST", url, EVENTS, 409, json=events, headers={"Idempotency-Key": key})
    assert busy.get_json()["errors"][0]["field"] == "Idempotency-Key"


def test_ops_queues_audit_and_metrics_conform(call, pid):
    register(call.client, pid)
    rids = [f"{pid}-A1", f"{pid}-A2"]
    call("POST", RESULTS, RESULTS, 202, json=[result(pid, rids[0]), result(pid, rids[1])])
    call(
        "POST", f"/v1/patients/{pid}/events", EVENTS, 202, json={"type": "tki_stopped", "date": "2024-02-01"}
    )
    wait_status(call.client, pid, lambda d: d["results_count"] == 2)

    from shared.queue import QUEUES as QUEUE_NAMES

    report = call("GET", QUEUES, QUEUES, 200).get_json()
    assert [q["queue"] for q in report["queues"]] == list(QUEUE_NAMES)
    assert report["workers_alive"] >= 1 and any(w["alive"] for w in report["workers"])
    assert all(q["consumers_alive"] == len(q["consumers"]) >= 1 for q in report["queues"])
    assert report["recompute_lag_ms"]["samples"] >= 1
    assert set(report["backlog"]) == set(report["failed"]) == {"patient", "cohort"}

    entries = call("GET", f"{AUDIT}?count=50", AUDIT, 200).get_json()["entries"]
    assert 3 <= len(entries) <= 50
    posted = next(e for e in entries if e.get("result_ids") == rids)
    assert posted["who"] == "tests" and posted["what"] == "POST /v1/assay-results"
    assert posted["outcomes"] == ["created", "created"]
    events = next(e for e in entries if e.get("patient_id") == pid and e["what"].startswith("POST"))
    assert events["what"] == "POST /v1/patients/<patient_id>/events" and events["outcomes"] == ["stored"]
    assert len(events["event_ids"]) == 1
    registered = next(e for e in entries if e.get("patient_id") == pid and e["what"].startswith("PUT"))
    assert registered["outcomes"] == ["created"]
    # Newest first; `before` pages back.
    assert entries.index(events) < entries.index(posted) < entries.index(registered)
    page = call("GET", f"{AUDIT}?count=2&before={entries[0]['id']}", AUDIT, 200).get_json()["entries"]
    assert [e["id"] for e in page] == [e["id"] for e in entries[1:3]]
    assert len(call("GET", AUDIT, AUDIT, 200).get_json()["entries"]) <= 100  # the default count
    for count in ("0", "1001", "ten"):
        bad = call("GET", f"{AUDIT}?count={count}", AUDIT, 422, valid_request=False).get_json()
        assert bad["errors"][0]["pointer"] == "/count"

    metrics = call("GET", METRICS, METRICS, 200, mimetype=TEXT).get_data(as_text=True)
    assert 'cml_http_requests_total{method="POST",route="/v1/assay-results",status="202"}' in metrics
    assert 'cml_queue_depth{queue="patients"}' in metrics
    assert 'cml_queue_consumers{queue="cohorts"}' in metrics

    call.assert_covered("GET", QUEUES, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", AUDIT, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", METRICS, NEVER_TRIGGERED)


def test_dead_letters_conform(call, r, pid):
    """A recomputation that fails is listed as a dead letter until an operator retries it. The failure is
    made by writing a result the API would have refused straight into Redis (as a bad migration could)."""
    register(call.client, pid)
    wait_status(call.client, pid, lambda d: d["data_version"] >= 1)
    good = result(pid, f"{pid}-G", status="final", conversion_factor=1.0, is_percent=None, lab=None,
                  assay=None, transcript=None)  # fmt: skip
    r.hset(keys.results(pid), good["result_id"], json.dumps({**good, "control_gene": "HPRT1"}))
    r.incr(keys.version(pid))
    r.zadd(keys.DIRTY_PATIENTS, {pid: int(time.time() * 1000) - 60_000})  # the sweeper picks it up

    def listed() -> dict | None:
        rows = call.client.get(DEAD_LETTERS).get_json()["dead_letters"]
        return next((row for row in rows if row["id"] == pid), None)

    wait_for(listed, 30, what="the dead letter")
    rows = call("GET", DEAD_LETTERS, DEAD_LETTERS, 200).get_json()["dead_letters"]
    row = next(row for row in rows if row["id"] == pid)
    assert row["kind"] == "patient" and row["task"] == "cml.recompute_patient"
    assert row["error"].startswith("ValueError")
    assert [x["failed_ms"] for x in rows] == sorted((x["failed_ms"] for x in rows), reverse=True)
    assert call("GET", QUEUES, QUEUES, 200).get_json()["failed"]["patient"] >= 1

    r.hset(keys.results(pid), good["result_id"], json.dumps(good))  # the data is repaired
    url = f"/v1/ops/dead-letters/patient/{pid}/retry"
    requeued = call("POST", url, RETRY, 202).get_json()
    assert requeued == {"kind": "patient", "id": pid, "state": "requeued"}
    assert wait_status(call.client, pid, lambda d: d["results_count"] == 1)["response_level"] == "MMR"
    assert listed() is None
    gone = call("POST", url, RETRY, 404).get_json()
    assert gone["type"] == "/problems/unknown-dead-letter"
    call("POST", f"/v1/ops/dead-letters/cohort/{pid}/retry", RETRY, 404)
    call("POST", f"/v1/ops/dead-letters/worker/{pid}/retry", RETRY, 404, valid_request=False)

    call.assert_covered("GET", DEAD_LETTERS, NEVER_TRIGGERED | {"503"})
    call.assert_covered("POST", RETRY, NEVER_TRIGGERED | {"503"})


def test_store_down_answers_documented_503s(openapi, spec, pid):
    """With Redis unreachable every operation that documents a 503 answers it, as documented."""
    from services.api import create_app
    from shared.config import load_settings

    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings = dataclasses.replace(load_settings(), redis_url=dead, broker_url=dead, result_backend=dead)
    call = Exchanges(create_app(settings).test_client(), openapi, spec)
    url = f"/v1/patients/{pid}"
    answers = [
        call("PUT", url, PATIENT, 503, json=REGISTRATION),
        call("POST", f"{url}/events", EVENTS, 503, json={"type": "death", "date": "2024-02-01"}),
        call("GET", f"{url}/status", STATUS, 503),
        call("GET", f"{url}/results", TIMELINE, 503),
        call("POST", RESULTS, RESULTS, 503, json=result(pid)),
        call("GET", "/v1/tasks/t-1", TASK, 503),
        call("GET", f"{WORKLIST}?overdue=true", WORKLIST, 503),
        call("PUT", "/v1/cohorts/ACTIM", COHORT, 503, json={"endpoint": "MR4"}),
        call("GET", COHORTS, COHORTS, 503),
        call("GET", "/v1/cohorts/ACTIM/statistics", STATISTICS, 503),
        call("GET", "/v1/cohorts/ACTIM/statistics?horizons=12", STATISTICS, 503),
        call("GET", "/v1/cohorts/ACTIM/curve", CURVE, 503, headers={"Accept": PNG}),
        call("GET", f"{COMPARE}?a=ACTIM&b=ACTIM", COMPARE, 503),
        call("GET", QUEUES, QUEUES, 503),
        call("GET", f"{AUDIT}?count=10", AUDIT, 503),
        call("GET", DEAD_LETTERS, DEAD_LETTERS, 503),
        call("POST", f"/v1/ops/dead-letters/patient/{pid}/retry", RETRY, 503),
        call("POST", RESULTS, RESULTS, 503, json=result(pid), headers={"Idempotency-Key": "k-1"}),
        call("POST", FHIR_BASE, FHIR_BASE, 503, **_fhir(_bundle("transaction", _observation(pid, "R-1")))),
        call("POST", FHIR_OBS, FHIR_OBS, 503, **_fhir(_observation(pid, "R-1"))),
        call("PUT", f"{FHIR_OBS}?identifier=R-1", FHIR_OBS, 503, **_fhir(_observation(pid, "R-1"))),
        call("GET", f"{FHIR_OBS}?patient={pid}", FHIR_OBS, 503),
        call("GET", f"{FHIR_OBS}/R-1", FHIR_READ, 503),
        call("PUT", f"{FHIR_OBS}/R-1", FHIR_READ, 503, **_fhir(_observation(pid, "R-1"))),
    ]
    for resp in answers:
        assert problem(resp)["type"] == "/problems/store-unavailable"
        assert int(resp.headers["Retry-After"]) > 0
    not_ready = call("GET", "/readyz", "/readyz", 503).get_json()
    assert not_ready["checks"]["redis"]["ok"] is False
    # HL7 v2 answers its ACK, AR, saying the message may not have been stored (the engine re-sends it).
    message = _oru(pid, f"R-{pid}", "C-503")
    ack = call("POST", HL7V2, HL7V2, 503, mimetype=ER7, data=message, content_type=ER7)
    assert ack_lines(ack)[1] == "MSA|AR|C-503" and "may not have been stored" in ack_lines(ack)[2]
    assert int(ack.headers["Retry-After"]) > 0
    assert call.statuses("503") == documenting(spec, "503")
    # /metrics still answers, with the process's request metrics and without those kept in Redis.
    text = call("GET", METRICS, METRICS, 200, mimetype=TEXT).get_data(as_text=True)
    assert "cml_http_requests_total" in text and "cml_queue_depth" not in text


def test_queue_without_consumer_conforms(openapi, spec, tmp_path):
    """A queue no live worker consumes: the ops report and /readyz's 503 as documented, on a Redis of its
    own whose only heartbeat is a worker's consuming `patients` (tests/test_queues.py runs real ones)."""
    from services.api import create_app
    from shared import store, work
    from shared.config import load_settings
    from tests.procs import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        url = server.url
        settings = dataclasses.replace(load_settings(), redis_url=url, broker_url=url, result_backend=url)
        call = Exchanges(create_app(settings).test_client(), openapi, spec)
        work.heartbeat(store.connect(url), "p@host", ["patients"])
        report = call("GET", QUEUES, QUEUES, 200).get_json()
        assert [(q["queue"], q["consumers"], q["consumers_alive"]) for q in report["queues"]] == [
            ("patients", ["p@host"], 1),
            ("cohorts", [], 0),
        ]
        assert report["workers"][0]["queues"] == ["patients"]
        not_ready = call("GET", "/readyz", "/readyz", 503).get_json()
        assert not_ready["checks"]["queues"] == {"ok": False, "without_consumer": ["cohorts"]}
        assert not_ready["checks"]["workers"] == {"ok": True, "alive": 1}
        assert "cohorts" in not_ready["detail"]
        text = call("GET", METRICS, METRICS, 200, mimetype=TEXT).get_data(as_text=True)
        assert 'cml_queue_consumers{queue="cohorts"} 0.0' in text
    finally:
        server.stop()


# --- the validation is not vacuous ------------------------------------------------------------------


def test_validation_catches_a_response_that_drifts_from_the_spec(call, openapi, pid):
    register(call.client, pid)
    call("POST", RESULTS, RESULTS, 202, json=result(pid, bcr_abl1_copies=3.2))
    doc = wait_status(call.client, pid, lambda d: d["results_count"] == 1)
    path = f"/v1/patients/{pid}/status"
    request = WerkzeugOpenAPIRequest(EnvironBuilder(path=path, method="GET").get_request())

    def check(body: dict, status: int = 200, mimetype: str = JSON) -> None:
        response = Response(json.dumps(body), status=status, mimetype=mimetype)
        openapi.validate_response(request, WerkzeugOpenAPIResponse(response))

    check(doc)  # the real document passes ...
    for drifted in (
        {**doc, "response_level": "MR3"},  # ... a level outside Cross 2015's names does not
        {**doc, "data_version": "1"},
        {k: v for k, v in doc.items() if k != "first_reached"},
        {**doc, "first_reached": {**doc["first_reached"], "MR4": "yesterday"}},
        {**doc, "latest_result": {**doc["latest_result"], "level": None}},
    ):
        with pytest.raises(OpenAPIError):
            check(drifted)
    with pytest.raises(OpenAPIError):
        check(
            {"type": "/problems/x", "title": "x", "status": 404, "detail": "x", "instance": path}, 404, JSON
        )
    with pytest.raises(OpenAPIError):
        check({"detail": "no type, no title"}, 404, PROBLEM)
    with pytest.raises(OpenAPIError):
        check({"ok": True}, 409, PROBLEM)  # not a documented status of this operation


def test_validation_catches_cohort_documents_that_drift(openapi, two_cohorts):
    c = two_cohorts["c"]
    doc = two_cohorts["stats"][c]

    def check(path: str, body: dict) -> None:
        request = WerkzeugOpenAPIRequest(EnvironBuilder(path=path, method="GET").get_request())
        response = Response(json.dumps(body), status=200, mimetype=JSON)
        openapi.validate_response(request, WerkzeugOpenAPIResponse(response))

    stats = f"/v1/cohorts/{c}/statistics"
    check(stats, doc)
    aj = doc["aalen_johansen"]
    for drifted in (
        {**doc, "aalen_johansen": {**aj, "estimate": [str(x) for x in aj["estimate"]]}},
        {**doc, "aalen_johansen": {**aj, "upper": [1.5, *aj["upper"][1:]]}},
        {**doc, "aalen_johansen": {k: v for k, v in aj.items() if k != "variance"}},
        {**doc, "outcomes": {"endpoint": 2, "competing": 1}},
        {**doc, "definition": {**doc["definition"], "endpoint": "MR3"}},
        {**doc, "not_evaluable": [f"{c}-4"]},
        {k: v for k, v in doc.items() if k != "median_time_to_endpoint"},
    ):
        with pytest.raises(OpenAPIError):
            check(stats, drifted)
    test = {"test": "logrank", "groups": ["a", "b"], "statistic": 1.2, "df": 1, "p_value": 0.27}
    table = {k: doc[k] for k in ("horizons_months", "one_minus_km", "aalen_johansen")}
    compared = {"overlap": 0, "warnings": [], "logrank": test, "gray": {**test, "test": "gray"},
                "a": {"cohort_id": c, "data_version": 1, **table},
                "b": {"cohort_id": c, "data_version": 1, **table},
                "at_risk": {"months": [0.0, 3.0], "a": [4, 2], "b": [4, 0]}}  # fmt: skip
    check(f"{COMPARE}?a={c}&b={c}", compared)
    for drifted in (
        {**compared, "logrank": {**test, "p_value": 1.5}},
        {**compared, "at_risk": {"months": [0.0], "a": [4]}},
        {**compared, "at_risk": {**compared["at_risk"], "n_at_risk": [4, 2]}},
        {**compared, "at_risk": {**compared["at_risk"], "a": [4, -1]}},
        {**compared, "gray": {**test, "test": "wilcoxon"}},
        {**compared, "a": table},
        {k: v for k, v in compared.items() if k != "warnings"},
    ):
        with pytest.raises(OpenAPIError):
            check(f"{COMPARE}?a={c}&b={c}", drifted)


def test_validation_catches_guard_answers_without_their_headers(openapi):
    """401 must say how to authenticate and 429/503 when to come back."""
    body = json.dumps({"type": "/problems/x", "title": "x", "status": 400, "detail": "x", "instance": "/"})

    def check(path: str, status: int, headers: dict) -> None:
        request = WerkzeugOpenAPIRequest(EnvironBuilder(path=path, method="GET", headers=AUTH).get_request())
        response = Response(body, status=status, mimetype=PROBLEM, headers=headers)
        openapi.validate_response(request, WerkzeugOpenAPIResponse(response))

    check(QUEUES, 401, {"WWW-Authenticate": 'Bearer realm="cml"'})
    check(QUEUES, 429, {"Retry-After": "5"})
    for status, headers in (
        (401, {}),
        (401, {"WWW-Authenticate": "Basic"}),
        (429, {}),
        (429, {"Retry-After": "soon"}),
        (503, {}),
    ):
        with pytest.raises(OpenAPIError):
            check(QUEUES, status, headers)
    check("/v1/patients/P-1/status", 429, {"Retry-After": "5"})
    with pytest.raises(OpenAPIError):
        check("/v1/patients/P-1/status", 429, {})
