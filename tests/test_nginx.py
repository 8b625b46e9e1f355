"""deploy/nginx/nginx.conf for real: nginx (installed by scripts/test, like redis-server) on a free
loopback port, in front of a gunicorn started here with services/api/gunicorn_conf.py, as
docker-compose.yml runs them. Only the listen address, the upstream and the runtime paths are changed
for the test. Bounded: a few dozen sockets on 127.0.0.1, seconds each."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FULL_KEY
from tests.procs import ROOT, free_port, stop_process, wait_for
from tests.test_slow_clients import HEALTHZ_BOUND_S, NEW_SETTINGS, gunicorn, healthz_seconds, slow_clients

CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# More slow clients than gunicorn alone has threads (2 workers x 8): nginx holds them, not gunicorn.
MANY = 24


def templated(conf: str, port: int, upstream_port: int, rundir: Path) -> str:
    """The repository's config, listening on 127.0.0.1:port and proxying to 127.0.0.1:upstream_port,
    with its runtime files under rundir."""
    assert conf.count("listen 8080;") == 1 and conf.count("server api:8000 resolve;") == 1
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("server api:8000 resolve;", f"server 127.0.0.1:{upstream_port};")
    paths = "".join(
        f"    {kind}_temp_path {rundir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("\nhttp {\n", f"\nhttp {{\n{paths}", 1)
    main = f"pid {rundir / 'nginx.pid'};\n"
    if os.geteuid() == 0:
        main += "user root;\n"  # workers must reach the test's private temporary directory
    return main + conf


def listening(proc: subprocess.Popen, port: int) -> bool:
    assert proc.poll() is None, "nginx exited: see nginx.log in the test's directory"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def nginx(upstream_port: int, rundir: Path, replace: dict[str, str] | None = None) -> Iterator[int]:
    """nginx with the repository's config (``replace``: directives to change, text for text)."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: ./scripts/test installs it (scripts/lib.sh, ensure_nginx)")
    port = free_port()
    rundir.mkdir(parents=True, exist_ok=True)
    conf = rundir / "nginx.conf"
    text = CONF.read_text()
    for directive, value in (replace or {}).items():
        assert text.count(directive) == 1, directive
        text = text.replace(directive, value)
    conf.write_text(templated(text, port, upstream_port, rundir))
    log = rundir / "nginx.log"
    cmd = [NGINX, "-p", str(rundir), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(proc, port), 15, interval=0.1, what="nginx to listen")
        yield port
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def proxied(redis_url, tmp_path_factory) -> Iterator[int]:
    """nginx's port, with gunicorn (the deployed settings) behind it."""
    rundir = tmp_path_factory.mktemp("nginx")
    with gunicorn(NEW_SETTINGS, redis_url, rundir / "api.log") as upstream, nginx(upstream, rundir) as port:
        yield port


def exchange(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(raw)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return int(lines[0].split(" ", 2)[1]), headers, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2 :]
    return out


def request(method: str, path: str, body: object | None = None, extra: str = "") -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Authorization: Bearer {FULL_KEY}\r\n{extra}"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data


def assert_problem(headers: dict, body: bytes, status: int) -> dict:
    assert headers["content-type"] == "application/problem+json", headers
    doc = json.loads(body)
    assert doc["status"] == status and doc["type"].startswith("/problems/") and doc["title"], doc
    return doc


def test_slow_clients_do_not_block_healthz_through_nginx(proxied):
    with slow_clients(proxied, MANY):
        for _ in range(5):
            took = healthz_seconds(proxied, 5.0)
            assert took is not None and took < HEALTHZ_BOUND_S, took
            time.sleep(0.2)


def test_a_client_silent_mid_body_is_cut_off_by_nginx(redis_url, tmp_path):
    """client_body_timeout (10 s in the file, 1 s here): nginx closes the connection (it logs a 408
    and sends nothing), and gunicorn never saw the request."""
    with (
        gunicorn(NEW_SETTINGS, redis_url, tmp_path / "api.log") as upstream,
        nginx(upstream, tmp_path, {"client_body_timeout 10s;": "client_body_timeout 1s;"}) as port,
        slow_clients(port, 1) as socks,
    ):
        socks[0].settimeout(10)
        start, answer = time.monotonic(), b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := socks[0].recv(65536):
                answer += chunk
        assert time.monotonic() - start < 5
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    assert "POST /v1/assay-results" not in (tmp_path / "api.log").read_text()


def test_a_normal_post_passes_through(proxied):
    pid = f"P-{uuid.uuid4().hex[:12]}"
    patient = {
        "cohorts": ["ACTIM"], "enrolled_on": "2024-01-10", "tki": "imatinib", "tki_started_on": "2021-03-01",
        "dose_mg": 400,
    }  # fmt: skip
    status, _, body = exchange(proxied, request("PUT", f"/v1/patients/{pid}", patient))
    assert status == 201, body
    result = {
        "result_id": f"LAB-{uuid.uuid4().hex[:12]}", "patient_id": pid, "collected_at": "2024-04-02",
        "control_gene": "ABL1", "control_copies": 100000, "bcr_abl1_copies": 3.2,
    }  # fmt: skip
    status, _, body = exchange(proxied, request("POST", "/v1/assay-results", result))
    assert status == 202, body
    assert json.loads(body)["accepted"][0]["outcome"] == "created"
    # The API's own problems pass through untouched (no proxy_intercept_errors).
    status, headers, body = exchange(proxied, request("POST", "/v1/assay-results", {}))
    assert status == 422 and assert_problem(headers, body, 422)["instance"] == "/v1/assay-results"


def test_an_oversized_body_gets_413_from_nginx(proxied):
    too_big = 2 * 1024 * 1024 + 1  # one byte over MAX_BODY_BYTES' default
    raw = request(
        "POST", "/v1/assay-results", extra=f"Content-Type: application/json\r\nContent-Length: {too_big}\r\n"
    )
    status, headers, body = exchange(proxied, raw)
    assert status == 413
    assert "instance" not in assert_problem(headers, body, 413)  # nginx's, not the app's


def test_an_oversized_chunked_body_gets_413_from_nginx(proxied):
    """gunicorn streams chunked bodies through, so a limit on Content-Length alone does not bound them
    (design-notes.md, "Under pressure"); nginx counts what it reads."""
    chunk = b"x" * (512 * 1024)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    raw = request(
        "POST", "/v1/assay-results", extra="Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    )
    status, headers, body = exchange(proxied, raw + body)
    assert status == 413
    assert_problem(headers, body, 413)


def test_oversized_headers_and_request_lines_get_problems_from_nginx(proxied):
    status, headers, body = exchange(proxied, request("GET", "/healthz", extra=f"X-Big: {'a' * 9000}\r\n"))
    assert status == 431
    assert_problem(headers, body, 431)
    status, headers, body = exchange(proxied, request("GET", "/healthz?" + "a" * 9000))
    assert status == 414
    assert_problem(headers, body, 414)
    status, headers, body = exchange(proxied, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400
    assert_problem(headers, body, 400)


def test_a_dead_upstream_gets_502_problem(tmp_path):
    with nginx(free_port(), tmp_path) as port:  # nothing listens upstream
        status, headers, body = exchange(port, request("GET", "/healthz"))
    assert status == 502
    assert_problem(headers, body, 502)
