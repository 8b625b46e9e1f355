"""Freshness: from the 202 of a posted result to GET .../status reflecting it, over real HTTP
(gunicorn), a real Celery worker and a redis-server the benchmark starts. Target: within 1 s.

    python bench/freshness.py [--posts 50]

Prints p50 / p99 / max of the post-to-visible time, beside a plain status GET round trip measured
in the same run (the floor any freshness figure sits on).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.procs import RedisServer, Worker, free_port, wait_for  # noqa: E402

KEY = "bench-freshness-key"
PATIENT = "P-0001"


def call(base: str, method: str, path: str, body: object | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def post_and_wait(base: str, i: int) -> float:
    body = {"result_id": f"F-{i}", "patient_id": PATIENT, "collected_at": "2024-04-02",
            "control_gene": "ABL1", "control_copies": 100000, "bcr_abl1_copies": 3.2 + i}  # fmt: skip
    start = time.perf_counter()
    version = call(base, "POST", "/v1/assay-results", body)["tasks"][0]["data_version"]
    while (call(base, "GET", f"/v1/patients/{PATIENT}/status").get("data_version") or 0) < version:
        time.sleep(0.002)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "API_KEYS": json.dumps({KEY: ["results:write", "status:read"]}),
        }
        worker = Worker(server.url, "fresh", Path(tmp))
        worker.start()
        port = free_port()
        gunicorn = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
        api = subprocess.Popen(
            [*gunicorn, "services.api:create_app()"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _up(base), 30, what="gunicorn")
            call(base, "PUT", f"/v1/patients/{PATIENT}", {"cohorts": ["ACTIM"], "enrolled_on": "2024-01-10"})
            post_and_wait(base, -1)  # warm-up
            fresh = sorted(post_and_wait(base, i) for i in range(args.posts))
            reads = []
            for _ in range(200):
                t = time.perf_counter()
                call(base, "GET", f"/v1/patients/{PATIENT}/status")
                reads.append(time.perf_counter() - t)
        finally:
            api.terminate()
            worker.stop()
            server.stop()
    ms = [x * 1000 for x in fresh]
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(f"post -> status visible, {args.posts} posts (ms): p50 {statistics.median(ms):.1f}  p99 {p99:.1f}")
    print(f"  max {ms[-1]:.1f}   (target < 1000)")
    print(f"status GET round trip, same run (ms): p50 {statistics.median(reads) * 1000:.2f}")


def _up(base: str) -> bool:
    try:
        return urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
