"""What one Redis primary holds and serves (issue 12, docs/scaling.md), measured with the service's own
store functions against redis-servers this benchmark starts (AOF, everysec as tests/procs.py, or
``--appendfsync always`` as deployed), no HTTP:

- memory: N patients x M results loaded by ``bench/memory.py``'s ``load`` (registrations, a first status
  each, results through ``store.store_results`` with the API's audit entry, every patient recomputed
  with the worker's calls), at each N of ``--patients``, on a fresh redis-server each: ``INFO memory``
  used_memory minus the empty server's, per result and per patient, and the fixed cost of a patient
  (registration, status, timeline envelope, indexes, cohort record: everything but the per-result bytes);
- status and timeline reads: ``store.read_status`` (one GET) one at a time and pipelined by 100, and
  ``store.read_timeline`` (one script), on the first scale's patients; reads/s from one client and Redis
  CPU (``INFO cpu``, main thread) per 1,000 reads, i.e. the server's ceiling on one core;
- writes: ``shared.intake.submit_results`` as the API calls it (``follow_in_script``: the task records and
  messages in the write's own script), batches of 1,000 results for 1,000 distinct registered patients,
  validated before the clock; results/s and Redis CPU per 1,000 results. Before each batch the patients'
  enqueued marks are cleared and the queue emptied, as if a worker had claimed them all, so that every
  batch pays the whole follow-up (records and messages), the worst case of a steady feed;
- replication: a replica (``--replicaof``) of the write server, then alternating rounds of the same
  batches without and with ``WAIT 1 1000`` after each (what ``WRITE_REPLICAS=1`` adds before a 202), the
  ratio in the same run; and the replication lag: the time from a SET on the primary until a GET on the
  replica sees it, idle and under a continuous batch load from another process (p50/p99).

    python bench/capacity.py [--patients 1000,4000] [--results-per-patient 40] [--rounds 3]
                             [--batches 8] [--appendfsync everysec|always] [--memory-only]
                             [--out capacity.json]

On 2 cores shared with other sessions (load average 5 to 11, 2026-12-01): 83-164 s with the defaults,
130-156 s with ``--appendfsync always``, 105-141 s with ``--patients 10000 --memory-only``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import memory  # noqa: E402
from recompute import result  # noqa: E402

from shared import documents, intake, keys, store, work  # noqa: E402
from shared.config import load_settings  # noqa: E402
from shared.queue import PATIENT_QUEUE, make_celery  # noqa: E402
from tests.procs import RedisServer, free_port, stop_process, wait_for  # noqa: E402

BATCH = 1000
WRITE_PREFIX = "W"


def used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def main_cpu(r) -> float:
    """Seconds of CPU of redis-server's main thread (the one that runs every command and script)."""
    cpu = r.info("cpu")
    return float(cpu["used_cpu_sys_main_thread"]) + float(cpu["used_cpu_user_main_thread"])


def process_cpu(r) -> float:
    cpu = r.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- memory ------------------------------------------------------------------------------------


def measure_memory(server: RedisServer, patients: int, per_patient: int) -> dict:
    r = store.connect(server.url)
    empty = used_memory(r)
    started = time.perf_counter()
    got = memory.load(server.url, patients, per_patient)  # the loading code of bench/memory.py
    loaded_s = time.perf_counter() - started
    info = r.info("memory")
    total = int(info["used_memory"]) - empty
    n = patients * per_patient
    per_result = got["per_result"]  # used_memory growth from the results and the recomputes after them
    fixed = (total - per_result * n) / patients  # registration, first status, indexes: before any result
    return {
        "patients": patients,
        "results_per_patient": per_patient,
        "results": n,
        "used_memory_empty": empty,
        "used_memory_loaded": total,
        "bytes_per_result": per_result,
        "bytes_per_patient_all_included": total / patients,
        "fixed_bytes_per_patient": fixed,
        "by_key_kind_per_result": got["kinds"],
        "fragmentation_ratio": float(info["mem_fragmentation_ratio"]),
        "aof_bytes": int(r.info("persistence").get("aof_current_size", 0)),
        "load_s": loaded_s,
    }


# --- reads -------------------------------------------------------------------------------------


