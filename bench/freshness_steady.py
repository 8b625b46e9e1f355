"""Freshness under a steady load (issue 11): single results posted at a steady rate (default 200/s) for
a while, spread over many patients, to the API under gunicorn (the deployed config) with a real Celery
worker (2 processes) and a redis-server the benchmark starts; for each post, the time from its 202 to
the patient's stored status reflecting it (its status version reaching the data version the 202
reported; GET .../status serves exactly that stored document).

Baseline in the same run: the same measurement at a trickle (5 posts/s), where nothing queues.

    python bench/freshness_steady.py [--rate 200] [--seconds 20] [--patients 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from shared import keys  # noqa: E402
from tests.procs import RedisServer, Worker, start_gunicorn, stop_process, wait_for  # noqa: E402

KEY = "bench-steady-key"


def _result(pid: str, n: int) -> dict:
    return {"result_id": f"{pid}-{n}", "patient_id": pid, "collected_at": "2024-03-01",
            "control_gene": "ABL1", "control_copies": 100000, "bcr_abl1_copies": n % 50}  # fmt: skip


def run(base: str, r: redis.Redis, pids: list[str], rate: float, seconds: float, tag: str) -> list[float]:
    """Post at `rate` per second for `seconds` from 4 threads; return each post's 202-to-status time."""
    acked: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    total = int(rate * seconds)
    start = time.perf_counter()

    def poster(k: int) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {KEY}"
        for i in range(k, total, 4):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pid = pids[i % len(pids)]
            resp = s.post(f"{base}/v1/assay-results", json=_result(pid, i) | {"result_id": f"{tag}{pid}-{i}"})
            assert resp.status_code == 202, resp.text[:200]
            version = resp.json()["tasks"][0]["data_version"]
            with lock:
                acked.append((pid, version, time.perf_counter()))

    threads = [threading.Thread(target=poster, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    seen: dict[tuple[str, int], float] = {}
    while any(t.is_alive() for t in threads) or len(seen) < len(acked):
        with lock:
            waiting = [(pid, v) for pid, v, _ in acked if (pid, v) not in seen]
        if waiting:
            pipe = r.pipeline(transaction=False)
            for pid, _ in waiting:
                pipe.get(keys.status_version(pid))
            now = time.perf_counter()
            for (pid, v), sv in zip(waiting, pipe.execute(), strict=True):
                if sv is not None and int(sv) >= v:
                    seen[(pid, v)] = now
        time.sleep(0.002)
    return [seen[(pid, v)] - at for pid, v, at in acked]


def _summary(name: str, rate: float, lags: list[float]) -> str:
    q = statistics.quantiles(lags, n=100)
    return (f"| {name} | {rate:.0f}/s | {len(lags)} | {1000 * statistics.median(lags):.0f} ms "
            f"| {1000 * q[98]:.0f} ms | {1000 * max(lags):.0f} ms |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--patients", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        os.environ["RATE_LIMIT"] = "10000000/minute"
        os.environ["API_KEYS"] = json.dumps({KEY: ["results:write", "status:read", "cohorts:write"]})
        worker = Worker(server.url, "steady", Path(tmp), concurrency=2)
        worker.start()
        api, base = start_gunicorn(server.url, Path(tmp) / "api.log")
        r = redis.Redis.from_url(server.url)
        try:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {KEY}"
            pids = [f"S-{i:05d}" for i in range(args.patients)]
            for pid in pids:
                body = {"cohorts": ["STEADY"], "tki": "imatinib", "tki_started_on": "2023-01-02"}
                assert s.put(f"{base}/v1/patients/{pid}", json=body).status_code in (200, 201)
            wait_for(lambda: r.zcard(keys.DIRTY_PATIENTS) == 0, 120, what="registrations")
            trickle = run(base, r, pids, 5, min(args.seconds, 10), "t")
            steady = run(base, r, pids, args.rate, args.seconds, "s")
        finally:
            stop_process(api)
            worker.stop()
            server.stop()
    print("| load | rate | posts | p50 (202 to status) | p99 | max |")
    print("|---|---|---|---|---|---|")
    print(_summary("trickle (baseline)", 5, trickle))
    print(_summary("steady", args.rate, steady))


if __name__ == "__main__":
    main()
