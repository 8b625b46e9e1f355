"""The OpenAPI document (openapi.yaml) against the real app: valid 3.1, same routes, real answers conform.

Every exchange below goes through the real Flask app, the real Redis and the real Celery worker of
conftest.py; each request/response pair is then validated with openapi-core. Each scenario test also
checks that it exercised every response status the spec documents for the operations it covers (500
is never triggered on purpose; 503 is covered by the store-down test), so a status added to the spec
without a test, or a test whose status is missing from the spec, fails.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import validate as validate_spec
from openapi_spec_validator.versions.shortcuts import get_spec_version
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Response

from tests.support import register, result, wait_status

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
JSON = "application/json"
PROBLEM = "application/problem+json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
NEVER_TRIGGERED = {"500"}  # the catch-all handler; no request makes the app fail on purpose
PATIENT = "/v1/patients/{patient_id}"
EVENTS = "/v1/patients/{patient_id}/events"
STATUS = "/v1/patients/{patient_id}/status"
TIMELINE = "/v1/patients/{patient_id}/results"
RESULTS = "/v1/assay-results"
TASK = "/v1/tasks/{task_id}"
REGISTRATION = {"cohorts": ["ACTIM"], "enrolled_on": "2023-01-10", "tki": "Imatinib",
                "tki_started_on": "2019-06-01", "dose_mg": 400}  # fmt: skip


def _json_loads(value: bytes, **parameters: str) -> Any:
    return json.loads(value)


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    # openapi-core only knows how to parse application/json; problem documents are JSON too.
    config = Config(extra_media_type_deserializers={PROBLEM: _json_loads})
    return OpenAPI.from_file_path(str(SPEC_PATH), config=config)


def documented(spec: dict, method: str, path: str) -> set[str]:
    return set(spec["paths"][path][method]["responses"])


class Exchanges:
    """Sends requests through a test client and validates each request/response pair with openapi-core."""

    def __init__(self, client, openapi: OpenAPI, spec: dict):
        self.client, self.openapi, self.spec = client, openapi, spec
        self.seen: set[tuple[str, str, str]] = set()

    def __call__(
        self, method: str, path: str, template: str, status: int, *, valid_request: bool | None = True, **kw
    ) -> TestResponse:
        """Send; check the status; validate the response (and the request: conforming or not)."""
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
        if status >= 400:
            assert resp.mimetype == PROBLEM
            assert resp.get_json()["status"] == status
        else:
            assert resp.mimetype == JSON
        self.seen.add((method.lower(), template, str(status)))
        return resp

    def assert_covered(self, method: str, template: str, skip: set[str]) -> None:
        """Every status documented for the operation (except ``skip``) was exercised."""
        method = method.lower()
        exercised = {s for m, t, s in self.seen if (m, t) == (method, template)}
        assert exercised == documented(self.spec, method, template) - skip, (method, template)


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
                 "TaskState", "Accepted202", "Problem", "Readiness"):  # fmt: skip
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


def _examples(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS or "requestBody" not in op:
                continue
            media = op["requestBody"]["content"][JSON]
            found = {"example": media["example"]} if "example" in media else {}
            found |= {name: ex["value"] for name, ex in media.get("examples", {}).items()}
            assert found, f"{method.upper()} {path} has no request example"
            for name, value in found.items():
                yield method, path.replace("{patient_id}", "P-000042"), name, value


def test_request_examples_conform_to_their_schemas(spec, openapi):
    examples = list(_examples(spec))
    assert len(examples) >= 5
    for method, path, name, value in examples:
        request = EnvironBuilder(path=path, method=method, json=value).get_request()
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
    ]
    for body in bad_results:
        request = EnvironBuilder(path="/v1/assay-results", method="POST", json=body).get_request()
        with pytest.raises(OpenAPIError):
            openapi.validate_request(WerkzeugOpenAPIRequest(request))
    withdrawal = {
        "result_id": "R-w",
        "patient_id": pid,
        "collected_at": "2024-01-05",
        "status": "entered-in-error",
    }
    request = EnvironBuilder(path="/v1/assay-results", method="POST", json=withdrawal).get_request()
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

    call.assert_covered("PUT", PATIENT, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", STATUS, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", TIMELINE, NEVER_TRIGGERED | {"503"})


def test_pending_documents_conform(call, app, pid):
    """Registered but not yet computed: the stub documents (written straight to Redis, no worker race)."""
    from shared import store

    redis = app.extensions["cml"].redis
    store.register_patient(redis, pid, {"patient_id": pid, "cohorts": [], "enrolled_on": None, "tki": None,
                                        "tki_started_on": None, "dose_mg": None})  # fmt: skip
    # No task was sent, so nothing computes it until the sweeper (seconds away) finds it dirty.
    status = call("GET", f"/v1/patients/{pid}/status", STATUS, 200).get_json()
    assert status == {"patient_id": pid, "pending": True, "computed_at": None, "data_version": None}
    timeline = call("GET", f"/v1/patients/{pid}/results", TIMELINE, 200).get_json()
    assert timeline == {"patient_id": pid, "pending": True, "computed_at": None, "results": []}


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


def test_events_conform(call, pid):
    url = f"/v1/patients/{pid}/events"
    call("POST", url, EVENTS, 404, json={"type": "death", "date": "2024-02-01"})
    register(call.client, pid)
    one = call("POST", url, EVENTS, 202, json={"type": "tki_stopped", "date": "2024-02-01", "reason": "TFR"})
    repost = call(
        "POST", url, EVENTS, 202, json={"type": "tki_stopped", "date": "2024-02-01", "reason": "TFR"}
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
    call("POST", url, EVENTS, 422, valid_request=False, json=[])
    call("POST", "/v1/patients/-bad/events", EVENTS, 422, valid_request=False, json=events[1])
    call("POST", url, EVENTS, 400, valid_request=False, data=b"{type: death}", content_type=JSON)
    call("POST", url, EVENTS, 415, valid_request=False, data=b"type=death", content_type="text/plain")
    note = {"type": "death", "date": "2024-02-01", "note": "x" * (3 * 1024 * 1024)}
    call("POST", url, EVENTS, 413, valid_request=False, json=note)

    call.assert_covered("POST", EVENTS, NEVER_TRIGGERED | {"503"})


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

    call.assert_covered("GET", TASK, NEVER_TRIGGERED | {"503"})
    call.assert_covered("GET", "/healthz", NEVER_TRIGGERED)


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
    ]
    for resp in answers:
        assert resp.get_json()["type"] == "/problems/store-unavailable"
        assert int(resp.headers["Retry-After"]) > 0
    not_ready = call("GET", "/readyz", "/readyz", 503).get_json()
    assert not_ready["checks"]["redis"]["ok"] is False
    with_503 = {(m, p) for p, item in spec["paths"].items() for m, op in item.items()
                if m in METHODS and "503" in op["responses"]}  # fmt: skip
    assert {(m, t) for m, t, _ in call.seen} == with_503


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
