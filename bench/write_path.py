"""Write-path benchmark (issue 11), as a new user would run the service: the API under gunicorn as
configured (services/api/gunicorn_conf.py: 2 processes x 8 threads), a Celery worker of 2 processes
recomputing what the writes queue, one redis-server (AOF, everysec), all on this machine.

- single: ``POST /v1/assay-results`` of one result, loaded by ``wrk -t2 -c16`` with a Lua script that
  gives every request a new result_id (a repeated id is "unchanged", which is cheaper) for one of
  PATIENTS registered patients; beside it, in alternating rounds of the same run, a bare Flask app
  under the same gunicorn settings whose route parses the JSON body and answers 202
  (bench/bare_app.py). Target: service / bare >= 0.5.
- batch: a Python client of a few threads posting batches of 1,000 results for 1,000 distinct
  patients (new result ids every batch, bodies made before the clock starts); results acknowledged
  (202) per second. Target: >= 30,000/s.

Usage: python bench/write_path.py [--rounds 5] [--seconds 5] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from read_path import serve, wrk  # noqa: E402

from shared import keys  # noqa: E402
from tests.procs import RedisServer, Worker, free_port  # noqa: E402

KEY = "bench-write-key"
PATIENTS = 1000
BATCH = 1000

# Every request a new result id: the thread's number, the round and a counter.
WRK_LUA = """
local counter = 0
local prefix = os.getenv("WRK_PREFIX") or "W"
local patients = tonumber(os.getenv("WRK_PATIENTS") or "1000")
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_KEY")
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"result_id":"%s-%d-%d","patient_id":"P-%d","collected_at":"2024-04-02",' ..
    '"control_gene":"ABL1","control_copies":100000,"bcr_abl1_copies":%d}',
    prefix, tid, counter, counter % patients, 1 + counter % 50)
  return wrk.format("POST", "/v1/assay-results", nil, body)
