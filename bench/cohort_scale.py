"""Cohort refresh at 1k, 10k, 100k and 1M patients beside R's cmprsk::cuminc and lifelines, on the
same data, in one run (issue 11).

    python bench/cohort_scale.py [--sizes 1000,10000,100000,1000000] [--repeat 5] [--out FILE.json]

For each size: follow-up records (bench/cohort_refresh.py's generator: quarterly visits on a weekly
grid, a third reaching MR4.5, some deaths) are written to a redis-server the benchmark starts; the
whole refresh (the refresh_cohort task's calls: snapshot read, outcomes, both estimators, curve,
atomic store) is timed, best of --repeat; then the (time, status) arrays that refresh computed are
given to our estimator alone, to R's cmprsk::cuminc (timed inside R with system.time, CSV read and
start-up excluded) and to lifelines' AalenJohansenFitter (which jitters tied times: it is slower
and not exact). Target: the estimator <= 10 ms at 100,000 patients.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import cohort_refresh  # noqa: E402
import stats_bench  # noqa: E402

from shared import cohort_store, cohorts, store  # noqa: E402
from shared.stats import cumulative_incidence  # noqa: E402
from tests.procs import RedisServer  # noqa: E402


def one_size(r, n: int, repeat: int) -> dict:
    r.flushall()
    cohort_refresh.seed(r, cohort_refresh.records(n))
    # Fewer rounds where one round takes seconds; always at least two (the first warms up).
    rounds = max(2, repeat if n <= 100_000 else 2)
    refreshes = [cohort_refresh.refresh_once(r, pause_gc=True) for _ in range(rounds)]
    snap = cohort_store.load_cohort(r, cohort_refresh.COHORT)
    data = cohorts.cohort_data(snap.records, snap.definition)
    t, status = data.time_days, data.status
    ours = cumulative_incidence(t, status, stats_bench.HORIZONS)
    row = {
        "n": n,
        "evaluable": int(t.size),
        "unique_times": int(np.unique(t).size),
        "refresh_ms": min(x["total"] for x in refreshes) * 1000,
        "refresh_stages_ms": {k: min(x[k] for x in refreshes) * 1000 for k in refreshes[0]},
        "estimator_ms": stats_bench.best_of(
            lambda: cumulative_incidence(t, status, stats_bench.HORIZONS), repeat
        )
        * 1000,
    }
    got = stats_bench.time_r(t, status, repeat)
    row["cuminc_ms"] = None if got is None else got[0] * 1000
    if got is not None:
        row["max_abs_diff_to_cuminc"] = max(
            abs(a - b) for a, b in zip(ours.at_horizons.estimate, got[1], strict=True) if a is not None
        )
    lifelines = stats_bench.time_lifelines(t, status, 1 if n >= 100_000 else max(1, repeat // 2))
    row["lifelines_ms"] = None if lifelines is None else lifelines * 1000
    return row


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            r = store.connect(server.url, socket_timeout=120)
            rows = [one_size(r, n, args.repeat) for n in sizes]
        finally:
            server.stop()
    print("| patients | evaluable | unique times | whole refresh | our estimator | R cuminc | lifelines AJ |")
    print("|---|---|---|---|---|---|---|")
    for x in rows:
        print(
            f"| {x['n']:,} | {x['evaluable']:,} | {x['unique_times']} | {_ms(x['refresh_ms'])} ms "
            f"| {_ms(x['estimator_ms'])} ms | {_ms(x['cuminc_ms'])} ms | {_ms(x['lifelines_ms'])} ms |"
        )
    for x in rows:
        if "max_abs_diff_to_cuminc" in x:
            print(f"n = {x['n']:,}: max |ours - cuminc| at the horizons {x['max_abs_diff_to_cuminc']:.2e}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
