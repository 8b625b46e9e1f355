"""AOF fsync policy and write throughput: ``appendfsync everysec`` against ``always``
(the setting in docker-compose.yml), same run, alternating rounds, through the same atomic write the API uses.

    python bench/durability.py [--writes 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import store  # noqa: E402
from tests.procs import RedisServer  # noqa: E402


def one_result(i: int) -> dict:
    return {
        "result_id": f"D-{i}",
        "patient_id": "DUR-1",
        "collected_at": "2024-01-01",
        "control_gene": "ABL1",
        "control_copies": 100000.0,
        "bcr_abl1_copies": float(i % 50),
        "is_percent": None,
        "conversion_factor": 1.0,
        "status": "final",
        "lab": None,
        "assay": None,
        "transcript": None,
    }


def writes_per_second(r, start: int, n: int) -> float:
    t = time.perf_counter()
    for i in range(start, start + n):
        store.store_results(r, [one_result(i)], {"who": "bench"})
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        servers = {p: RedisServer(Path(tmp) / p, appendfsync=p) for p in ("everysec", "always")}
        clients = {}
        for policy, server in servers.items():
            server.start()
            clients[policy] = store.connect(server.url)
            store.register_patient(
                clients[policy], "DUR-1", {"patient_id": "DUR-1", "cohorts": []}, {"who": "bench"}
            )
        rates: dict[str, list[float]] = {p: [] for p in servers}
        try:
            for k in range(args.rounds):
                for policy in servers:
                    rates[policy].append(writes_per_second(clients[policy], k * args.writes, args.writes))
        finally:
            for server in servers.values():
                server.stop()
    every, always = statistics.median(rates["everysec"]), statistics.median(rates["always"])
    print(f"single-result atomic writes, {args.writes} per round, {args.rounds} rounds (median writes/s)")
    print(f"  appendfsync everysec  {every:8.0f}")
    print(f"  appendfsync always    {always:8.0f}   ({always / every:.2f} of everysec)")


if __name__ == "__main__":
    main()
