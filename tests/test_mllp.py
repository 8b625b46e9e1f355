"""``python -m services.mllp`` as a real process on a loopback port, against the test Redis and worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import keys
from shared.ops import audit_entries
from tests.interop.hl7_messages import copies, oru
from tests.procs import ROOT, free_port, stop_process, wait_for
from tests.support import register, wait_status

START, END = b"\x0b", b"\x1c\r"


class Mllp:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def start(redis_url: str, logdir: Path, **env: str) -> Mllp:
    port, log = free_port(), logdir / f"mllp-{uuid.uuid4().hex[:6]}.log"
    environ = {**os.environ, "REDIS_URL": redis_url, "MLLP_PORT": str(port), "MLLP_CALLER": "lab-engine",
               "PYTHONPATH": str(ROOT), **env}  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.mllp"],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(listening, 20, what="the MLLP listener")
    return Mllp(proc, port, log)


@pytest.fixture
def mllp(redis_url: str, worker, tmp_path: Path) -> Iterator[Mllp]:
    server = start(redis_url, tmp_path, MLLP_READ_TIMEOUT_S="5")
    yield server
    stop_process(server.proc)


def exchange(sock: socket.socket, payload: bytes, framed: bool = True) -> str:
    sock.sendall(START + payload + END if framed else payload)
    return read_ack(sock).decode()


def msa(ack: str) -> str:
    return next(line for line in ack.split("\r") if line.startswith("MSA"))


def test_messages_over_one_connection_reach_the_status(mllp, client, r, pid):
    register(client, pid)
    first = oru(pid, f"M1-{pid}", copies(50), control=f"C1-{pid}", collected="20240105")
    second = oru(pid, f"M2-{pid}", copies(3), control=f"C2-{pid}", collected="20240301")
    with mllp.connect() as sock:
        ack1 = exchange(sock, first.encode())
        ack2 = exchange(sock, second.encode())
        again = exchange(sock, first.encode())  # re-sent: the same ACK, nothing stored twice
    assert msa(ack1) == f"MSA|AA|C1-{pid}" and msa(ack2) == f"MSA|AA|C2-{pid}"
    assert again == ack1
    status = wait_status(client, pid, lambda d: d["results_count"] == 2)
    assert status["latest_result"]["result_id"] == f"M2-{pid}"
    entries = [e for e in audit_entries(r, 200, None) if pid in str(e.get("result_ids"))]
    assert [(e["who"], e["what"], e["message_control_id"]) for e in entries] == [
        ("lab-engine", "MLLP ORU^R01", f"C2-{pid}"), ("lab-engine", "MLLP ORU^R01", f"C1-{pid}"),
    ]  # fmt: skip


def test_garbage_is_answered_and_the_listener_lives_on(mllp, client, pid):
    with mllp.connect() as sock:
        assert msa(exchange(sock, b"\x00\xffnot hl7")) == "MSA|AR|"
        assert msa(exchange(sock, b"no start block" + END, framed=False)) == "MSA|AR|"
        unsupported = oru(pid, "X", copies(), control="V-26", version="2.6").encode()
        assert msa(exchange(sock, unsupported)) == "MSA|AR|V-26"
    with mllp.connect() as sock:  # a peer that sends half a frame and leaves
        sock.sendall(START + b"MSH|^~\\&|half")
    register(client, pid)
    with mllp.connect() as sock:
        assert msa(exchange(sock, oru(pid, f"G-{pid}", copies(), control=f"G-{pid}").encode())).startswith(
            "MSA|AA|"
        )
    assert mllp.proc.poll() is None


def test_an_unknown_patient_is_ae_naming_pid3(mllp, pid):
    with mllp.connect() as sock:
        ack = exchange(sock, oru(pid, f"U-{pid}", copies(), control=f"U-{pid}").encode())
    assert msa(ack) == f"MSA|AE|U-{pid}" and "ERR||PID^1^3|204^" in ack


def test_sigterm_exits_cleanly(redis_url, tmp_path):
    server = start(redis_url, tmp_path)
    with server.connect() as sock:  # an idle connection does not hold the shutdown
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == 0
        assert sock.recv(10) == b""
    assert "MLLP stopped" in server.log.read_text()


def test_redis_down_is_ar_not_stored(tmp_path, pid):
    server = start("redis://127.0.0.1:1/0", tmp_path)
    try:
        with server.connect() as sock:
            ack = exchange(sock, oru(pid, f"D-{pid}", copies(), control=f"D-{pid}").encode())
        assert msa(ack) == f"MSA|AR|D-{pid}" and "may not have been stored" in ack
        assert "a re-send is safe" in ack
    finally:
        stop_process(server.proc)


def read_ack(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(END):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    assert data.startswith(START)
    return data[1:-2]


@pytest.mark.parametrize("between", [b"\n", b"\r\n"])
def test_bytes_between_frames_are_skipped(mllp, client, r, pid, between):
    """MLLP (HL7 v2.5 appendix C.4.3): an LF or CRLF after 0x1C 0x0D is not part of the next frame."""
    register(client, pid)
    first = oru(pid, f"N1-{pid}", copies(50), control=f"N1-{pid}", collected="20240105")
    second = oru(pid, f"N2-{pid}", copies(3), control=f"N2-{pid}", collected="20240301")
    with mllp.connect() as sock:
        sock.sendall(START + first.encode() + END + between)
        assert msa(read_ack(sock).decode()) == f"MSA|AA|N1-{pid}"
        sock.sendall(START + second.encode() + END)
        assert msa(read_ack(sock).decode()) == f"MSA|AA|N2-{pid}"
    assert wait_status(client, pid, lambda d: d["results_count"] == 2)["results_count"] == 2
    assert r.hexists(keys.results(pid), f"N2-{pid}")


def test_the_ack_is_in_the_messages_charset(mllp, client, pid):
    register(client, pid)
    text = oru(pid, f"E-{pid}", [*copies(), "NM|HB^Hb \u20ac^99LAB||1||||||F"], control=f"E-{pid}")
    raw = text.replace("|2.5.1\r", "|2.5.1||||||8859/15\r").encode("iso-8859-15")
    with mllp.connect() as sock:
        sock.sendall(START + raw + END)
        ack = read_ack(sock)
    assert b"Hb \xa4" in ack  # the euro sign in ISO 8859-15
    lines = ack.decode("iso-8859-15").split("\r")
    assert lines[0].split("|")[17] == "8859/15" and msa("\r".join(lines)) == f"MSA|AA|E-{pid}"