def measure_reads(url: str, patients: int, seconds: float) -> dict:
    r = store.connect(url)
    pids = [f"B-{i:05d}" for i in range(patients)]
    out = {}

    def timed(name: str, step, per_step: int) -> None:
        count, i = 0, 0
        cpu0, wall0 = main_cpu(r), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            step(i)
            i += per_step
            count += per_step
        wall, cpu = time.perf_counter() - wall0, main_cpu(r) - cpu0
        out[name] = {"reads": count, "reads_per_s": count / wall, "redis_cpu_ms_per_1000": cpu / count * 1e6}

    def single(i: int) -> None:
        assert store.read_status(r, pids[i % patients]) is not None

    def pipelined(i: int) -> None:
        pipe = r.pipeline(transaction=False)
        for j in range(i, i + 100):
            pipe.get(keys.status(pids[j % patients]))
        pipe.execute()

    def timeline(i: int) -> None:
        assert store.read_timeline(r, pids[i % patients]) is not None

    timed("status_get", single, 1)
    timed("status_get_pipelined_100", pipelined, 100)
    timed("timeline_read", timeline, 1)
    return out


# --- writes ------------------------------------------------------------------------------------


def celery_for(url: str):
    os.environ["REDIS_URL"] = url
    os.environ.pop("CELERY_BROKER_URL", None)
    return make_celery(load_settings(), "cml-capacity", request_path=True)


def register(url: str, patients: int) -> list[str]:
    r = store.connect(url)
    pids = [f"{WRITE_PREFIX}-{i:05d}" for i in range(patients)]
    for pid in pids:
        reg = {"patient_id": pid, "cohorts": ["BENCH"], "enrolled_on": "2015-01-05", "tki": "imatinib",
               "tki_started_on": "2014-12-01", "dose_mg": 400.0}  # fmt: skip
        store.register_patient(r, pid, reg, {"who": "bench"})
    return pids


def batches(pids: list[str], first: int, count: int) -> list[list[dict]]:
    """``count`` validated batches, one new result per patient each (result numbers from ``first``)."""
    return [intake.validate_results([result(pid, first + b) for pid in pids]) for b in range(count)]


class Writer:
    """Batches through ``intake.submit_results`` as the API makes them; wall, CPU and script time."""

    def __init__(self, url: str):
        self.r = store.connect(url)
        self.celery = celery_for(url)

    def reset_follow_up(self) -> None:
        # As if a worker had claimed every patient: the next batch records and enqueues them all again.
        self.r.delete(keys.ENQUEUED_PATIENTS, PATIENT_QUEUE)

    def run(self, docs_batches: list[list[dict]], wait: bool = False) -> dict:
        wall = cpu = 0.0
        waits = []
        n = 0
        for docs in docs_batches:
            self.reset_follow_up()
            audit = intake.audit_record(
                "bench", "POST /v1/assay-results", result_ids=[d["result_id"] for d in docs]
            )
            cpu0 = main_cpu(self.r)
            t = time.perf_counter()
            policy = intake.WritePolicy(86400, follow_in_script=True)
            intake.submit_results(self.r, self.celery, docs, audit, policy)
            if wait:
                w = time.perf_counter()
                acked = self.r.wait(1, 1000)
                waits.append((time.perf_counter() - w) * 1000)
                if acked < 1:
                    raise RuntimeError("the replica did not acknowledge within 1 s")
            wall += time.perf_counter() - t
            cpu += main_cpu(self.r) - cpu0
            n += len(docs)
        doc = {"results": n, "results_per_s": n / wall, "redis_cpu_ms_per_1000": cpu / n * 1e6}
        if waits:
            doc["wait_ms_p50"], doc["wait_ms_p99"] = pct(waits, 0.5), pct(waits, 0.99)
        return doc


def measure_recompute(r, pids: list[str]) -> dict:
    """Every patient recomputed once with the worker's calls (services/worker/patients.py ``_recompute``:
    ``work.claim_patient``, ``documents.patient_documents``, ``store.commit_status``): the Redis
    main-thread CPU a recompute costs, and its wall time in this client (a first sight of the results:
    every one parsed and scored, as a fresh worker)."""
    cpu0, wall0 = main_cpu(r), time.perf_counter()
    done = 0
    for pid in pids:
        dirty, data = work.claim_patient(r, pid)
        if dirty and data is not None:
            status, timeline, record = documents.patient_documents(data)
            store.commit_status(r, data, status, timeline, record)
            done += 1
    wall, cpu = time.perf_counter() - wall0, main_cpu(r) - cpu0
    results = len(r.hkeys(keys.results(pids[0])))
    return {"patients": done, "results_per_patient": results, "redis_cpu_ms_per_recompute": cpu / done * 1e3,
            "wall_ms_per_recompute": wall / done * 1e3}  # fmt: skip


def script_ms(r) -> float | None:
    stats = r.info("commandstats").get("cmdstat_evalsha")
    return stats["usec_per_call"] / 1000 if stats else None


# --- replication -------------------------------------------------------------------------------