end
"""


TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(out[::2], out[1::2], strict=True):
        children.setdefault(int(parent), []).append(int(child))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants, so far."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


class Usage:
    """Where the CPU went during a round (API, Celery worker, redis-server), and how many recomputes
    the worker finished: the 2 cores are shared by all of them and the load generator."""

    def __init__(self, procs: dict[str, int], r: redis.Redis):
        self.procs, self.r = procs, r

    def _recomputes(self) -> int:
        counts = self.r.hgetall(keys.TASK_METRICS)
        return sum(int(v) for k, v in counts.items() if k.startswith(b"count|cml.recompute_patient|"))

    def __enter__(self) -> Usage:
        self.start = {name: cpu_seconds(pid) for name, pid in self.procs.items()}
        self.recomputes0, self.t0 = self._recomputes(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.t0
        self.cpu = {name: (cpu_seconds(pid) - self.start[name]) / elapsed for name, pid in self.procs.items()}
        self.recomputes = (self._recomputes() - self.recomputes0) / elapsed

    def __str__(self) -> str:
        cores = " ".join(f"{name} {share:.2f}" for name, share in self.cpu.items())
        return f"cores used: {cores}; recomputes/s {self.recomputes:.0f}"


def call(port: int, method: str, path: str, body: object) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body), headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def register(port: int) -> None:
    for p in range(PATIENTS):
        assert (
            call(port, "PUT", f"/v1/patients/P-{p}", {"cohorts": ["BENCH"], "enrolled_on": "2024-01-10"})
            < 300
        )


def single_round(port: int, seconds: int, prefix: str, script: Path) -> float:
    os.environ.update(WRK_PREFIX=prefix, WRK_PATIENTS=str(PATIENTS), WRK_KEY=KEY)
    return wrk(f"http://127.0.0.1:{port}/v1/assay-results", seconds, "-s", str(script))


def batch_bodies(prefix: str, n: int) -> list[bytes]:
    return [
        orjson.dumps(
            [
                {
                    "result_id": f"{prefix}-{b}-{p}",
                    "patient_id": f"P-{p}",
                    "collected_at": "2024-04-02",
                    "control_gene": "ABL1",
                    "control_copies": 100000,
                    "bcr_abl1_copies": 1 + (b + p) % 50,
                }
                for p in range(BATCH)
            ]  # fmt: skip
        )
        for b in range(n)
    ]


def batch_round(port: int, seconds: float, threads: int, bodies: list[bytes]) -> float:
    """Results acknowledged per second: ``threads`` clients posting the bodies until ``seconds`` pass."""
    lock, done, next_body = threading.Lock(), [0], iter(bodies)
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                body = next(next_body, None)
            if body is None:
                raise RuntimeError("ran out of batch bodies: make more")
            conn.request("POST", "/v1/assay-results", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 202:
                raise RuntimeError(f"batch answered {resp.status}")
            with lock:
                done[0] += BATCH
        conn.close()

    start = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return done[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--only", choices=("single", "batch"), default=None)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the API workers during the first single round (collapsed stacks)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        worker = Worker(server.url, "bench", Path(tmp))
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_LUA)
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
            "API_KEYS": json.dumps({KEY: ["results:write", "status:read"]}),
            # The default budget (6000/minute) is a production setting; the benchmark measures speed.
            "RATE_LIMIT": "100000000/minute",
        }
        procs = []
        try:
            worker.start()
            service_port, bare_port = free_port(), free_port()
            procs.append(serve("services.api:create_app()", service_port, env, probe="/healthz"))
            procs.append(serve("bare_app:create_app()", bare_port, env, probe="/nothing"))
            register(service_port)
            r = redis.Redis.from_url(server.url)
            usage = {"api": procs[0].pid, "worker": worker.proc.pid, "redis": server.proc.pid}
            bare_usage = {"bare": procs[1].pid, "worker": worker.proc.pid, "redis": server.proc.pid}
            if args.only in (None, "single"):
                single_round(service_port, 1, "warm", script), single_round(bare_port, 1, "warm", script)
                ratios = []
                print(f"{'round':>5} {'service POST/s':>15} {'bare POST/s':>12} {'ratio':>6}")
                for i in range(args.rounds):
                    spy = None
                    if args.profile and i == 0:
                        api_workers = _tree(procs[0].pid)[1:]
                        spy = subprocess.Popen(
                            ["py-spy", "record", "-f", "raw", "-o", args.profile, "-r", "200", "-d",
                             str(args.seconds), "-p", str(api_workers[0])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    with Usage(usage, r) as used:
                        service = single_round(service_port, args.seconds, f"S{i}", script)
                    if spy is not None:
                        spy.wait()
                    with Usage(bare_usage, r) as bare_used:
                        bare = single_round(bare_port, args.seconds, f"B{i}", script)
                    ratios.append(service / bare)
                    print(f"{i + 1:>5} {service:>15.0f} {bare:>12.0f} {ratios[-1]:>6.3f}")
                    print(f"      service: {used}\n      bare: {bare_used}")
                print(
                    f"single POST: median ratio service/bare {statistics.median(ratios):.3f} (target >= 0.5)"
                )
            if args.only in (None, "batch"):
                per_round = int(args.seconds * 60_000 / BATCH) + 20  # room for 60,000 results/s
                rates = []
                print(f"{'round':>5} {'results/s':>10}")
                for i in range(args.rounds):
                    bodies = batch_bodies(f"BATCH{i}", per_round)
                    with Usage(usage, r) as used:
                        rates.append(batch_round(service_port, args.seconds, args.threads, bodies))
                    print(f"{i + 1:>5} {rates[-1]:>10.0f}   {used}")
                    # Coalescing: every batch touched every patient; how many recomputes did each take
                    # once the worker has caught up?
                    touches = rates[-1] * (time.perf_counter() - used.t0) / PATIENTS
                    start = time.perf_counter()
                    while r.zcard(keys.DIRTY_PATIENTS) and time.perf_counter() - start < 120:
                        time.sleep(0.2)
                    done = used._recomputes() - used.recomputes0
                    print(
                        f"      coalescing: {touches:.0f} writes a patient, {done / PATIENTS:.2f} recomputes"
                        f" a patient (worker caught up {time.perf_counter() - start:.0f} s after the round)"
                    )
                print(f"batch POST: median {statistics.median(rates):.0f} results/s (target >= 30,000)")
        finally:
            for p in procs:
                p.terminate()
            worker.stop()
            server.stop()


if __name__ == "__main__":
    main()
