"""The README's run command as a new user runs it: ./scripts/run installs, starts the worker and the API
under gunicorn against the Redis at REDIS_URL, loads the demo cohort and prints where to look and a
development key that works; Ctrl-C stops everything it started."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.interop.hl7_messages import copies
from tests.interop.hl7_messages import oru as oru_message
from tests.procs import ROOT, free_port, wait_for
from tests.test_mllp import exchange

pytestmark = pytest.mark.slow


def get(url: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_run_script_serves_the_demo_with_the_key_it_prints(redis_url, tmp_path):
    port, mllp_port = free_port(), free_port()
    out = tmp_path / "run.out"
    env = {**os.environ, "REDIS_URL": redis_url, "PORT": str(port), "MLLP_PORT": str(mllp_port)}
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "run")], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: "Ctrl-C stops it." in out.read_text(), 240, interval=0.5, what="scripts/run to be up"
        )
        text = out.read_text()
        assert f"using Redis at {redis_url}" in text
        key = re.search(r"API key\s+(\S+)", text).group(1)
        assert get(f"{base}/v1/patients/DEMO-001/status")[0] == 401  # a key is needed
        done = lambda: get(f"{base}/v1/patients/DEMO-001/status", key)[1].get("pending") is False  # noqa: E731
        wait_for(done, 30, interval=0.2, what="the demo patient's status")
        code, status = get(f"{base}/v1/patients/DEMO-001/status", key)
        assert code == 200 and status["response_level"] and status["results_count"] >= 1
        assert get(f"{base}/readyz")[0] == 200
        # The lab's door is up too: an ORU^R01 over MLLP for the demo patient is acknowledged AA.
        assert f"127.0.0.1:{mllp_port}" in text
        oru = oru_message("DEMO-001", f"RUN-{port}", copies(), control=f"RUN{port}")
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=10) as sock:
            assert "MSA|AA|" in exchange(sock, oru.encode())
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(60)
    # Everything it started is gone: nothing answers on its port.
    time.sleep(0.5)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mllp_port), timeout=2)
