"""A burst (issue 11): 100,000 results for 1,000 patients, in 100 batches of 1,000 (one result per
patient each), posted over HTTP to the API under gunicorn (2 workers) with a real Celery worker
(2 processes) and a redis-server the benchmark starts, until every patient's status is current
(its stored ``status_v`` equals its data version, nothing dirty).

Baselines in the same run: the time to acknowledge all the batches (their 202s: the floor, the work
cannot be done before it is acknowledged), and, with ``--before``, the same burst through the code of
another commit (default: the commit before issue 11), extracted with ``git archive`` and run the same
way against its own fresh redis-server.

    python bench/burst.py [--patients 1000] [--batches 100] [--before f3470f0 | --no-before]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-burst-key"


def measure(patients: int, batches: int) -> dict:
    """Runs in the code under test (its tests.procs starts the worker from that tree)."""
    import redis
    import requests

    from shared import keys
    from tests.procs import RedisServer, Worker, free_port, wait_for

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from recompute import result

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        env = {**os.environ, "REDIS_URL": server.url, "RATE_LIMIT": "1000000/minute",
               "API_KEYS": json.dumps({KEY: ["results:write", "status:read", "cohorts:write"]})}  # fmt: skip
        worker = Worker(server.url, "burst", Path(tmp), concurrency=2)
        worker.start()
        port = free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "services/api/gunicorn_conf.py", "-w", "2",
             "-b", f"127.0.0.1:{port}", "services.api:create_app()"],
            cwd=Path.cwd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {KEY}"
        r = redis.Redis.from_url(server.url)
        pids = [f"B-{i:05d}" for i in range(patients)]

        def current() -> bool:
            if r.zcard(keys.DIRTY_PATIENTS):
                return False
            pipe = r.pipeline(transaction=False)
            for pid in pids:
                pipe.get(keys.version(pid))
                pipe.get(keys.status_version(pid))
            got = pipe.execute()
            return all(v == sv for v, sv in zip(got[::2], got[1::2], strict=True))

        try:
            wait_for(lambda: _up(s, base), 30, what="gunicorn")
            for pid in pids:
                body = {"cohorts": ["BURST"], "enrolled_on": "2015-01-05", "tki": "imatinib",
                        "tki_started_on": "2014-12-01", "dose_mg": 400}  # fmt: skip
                assert s.put(f"{base}/v1/patients/{pid}", json=body).status_code in (200, 201)
            wait_for(current, 120, what="the registrations' statuses")
            bodies = [json.dumps([result(pid, b) for pid in pids]) for b in range(batches)]
            headers = {"Content-Type": "application/json"}
            start = time.perf_counter()
            for body in bodies:
                resp = s.post(f"{base}/v1/assay-results", data=body, headers=headers)
                assert resp.status_code == 202, resp.text[:500]
            acked = time.perf_counter() - start
            while not current():
                time.sleep(0.02)
            done = time.perf_counter() - start
            cpu = {
                "worker": _cpu_s(worker.proc.pid),
                "api": _cpu_s(api.pid),
                "redis": _cpu_s(server.proc.pid),
            }
            tasks = {k.decode(): float(v) for k, v in r.hgetall(keys.TASK_METRICS).items()}
            recomputes = {k.split("|", 1)[1]: (int(v), round(tasks[k.replace("count|", "sum|")], 1))
                          for k, v in tasks.items() if k.startswith("count|")}  # fmt: skip
            counts = {int(json.loads(r.get(keys.status(p)))["results_count"]) for p in pids[:50]}
        finally:
            api.terminate()
            api.wait(10)
            worker.stop()
            server.stop()
    return {"acked_s": acked, "current_s": done, "results_counts": sorted(counts), "cpu_s": cpu,
            "recomputes": recomputes}  # fmt: skip


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (from /proc), since it started."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def _up(s, base: str) -> bool:
    try:
        return s.get(base + "/healthz", timeout=1).status_code == 200
    except OSError:
        return False


def run_in(tree: Path, patients: int, batches: int) -> dict:
    code = (
        f"import sys, json; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(ROOT / 'bench')!r});"
        f"import burst; print(json.dumps(burst.measure({patients}, {batches})))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--before", default="f3470f0")
    parser.add_argument("--no-before", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from memory import extract

    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": ROOT}
        if not args.no_before:
            trees = {"before": extract(args.before, Path(tmp) / "before"), **trees}
        for name, tree in trees.items():
            got[name] = run_in(tree, args.patients, args.batches)
    n = args.patients * args.batches
    print(f"{n} results, {args.patients} patients, {args.batches} batches; cpu count {os.cpu_count()}")
    for name, doc in got.items():
        print(f"{name:7s} acknowledged in {doc['acked_s']:6.2f} s; every status current in "
              f"{doc['current_s']:6.2f} s (x{doc['current_s'] / doc['acked_s']:.2f} of the acks)"
              f"  results_count {doc['results_counts']}")  # fmt: skip
        print(f"        CPU s during the run: {doc['cpu_s']}; tasks (count, seconds): {doc['recomputes']}")


if __name__ == "__main__":
    main()
