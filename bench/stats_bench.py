"""Time cumulative_incidence at 100,000 patients (weekly-grid ties) against lifelines'
AalenJohansenFitter and R's cmprsk::cuminc, in one run.

    python bench/stats_bench.py [--n 100000] [--repeat 5]

R is timed inside R (system.time around the cuminc call only, not the CSV read or Rscript start-up);
it is skipped when Rscript or cmprsk is missing. Best of --repeat runs for each.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.stats import DAYS_PER_MONTH, cumulative_incidence  # noqa: E402

HORIZONS = np.array([3, 6, 12, 24, 48]) * DAYS_PER_MONTH

R_TIMER = r"""
suppressMessages(library(cmprsk))
a <- commandArgs(TRUE); d <- read.csv(a[1]); k <- as.integer(a[2])
best <- Inf
for (i in seq_len(k)) {
  best <- min(best, system.time(ci <- cuminc(d$time_days, d$status, cencode = 0))[["elapsed"]])
}
tp <- timepoints(ci, as.numeric(strsplit(a[3], ",")[[1]]))
cat(sprintf("%.17g", c(best, tp$est["1 1", ])), "\n")
"""


def cohort(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t1, t2, tc = rng.exponential(900, n), rng.exponential(2000, n), rng.uniform(30, 2000, n)
    t = np.minimum(np.minimum(t1, t2), tc)
    status = np.select([t == t1, t == t2], [1, 2], 0)
    return np.maximum(np.ceil(t / 7), 1) * 7, status  # weekly visit grid: heavy ties


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return float(best)


def time_lifelines(t: np.ndarray, status: np.ndarray, repeat: int) -> float | None:
    try:
        from lifelines import AalenJohansenFitter
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that it jitters tied times
        return best_of(lambda: AalenJohansenFitter(seed=0).fit(t, status, event_of_interest=1), repeat)


def time_r(t: np.ndarray, status: np.ndarray, repeat: int) -> tuple[float, list[float]] | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "cohort.csv", Path(tmp) / "timer.R"
        np.savetxt(
            csv,
            np.column_stack([t, status]),
            fmt="%.17g",
            delimiter=",",
            header="time_days,status",
            comments="",
        )
        script.write_text(R_TIMER)
        horizons = ",".join(repr(float(h)) for h in HORIZONS)
        out = subprocess.run(
            ["Rscript", str(script), str(csv), str(repeat), horizons],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return None
    values = [float(v) for v in out.stdout.split()]
    return values[0], values[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    t, status = cohort(args.n)
    ours = cumulative_incidence(t, status, HORIZONS)
    rows = [
        (
            "shared.stats.cumulative_incidence",
            best_of(lambda: cumulative_incidence(t, status, HORIZONS), args.repeat),
        )
    ]
    rows.append(("lifelines AalenJohansenFitter", time_lifelines(t, status, max(1, args.repeat // 2))))
    r = time_r(t, status, args.repeat)
    rows.append(("R cmprsk::cuminc (in-R system.time)", None if r is None else r[0]))
    print(f"n = {args.n:,} patients, {np.unique(t).size} unique times (weekly grid), best of {args.repeat}")
    print(f"{'implementation':<40}{'seconds':>10}")
    for name, secs in rows:
        print(f"{name:<40}{'n/a' if secs is None else f'{secs:.4f}':>10}")
    if r is not None:
        diff = max(abs(a - b) for a, b in zip(ours.at_horizons.estimate, r[1], strict=True) if a is not None)
        print(f"max |ours - cuminc| at the horizons: {diff:.2e}")


if __name__ == "__main__":
    main()
