"""Property-based fuzzing of the API against openapi.yaml (schemathesis), bounded in examples and time:
no 5xx, and every response conforms to the spec (status code, content type, headers, body schema)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import FULL_KEY
from tests.procs import ROOT

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# POST /v1/hl7v2 takes and answers ER7 text (x-application/hl7-v2+er7): sent and read as plain text.
ER7 = "x-application/hl7-v2+er7"
schemathesis.serializer.alias(ER7, "text/plain")


@schemathesis.deserializer(ER7)
def _er7(ctx, response) -> str:
    return response.content.decode("utf-8", "replace")


@pytest.fixture
def api_schema(app, worker):
    schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
    schema.app = app
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_spec(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {FULL_KEY}"}, checks=CHECKS)