def start_replica(workdir: Path, primary_port: int, appendfsync: str) -> tuple[subprocess.Popen, int]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    cmd = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
        "--appendonly", "yes", "--appendfsync", appendfsync, "--logfile", str(workdir / "redis.log"),
        "--replicaof", "127.0.0.1", str(primary_port),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    replica = store.connect(f"redis://127.0.0.1:{port}/0")

    def synced() -> bool:
        try:
            info = replica.info("replication")
        except Exception:  # noqa: BLE001 - still starting
            return False
        if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
            return False
        # A replica with AOF rewrites its file after the full sync (a fork): not during the rounds.
        aof = replica.info("persistence")
        return not (aof.get("aof_rewrite_in_progress") or aof.get("aof_rewrite_scheduled"))

    wait_for(synced, 60, 0.1, "the replica to sync")
    return proc, port


def background_writes(url: str, pids: list[str], first: int, stop) -> None:
    """Another process: batches back to back until ``stop`` is set (the load the lag is measured under)."""
    writer = Writer(url)
    b = first
    while not stop.is_set():
        writer.run(batches(pids, b, 1))
        b += 1


def probe_lag(primary, replica, probes: int) -> dict:
    """Time from a SET acknowledged by the primary until a GET on the replica returns it."""
    lags = []
    for i in range(probes):
        value = f"{os.getpid()}-{i}-{time.perf_counter_ns()}"
        primary.set("cml:bench:probe", value)
        t = time.perf_counter()
        while replica.get("cml:bench:probe") != value.encode():
            if time.perf_counter() - t > 5:
                raise RuntimeError("the replica did not see a write within 5 s")
        lags.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    return {"probes": probes, "p50_ms": pct(lags, 0.5), "p99_ms": pct(lags, 0.99), "max_ms": max(lags)}


# --- the run -----------------------------------------------------------------------------------


def run(args, tmp: Path) -> dict:
    out: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        "appendfsync": args.appendfsync,
    }
    out["load_average_before"] = os.getloadavg()[0]
    out["memory"] = []
    for i, patients in enumerate(args.patients):
        server = RedisServer(tmp / f"mem-{patients}", args.appendfsync)
        server.start()
        try:
            out["memory"].append(measure_memory(server, patients, args.results_per_patient))
            if i == 0 and not args.memory_only:
                out["reads"] = measure_reads(server.url, patients, args.read_seconds)
                out["reads"]["patients"], out["reads"]["results_per_patient"] = (
                    patients,
                    args.results_per_patient,
                )
        finally:
            server.stop()

    if args.memory_only:
        out["load_average_after"] = os.getloadavg()[0]
        return out
    server = RedisServer(tmp / "write", args.appendfsync)
    server.start()
    replica_proc = None
    try:
        pids = register(server.url, BATCH)
        writer = Writer(server.url)
        writer.run(batches(pids, 0, 2))  # warm: the scripts loaded, the first statuses pending
        rounds, b = [], 2
        for _ in range(args.rounds):
            docs = batches(pids, b, args.batches)
            b += args.batches
            rounds.append(writer.run(docs))
        out["writes"] = {
            "batch": BATCH,
            "rounds": rounds,
            "results_per_s": statistics.median(x["results_per_s"] for x in rounds),
            "redis_cpu_ms_per_1000": statistics.median(x["redis_cpu_ms_per_1000"] for x in rounds),
            "script_ms_per_batch": script_ms(writer.r),
        }
        out["recompute"] = measure_recompute(writer.r, pids)

        replica_proc, replica_port = start_replica(tmp / "replica", server.port, args.appendfsync)
        replica = store.connect(f"redis://127.0.0.1:{replica_port}/0")
        plain, waited = [], []
        for k in range(args.rounds):
            order = ((False, plain), (True, waited))
            for wait, into in order if k % 2 == 0 else order[::-1]:  # alternating which goes first
                docs = batches(pids, b, args.batches)
                b += args.batches
                into.append(writer.run(docs, wait=wait))
        ratios = [w["results_per_s"] / p["results_per_s"] for p, w in zip(plain, waited, strict=True)]
        idle = probe_lag(writer.r, replica, args.probes)
        stop = multiprocessing.Event()
        load = multiprocessing.Process(target=background_writes, args=(server.url, pids, b + 10_000, stop))
        load.start()
        time.sleep(1.0)
        try:
            loaded = probe_lag(writer.r, replica, args.probes)
        finally:
            stop.set()
            load.join(30)
        out["replication"] = {
            "plain": plain,
            "wait_1": waited,
            "plain_results_per_s": statistics.median(x["results_per_s"] for x in plain),
            "wait_results_per_s": statistics.median(x["results_per_s"] for x in waited),
            "wait_over_plain": statistics.median(ratios),
            "wait_over_plain_rounds": ratios,
            "wait_ms_p50": statistics.median(x["wait_ms_p50"] for x in waited),
            "wait_ms_p99": max(x["wait_ms_p99"] for x in waited),
            "lag_idle": idle,
            "lag_under_writes": loaded,
        }
    finally:
        if replica_proc:
            stop_process(replica_proc)
        server.stop()
    out["load_average_after"] = os.getloadavg()[0]
    return out


