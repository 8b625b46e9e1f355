"""HTTP edges over a real gunicorn (the Flask test client frames bodies itself): chunked bodies are
bounded like Content-Length ones and parsed whole or refused, and gunicorn's own refusals (400, 414,
431) are problem+json like the app's, conforming to the spec's Problem schema."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid

import jsonschema
import orjson
import pytest
import redis
import yaml

from shared import keys
from tests.conftest import FULL_KEY
from tests.procs import ROOT, free_port, stop_process, wait_for
from tests.support import result

PROBLEM = "application/problem+json"
MAX_BODY = 2 * 1024 * 1024  # the default MAX_BODY_BYTES, which this gunicorn runs with


@pytest.fixture(scope="module")
def api(redis_url, worker, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn-edges") / "api.log"
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    env.pop("MAX_BODY_BYTES", None)
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "services.api:create_app()",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0] == 200
        except OSError:
            return False

    wait_for(up, 30, what="gunicorn")
    yield port
    stop_process(proc)


def exchange(port: int, data: bytes, *, shut: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer to the end (gunicorn's sync worker closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        # Refused early (a 413 before the whole body): the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def chunked(
    path: str, body: bytes, *, chunk: int = 64 * 1024, method: str = "POST", tail: bytes = b"0\r\n\r\n"
):
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {FULL_KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk]) for i in range(0, len(body), chunk)
    ]
    return head + b"".join(parts) + tail


def problem(status: int, headers: dict, body: bytes, expected: int) -> dict:
    assert status == expected, body[:500]
    assert headers["content-type"] == PROBLEM, (headers, body[:300])
    doc = json.loads(body)
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    schema = {**spec["components"]["schemas"]["Problem"], "components": spec["components"]}
    jsonschema.validate(doc, schema)
    assert doc["status"] == expected
    return doc


@pytest.fixture
def patient(api, redis_url) -> str:
    pid = f"P-{uuid.uuid4().hex[:12]}"
    body = b'{"cohorts": ["EDGES"], "enrolled_on": "2023-01-10"}'
    status, _, answer = exchange(api, chunked(f"/v1/patients/{pid}", body, method="PUT"))
    assert status == 201, answer
    return pid


def stored(redis_url: str, pid: str) -> int:
    return redis.Redis.from_url(redis_url).hlen(keys.results(pid))


def test_a_chunked_body_within_the_limit_is_read_whole(api, redis_url, patient):
    body = orjson.dumps([result(patient) for _ in range(3)])
    status, _, answer = exchange(api, chunked("/v1/assay-results", body, chunk=50))
    assert status == 202, answer
    assert stored(redis_url, patient) == 3


def test_a_chunked_body_over_the_limit_is_413_not_a_truncated_parse(api, redis_url, patient):
    # A 3 MiB batch: werkzeug alone cut it at 2 MiB and answered 400 "invalid JSON".
    big = orjson.dumps([result(patient, lab="L" * 100) for _ in range(12_000)])
    assert len(big) > 3 * 1024 * 1024 - 100_000
    doc = problem(*exchange(api, chunked("/v1/assay-results", big)), 413)
    assert "MAX_BODY_BYTES" in doc["detail"]
    # One valid result padded to exactly the limit, then garbage: cut at the limit it parsed, and was stored.
    one = orjson.dumps(result(patient))
    padded = one + b" " * (MAX_BODY - len(one)) + b"garbage"
    problem(*exchange(api, chunked("/v1/assay-results", padded)), 413)
    assert stored(redis_url, patient) == 0
    # Exactly the limit is not over it.
    status, _, answer = exchange(api, chunked("/v1/assay-results", one + b" " * (MAX_BODY - len(one))))
    assert status == 202, answer
    assert stored(redis_url, patient) == 1


@pytest.mark.parametrize(
    "framing",
    [
        b"zz\r\n{}\r\n0\r\n\r\n",  # a chunk size that is not hex
        b"2\r\n{}XX0\r\n\r\n",  # a chunk without its CRLF
        b"10\r\n{}",  # the client stops inside a chunk
    ],
    ids=["bad size", "missing terminator", "cut short"],
)
def test_a_malformed_chunked_body_is_400(api, redis_url, patient, framing):
    head = chunked("/v1/assay-results", b"", tail=b"")
    problem(*exchange(api, head + framing, shut=True), 400)
    assert stored(redis_url, patient) == 0


def test_gunicorn_refusals_are_problem_json(api):
    problem(*exchange(api, b"NOT A REQUEST LINE\r\n\r\n"), 400)
    problem(*exchange(api, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"), 414)
    big_header = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    problem(*exchange(api, big_header), 431)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(120))
    problem(*exchange(api, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n"), 431)


def test_405_says_allow_over_http(api):
    req = f"DELETE /v1/cohorts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {FULL_KEY}\r\n\r\n"
    status, headers, body = exchange(api, req.encode())
    problem(status, headers, body, 405)
    assert set(headers["allow"].replace(" ", "").split(",")) >= {"GET"}


def test_the_spec_documents_what_the_server_refuses():
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    responses = spec["components"]["responses"]
    refused = responses["RefusedByServer"]["description"]
    for status, slug in (
        ("400", "bad-request"),
        ("414", "uri-too-long"),
        ("431", "request-header-fields-too-large"),
    ):
        assert status in refused and f"/problems/{slug}" in refused
        assert f"`{status}`" in spec["info"]["description"]
    assert responses["MethodNotAllowed"]["headers"]["Allow"]["required"] is True
    assert "/problems/duplicate-key" in responses["MalformedJson"]["description"]
    assert "chunked" in responses["TooLarge"]["description"]
