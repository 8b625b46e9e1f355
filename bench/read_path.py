"""Read-path benchmark: GET /v1/patients/{id}/status of the service against a bare Flask endpoint doing
one Redis GET, both under gunicorn as configured (services/api/gunicorn_conf.py: 2 processes x 8
threads), driven by ``wrk -t2 -c16``, in alternating rounds of one run, with a Celery worker of 2
processes and one redis-server running as a new user would run them.

Usage: python bench/read_path.py [--rounds 5] [--seconds 5]
Prints requests/s per round and the median of the per-pair ratios service / bare (target >= 0.95).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import documents, store  # noqa: E402
from tests.procs import RedisServer, Worker, free_port, wait_for  # noqa: E402

PATIENT = "BENCH-001"
KEY = "bench-read-key"
AUTH = f"Authorization: Bearer {KEY}"


def seed(url: str) -> None:
    """A realistic status document: a patient with two years of quarterly results."""
    r = store.connect(url)
    reg = {
        "patient_id": PATIENT,
        "cohorts": ["BENCH"],
        "enrolled_on": "2023-01-02",
        "tki": "imatinib",
        "tki_started_on": "2020-03-01",
        "dose_mg": 400.0,
    }
    store.register_patient(r, PATIENT, reg, {"who": "bench"})
    results = [
        {
            "result_id": f"B-{i}",
            "patient_id": PATIENT,
            "collected_at": f"{2023 + i // 4}-{1 + 3 * (i % 4):02d}-10",
            "control_gene": "ABL1",
            "control_copies": 90000.0,
            "bcr_abl1_copies": float(40 - 3 * i),
            "is_percent": None,
            "conversion_factor": 1.0,
            "status": "final",
            "lab": None,
            "assay": None,
            "transcript": "e14a2",
        }
        for i in range(8)
    ]
    store.store_results(r, results, {"who": "bench"})
    data = store.load_patient(r, PATIENT)
    store.commit_status(r, data, *documents.patient_documents(data))


def serve(app: str, port: int, env: dict, probe: str = f"/v1/patients/{PATIENT}/status", key: str = KEY):
    """``app`` under gunicorn with the repo's settings (services/api/gunicorn_conf.py), as deployed."""
    conf = str(ROOT / "services" / "api" / "gunicorn_conf.py")
    cmd = [sys.executable, "-m", "gunicorn", "-c", conf, "-b", f"127.0.0.1:{port}", app]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{probe}", headers={"Authorization": f"Bearer {key}"}
            )
            return urllib.request.urlopen(req).status < 500
        except urllib.error.HTTPError as err:
            return err.code < 500
        except OSError:
            return False

    wait_for(up, 30, what=f"{app} on {port}")
    return proc


def wrk(url: str, seconds: int, *extra: str) -> float:
    """Requests/s of ``wrk -t2 -c16`` (the issue's load) against ``url``."""
    cmd = ["wrk", "-t2", "-c16", f"-d{seconds}s", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def status_wrk(port: int, seconds: int) -> float:
    return wrk(f"http://127.0.0.1:{port}/v1/patients/{PATIENT}/status", seconds, "-H", AUTH)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        worker = Worker(server.url, "bench", Path(tmp))
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
            "API_KEYS": f'{{"{KEY}": ["status:read"]}}',
        }
        procs = []
        try:
            seed(server.url)
            worker.start()
            service_port, bare_port = free_port(), free_port()
            procs.append(serve("services.api:create_app()", service_port, env))
            procs.append(serve("bare_app:create_app()", bare_port, env))
            status_wrk(service_port, 1), status_wrk(bare_port, 1)  # warm-up
            ratios = []
            print(f"{'round':>5} {'service req/s':>14} {'bare req/s':>11} {'ratio':>6}")
            for i in range(args.rounds):
                service = status_wrk(service_port, args.seconds)
                bare = status_wrk(bare_port, args.seconds)
                ratios.append(service / bare)
                print(f"{i + 1:>5} {service:>14.0f} {bare:>11.0f} {ratios[-1]:>6.3f}")
                time.sleep(0.2)
            print(f"median ratio service/bare: {statistics.median(ratios):.3f} (target >= 0.95)")
        finally:
            for p in procs:
                p.terminate()
            worker.stop()
            server.stop()


if __name__ == "__main__":
    main()
