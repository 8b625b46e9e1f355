"""Issue 12: no single point of failure. A primary, two replicas and three sentinels (real processes on
loopback; the compose ha profile's shape), the real API under gunicorn and a real Celery worker, both
configured with REDIS_SENTINELS and WRITE_REPLICAS=1. A burst of result posts runs while the primary is
killed with SIGKILL, for good:

- every result answered 202 is in the new primary (WAIT: it was on the replica before its 202);
- meanwhile the API answers 202 or 503 problem+json, never 500, and no request hangs;
- without the old primary (never restarted), once the sentinels have made the other replica the new
  primary's, the API answers 202 again by itself (two replicas and WAIT 1: losing one node does not
  stop acknowledgements), and the worker, never restarted, brings every status and the cohort's
  statistics to what a clean computation from the stored data gives.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import date, timedelta

import orjson
import pytest
import redis

from shared import keys
from tests.conftest import FULL_KEY
from tests.procs import SentinelSet, Worker, start_gunicorn, stop_process, wait_for
from tests.support import http, result
from tests.test_faults import VOLATILE, clean_cohort_statistics, clean_documents, cohort_converged, converged

pytestmark = pytest.mark.slow

PATIENTS = [f"HA-{i:02d}" for i in range(8)]
# A request's worst case: a connect timeout (0.5 s), the write's read (1 s) and WAIT's timeout (1 s).
REQUEST_BOUND_S = 5.0


class Burst(threading.Thread):
    """One result per POST, round robin over the patients, until stopped; every answer recorded."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.stop = base, threading.Event()
        self.answers: list[tuple[int, float, dict]] = []  # (status, seconds, body)
        self.acknowledged: list[str] = []

    def post(self, item: dict) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.base + "/v1/assay-results", data=json.dumps(item).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {FULL_KEY}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_BOUND_S * 2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, {**json.loads(err.read()), "retry_after": err.headers.get("Retry-After")}
        except OSError as err:  # a hang or a dropped connection: recorded, and the test fails on it
            return 0, {"error": repr(err)}

    def run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 5000:
            pid = PATIENTS[n % len(PATIENTS)]
            day = date(2024, 1, 1) + timedelta(days=n // len(PATIENTS))
            item = result(
                pid, f"HA-R{n}", collected_at=day.isoformat(), bcr_abl1_copies=float((n * 37) % 211)
            )
            started = time.monotonic()
            status, body = self.post(item)
            self.answers.append((status, time.monotonic() - started, body))
            if status == 202:
                self.acknowledged.append(item["result_id"])
            else:
                time.sleep(0.05)  # a client honouring Retry-After would wait longer; keep the burst going
            n += 1

    def last(self, k: int) -> list[int]:
        return [s for s, _, _ in self.answers[-k:]]


def test_primary_killed_mid_burst_fails_over_and_converges(tmp_path):
    began = time.monotonic()
    ha = SentinelSet(tmp_path / "ha", replicas=2)
    env = {**ha.env, "WRITE_REPLICAS": "1", "WRITE_REPLICA_TIMEOUT_MS": "1000", "WEB_CONCURRENCY": "2"}
    api = worker = None
    try:
        ha.start()
        api, base = start_gunicorn(ha.primary.url, tmp_path / "gunicorn.log", env=env)
        worker = Worker(ha.primary.url, "ha", tmp_path, concurrency=2, env=env)
        worker.start()
        for pid in PATIENTS:
            status, body = http(
                "PUT", f"{base}/v1/patients/{pid}", {"cohorts": ["HA"], "enrolled_on": "2023-06-01"}
            )
            assert status == 201, body
        burst = Burst(base)
        burst.start()
        wait_for(lambda: len(burst.acknowledged) >= 60, 30, what="a burst under way")
        old = ha.primary
        old.kill9()
        killed = time.monotonic()
        promoted = ha.wait_failover(30)
        failover_s = time.monotonic() - killed
        # The old primary stays dead: the sentinels make the other replica the new primary's, which
        # confirms writes (WAIT 1), so the API acknowledges again without the lost node.
        wait_for(lambda: burst.last(5) == [202] * 5, 45, interval=0.1, what="the API to acknowledge again")
        assert old.proc.poll() is not None, "acknowledging again must not need the old primary"
        (other,) = [s for s in ha.replicas if s is not promoted]
        assert redis.Redis(port=other.port).role()[0] == b"slave"
        burst.stop.set()
        burst.join(REQUEST_BOUND_S * 3)
        assert not burst.is_alive()

        statuses = {s for s, _, _ in burst.answers}
        assert statuses <= {202, 503}, [a for a in burst.answers if a[0] not in (202, 503)][:3]
        slowest = max(t for _, t, _ in burst.answers)
        assert slowest < REQUEST_BOUND_S, f"a request took {slowest:.1f} s (failover took {failover_s:.1f} s)"
        refusals = [b for s, _, b in burst.answers if s == 503]
        assert refusals, "the switch should have refused some writes"
        for body in refusals:
            assert body["type"] in ("/problems/store-unavailable", "/problems/not-replicated"), body
            assert body["retry_after"], body

        r = redis.Redis(port=promoted.port)
        assert r.role()[0] == b"master"
        missing = [rid for rid in burst.acknowledged if not r.hexists(keys.RESULT_INDEX, rid)]
        assert not missing, (
            f"{len(missing)} of {len(burst.acknowledged)} acknowledged results lost: {missing[:5]}"
        )

        # The worker, never restarted, follows the failover: every status and the cohort converge.
        try:
            wait_for(lambda: converged(r, PATIENTS), 40, interval=0.2, what="statuses to converge")
            wait_for(lambda: cohort_converged(r, "HA"), 30, interval=0.2, what="the cohort to converge")
        except TimeoutError:
            raise AssertionError(worker.log.read_text()[-4000:]) from None
        for pid in PATIENTS:
            stored = {k: v for k, v in orjson.loads(r.get(keys.status(pid))).items() if k not in VOLATILE}
            assert stored == clean_documents(r, pid), pid
            assert stored["pending"] is False and stored["results_count"] == r.hlen(keys.results(pid))
        stats = {k: v for k, v in orjson.loads(r.get(keys.cohort_stats("HA"))).items() if k not in VOLATILE}
        assert stats == clean_cohort_statistics(r, "HA") and stats["pending"] is False
        # The API reads from the new primary too.
        status, body = http("GET", f"{base}/v1/patients/{PATIENTS[0]}/status")
        assert status == 200 and body["pending"] is False
        print(
            f"failover {failover_s:.1f} s; {len(burst.acknowledged)} acknowledged, {len(refusals)} refused; "
            f"slowest request {slowest:.2f} s; test {time.monotonic() - began:.1f} s"
        )
    finally:
        if worker:
            worker.stop()
        if api:
            stop_process(api)
        ha.stop()
