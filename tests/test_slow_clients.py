"""Slow clients against a real gunicorn started here, on loopback only: a few connections that send
headers and part of a body, then nothing, must not stop ``/healthz`` from answering. Everything is
bounded: a handful of sockets, a few seconds each."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FULL_KEY
from tests.procs import ROOT, free_port, stop_process, wait_for

CONF = ROOT / "services" / "api" / "gunicorn_conf.py"
# The settings of scripts/run before services/api/gunicorn_conf.py: two sync workers.
OLD_SETTINGS = ["-w", "2"]
NEW_SETTINGS = ["-c", str(CONF)]
HANDFUL = 6
HEALTHZ_BOUND_S = 1.0


def http_get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """One GET over a fresh loopback connection: (status, body); raises OSError on a timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def healthz_seconds(port: int, timeout: float) -> float | None:
    """How long /healthz took to answer 200, or None if it did not within ``timeout``."""
    start = time.monotonic()
    try:
        status, _ = http_get(port, "/healthz", timeout)
    except OSError:
        return None
    return time.monotonic() - start if status == 200 else None


@contextlib.contextmanager
def slow_clients(port: int, count: int, path: str = "/v1/assay-results") -> Iterator[list[socket.socket]]:
    """``count`` connections that send a POST's headers and the first bytes of its 1000-byte body,
    then stay silent until the block ends."""
    socks = []
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {FULL_KEY}\r\n"
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"result_id": '
    ).encode()
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head)
            socks.append(s)
        time.sleep(0.5)  # let the server take them up
        yield socks
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def gunicorn(args: list[str], redis_url: str, log: Path, env: dict | None = None) -> Iterator[int]:
    """gunicorn serving the app on a free loopback port with ``args``; yields the port."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, "-m", "gunicorn", *args, "-b", f"127.0.0.1:{port}", "services.api:create_app()"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: healthz_seconds(port, 2) is not None, 30, interval=0.2, what="gunicorn")
        yield port
    finally:
        stop_process(proc, 15)


def test_two_slow_clients_blocked_the_old_sync_workers(redis_url, tmp_path):
    """The failure this file guards against, kept as a measurement: with the old settings (two sync
    workers, no proxy) two slow clients hold both workers and /healthz does not answer."""
    with gunicorn(OLD_SETTINGS, redis_url, tmp_path / "old.log") as port, slow_clients(port, 2):
        assert healthz_seconds(port, 2.0) is None


def test_the_config_keeps_healthz_answering_under_a_handful_of_slow_clients(redis_url, tmp_path):
    with gunicorn(NEW_SETTINGS, redis_url, tmp_path / "new.log") as port, slow_clients(port, HANDFUL):
        for _ in range(5):
            took = healthz_seconds(port, 5.0)
            assert took is not None and took < HEALTHZ_BOUND_S, took
            time.sleep(0.2)


def test_a_client_silent_mid_body_loses_its_connection(redis_url, tmp_path):
    """gthread reads a body on a blocking socket: without CLIENT_IDLE_TIMEOUT_S a silent client held
    its thread for as long as it kept the connection open."""
    env = {"CLIENT_IDLE_TIMEOUT_S": "1"}
    with (
        gunicorn(NEW_SETTINGS, redis_url, tmp_path / "idle.log", env) as port,
        slow_clients(port, 1) as socks,
    ):
        socks[0].settimeout(10)
        start = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            while socks[0].recv(65536):
                pass  # whatever the server says, it then closes the connection
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("setting", ["timeout", "graceful_timeout", "keepalive", "limit_request_line"])
def test_the_config_sets(setting):
    text = CONF.read_text()
    assert f"\n{setting} = " in text