def table(doc: dict) -> str:
    rows = ["| measure | value |", "|---|---|"]
    for m in doc["memory"]:
        scale = f"{m['patients']:,} x {m['results_per_patient']}"
        rows += [
            f"| memory, {scale}: bytes per result | {m['bytes_per_result']:.0f} |",
            f"| memory, {scale}: fixed bytes per patient | {m['fixed_bytes_per_patient']:.0f} |",
            f"| memory, {scale}: bytes per patient, all in | {m['bytes_per_patient_all_included']:.0f} |",
            f"| memory, {scale}: fragmentation ratio / AOF bytes per result | "
            f"{m['fragmentation_ratio']:.2f} / {m['aof_bytes'] / m['results']:.0f} |",
        ]
    if "reads" not in doc:
        return "\n".join(rows)
    rd = doc["reads"]
    for name in ("status_get", "status_get_pipelined_100", "timeline_read"):
        x = rd[name]
        rows.append(
            f"| {name}: reads/s one client / Redis CPU ms per 1,000 | "
            f"{x['reads_per_s']:,.0f} / {x['redis_cpu_ms_per_1000']:.1f} |"
        )
    w = doc["writes"]
    rows += [
        f"| writes, batches of 1,000: results/s (rounds) | {w['results_per_s']:,.0f} "
        f"({', '.join(format(x['results_per_s'], ',.0f') for x in w['rounds'])}) |",
        f"| writes: Redis main-thread CPU ms per 1,000 results | {w['redis_cpu_ms_per_1000']:.1f} |",
        f"| writes: script time per batch (commandstats) | {w['script_ms_per_batch']:.1f} ms |",
    ]
    rc = doc["recompute"]
    rows.append(
        f"| recompute ({rc['results_per_patient']} results, cold): Redis CPU / wall per patient | "
        f"{rc['redis_cpu_ms_per_recompute']:.2f} / {rc['wall_ms_per_recompute']:.2f} ms |"
    )
    rp = doc["replication"]
    loaded = rp["lag_under_writes"]
    rows += [
        f"| with a replica: results/s without / with WAIT 1 | {rp['plain_results_per_s']:,.0f} / "
        f"{rp['wait_results_per_s']:,.0f} |",
        f"| WAIT 1 / none, same run (rounds) | {rp['wait_over_plain']:.3f} "
        f"({', '.join(format(x, '.3f') for x in rp['wait_over_plain_rounds'])}) |",
        f"| WAIT 1 after a batch: p50 / p99 | {rp['wait_ms_p50']:.2f} / {rp['wait_ms_p99']:.2f} ms |",
        f"| replica sees a write, idle: p50 / p99 / max | {rp['lag_idle']['p50_ms']:.2f} / "
        f"{rp['lag_idle']['p99_ms']:.2f} / {rp['lag_idle']['max_ms']:.2f} ms |",
        f"| replica sees a write, under batch writes: p50 / p99 / max | {loaded['p50_ms']:.2f} / "
        f"{loaded['p99_ms']:.2f} / {loaded['max_ms']:.2f} ms |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", default="1000,4000", help="comma-separated scales, e.g. 1000,10000")
    parser.add_argument("--results-per-patient", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=8, help="batches of 1,000 per write round")
    parser.add_argument("--read-seconds", type=float, default=3.0)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--appendfsync", default="everysec", choices=("everysec", "always"),
                        help="every server's AOF fsync policy (docker-compose deploys always)")  # fmt: skip
    parser.add_argument("--memory-only", action="store_true", help="only the memory scales")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    args.patients = [int(x) for x in args.patients.split(",") if x]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        doc = run(args, Path(tmp))
    doc["seconds"] = time.perf_counter() - started
    print(table(doc))
    print(f"\n{doc['date']}, {doc['machine']}, appendfsync {doc['appendfsync']}, "
          f"load average {doc['load_average_before']:.1f} before, "
          f"{doc['load_average_after']:.1f} after, {doc['seconds']:.0f} s")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
