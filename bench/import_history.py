"""Years of history through `cml-import` (issue 11): P patients x R results each, shuffled, imported as
NDJSON through the API under gunicorn (the deployed config) with a real Celery worker (2 processes) and
a redis-server the benchmark starts; the import is interrupted once (SIGINT, as Ctrl-C, when the
checkpoint shows a third of the rows done) and run again, then the clock runs until every patient's
status is current (its status version equals its data version, nothing dirty) and the patients'
cohort statistics are current (their stored statistics' version equals the cohort's data version,
no cohort dirty).

Baseline in the same run: the same rows posted by a plain client (one thread, batches of 1,000, no
checkpoint, no interruption) to a fresh service, until every status is current: what the importer adds
over sending the batches itself.

    python bench/import_history.py [--patients 4000] [--results 50] [--no-baseline]

The issue's large run, 1,000,000 results for 20,000 patients: `--patients 20000 --results 50`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from shared import keys  # noqa: E402
from tests.procs import RedisServer, Worker, start_gunicorn, stop_process, wait_for  # noqa: E402

KEY = "bench-import-key"
COHORT = "HISTORY"


def history(patients: int, per_patient: int, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """Registrations and results: quarterly samples from 2014, falling from 10% to deep response."""
    rng = random.Random(seed)
    regs, rows = [], []
    for p in range(patients):
        pid = f"H-{p:06d}"
        regs.append({"patient_id": pid, "cohorts": [COHORT], "enrolled_on": "2014-01-06",
                     "tki": "imatinib", "tki_started_on": "2014-01-02", "dose_mg": 400})  # fmt: skip
        for i in range(per_patient):
            day = date(2014, 1, 6) + timedelta(days=91 * i + rng.randint(0, 20))
            copies = max(0, round(10_000 * 0.6**i * rng.uniform(0.5, 1.5)))
            rows.append({"result_id": f"{pid}-{i:03d}", "patient_id": pid, "collected_at": day.isoformat(),
                         "control_gene": "ABL1", "control_copies": rng.randint(30_000, 150_000),
                         "bcr_abl1_copies": copies})  # fmt: skip
    rng.shuffle(rows)
    return regs, rows


class Service:
    def __init__(self, tmp: Path) -> None:
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        os.environ["RATE_LIMIT"] = "10000000/minute"
        os.environ["API_KEYS"] = json.dumps({KEY: ["results:write", "status:read", "cohorts:write"]})
        self.worker = Worker(self.redis.url, "import", tmp, concurrency=2)
        self.worker.start()
        self.api, self.base = start_gunicorn(self.redis.url, tmp / "api.log")
        self.r = redis.Redis.from_url(self.redis.url)

    def current(self, pids: list[str]) -> bool:
        if self.r.zcard(keys.DIRTY_PATIENTS) or self.r.zcard(keys.DIRTY_COHORTS):
            return False
        if self.r.get(keys.cohort_version(COHORT)) != self.r.get(keys.cohort_stats_version(COHORT)):
            return False
        pipe = self.r.pipeline(transaction=False)
        for pid in pids:
            pipe.get(keys.version(pid))
            pipe.get(keys.status_version(pid))
        got = pipe.execute()
        return all(v == sv for v, sv in zip(got[::2], got[1::2], strict=True))

    def stop(self) -> None:
        stop_process(self.api)
        self.worker.stop()
        self.redis.stop()


def _importer(base: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "services.importer", "--url", base, "--key", KEY, "--json", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # SIGINT back to its default in the child: a shell ignores it in background jobs (`bench ... &`) and
    # the child would inherit that, so the Ctrl-C below would interrupt nothing (it did on 2026-12-01).
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _rows_done(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text()).get("rows", 0))
    except (OSError, ValueError):
        return 0


def with_importer(tmp: Path, regs: list[dict], rows: list[dict]) -> dict:
    svc = Service(tmp)
    try:
        patients, results = tmp / "patients.ndjson", tmp / "results.ndjson"
        patients.write_text("".join(json.dumps(x) + "\n" for x in regs))
        results.write_text("".join(json.dumps(x) + "\n" for x in rows))
        registering = time.perf_counter()
        assert _importer(svc.base, "--kind", "patients", str(patients)).wait() == 0
        pids = [x["patient_id"] for x in regs]
        wait_for(lambda: svc.current(pids), 1800, interval=0.2, what="registrations")
        registered_s = time.perf_counter() - registering
        checkpoint = tmp / "results.ckpt"
        start = time.perf_counter()
        first = _importer(svc.base, "--kind", "results", "--checkpoint", str(checkpoint), str(results))
        wait_for(lambda: _rows_done(checkpoint) >= len(rows) // 3, 600, interval=0.05, what="progress")
        first.send_signal(signal.SIGINT)  # Ctrl-C
        first.wait(600)  # it finishes the batches in flight and writes its checkpoint
        interrupted_at = _rows_done(checkpoint)
        assert interrupted_at < len(rows), "the importer was not interrupted"
        second = _importer(svc.base, "--kind", "results", "--checkpoint", str(checkpoint), str(results))
        out, _ = second.communicate(timeout=1800)
        imported = time.perf_counter() - start
        wait_for(lambda: svc.current(pids), 1800, interval=0.2, what="statuses")
        done = time.perf_counter() - start
        stored = sum(svc.r.hlen(keys.results(pid)) for pid in pids)
        assert svc.r.get(keys.cohort_stats_version(COHORT)) is not None, "no cohort statistics"
        return {"imported_s": imported, "current_s": done, "interrupted_at": interrupted_at,
                "registered_s": registered_s,
                "stored": stored, "report": json.loads(out or b"{}")}  # fmt: skip
    finally:
        svc.stop()


def with_plain_client(tmp: Path, regs: list[dict], rows: list[dict]) -> dict:
    svc = Service(tmp)
    try:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {KEY}"
        for reg in regs:
            body = {k: v for k, v in reg.items() if k != "patient_id"}
            assert s.put(f"{svc.base}/v1/patients/{reg['patient_id']}", json=body).status_code in (200, 201)
        pids = [x["patient_id"] for x in regs]
        wait_for(lambda: svc.current(pids), 1800, interval=0.2, what="registrations")
        start = time.perf_counter()
        for i in range(0, len(rows), 1000):
            resp = s.post(f"{svc.base}/v1/assay-results", json=rows[i : i + 1000])
            assert resp.status_code == 202, resp.text[:300]
        posted = time.perf_counter() - start
        wait_for(lambda: svc.current(pids), 1800, interval=0.2, what="statuses")
        return {"imported_s": posted, "current_s": time.perf_counter() - start}
    finally:
        svc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--results", type=int, default=50)
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain client's run")
    args = parser.parse_args()
    regs, rows = history(args.patients, args.results)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ours = with_importer(Path(a), regs, rows)
        plain = ours if args.no_baseline else with_plain_client(Path(b), regs, rows)
    n = len(rows)
    assert ours["stored"] == n, ours
    print(f"{n:,} results for {args.patients:,} patients, shuffled; cml-import interrupted at row "
          f"{ours['interrupted_at']:,}")  # fmt: skip
    print("| client | acknowledged (s) | rows/s | every status current (s) | ratio to plain client |")
    print("|---|---|---|---|---|")
    runs = [("cml-import, interrupted once", ours)]
    runs += [] if args.no_baseline else [("plain client, batches of 1,000", plain)]
    for name, got in runs:
        ratio = got["current_s"] / plain["current_s"]
        print(f"| {name} | {got['imported_s']:.1f} | {n / got['imported_s']:,.0f} | {got['current_s']:.1f} "
              f"| {ratio:.2f} |")  # fmt: skip
    print("report:", json.dumps(ours["report"].get("counts", ours["report"])))
    print(f"registrations (before the clock): {ours['registered_s']:.1f} s until every status was current")


if __name__ == "__main__":
    main()
