"""Writes the synthetic cohorts in this folder (deterministic; run from the repository root).

    python tests/stats/data/make_cohorts.py
    for f in tests/stats/data/*.csv; do
        Rscript tests/reference/reference.R "$f" "${f%.csv}.json"          # where reference.R copes
        Rscript tests/stats/data/reference_extra.R "$f" "${f%.csv}.extra.json"
    done

The JSON files are committed: the tests never call R.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _write(name: str, group: list[str], time_days: list[float], status: list[int]) -> None:
    with (HERE / f"{name}.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["patient_id", "group", "time_days", "status"])
        for i, (g, t, s) in enumerate(zip(group, time_days, status, strict=True)):
            w.writerow([f"{g}{i:05d}", g, int(t), int(s)])


def heavy_ties() -> None:
    """1,000 patients in three arms, every time on a weekly visit grid (so endpoint, competing and
    censoring times tie heavily with each other), status 0/1/2."""
    rng = np.random.default_rng(20240611)
    n = 1000
    group = rng.choice(["A", "B", "C"], size=n, p=[0.4, 0.35, 0.25])
    rate1 = np.select([group == "A", group == "B"], [1 / 500, 1 / 700], 1 / 900)
    t1 = rng.exponential(1 / rate1)
    t2 = rng.exponential(1400.0, size=n)
    tc = rng.uniform(60, 1800, size=n)
    t = np.minimum(np.minimum(t1, t2), tc)
    status = np.select([t == t1, t == t2], [1, 2], 0)
    weeks = np.maximum(np.ceil(t / 7.0), 1)  # the visit at which the status was seen
    _write("heavy_ties", list(group), list(weeks * 7), list(status))


def edge_cases() -> None:
    # Nobody reaches any event: KM and CIF stay at 0, the tests are undefined.
    _write("edge_no_events", ["A"] * 3 + ["B"] * 3, [30, 120, 400, 60, 200, 500], [0] * 6)
    # Only competing events: the CIF of cause 1 is 0 while 1 - KM (competing censored) is 0 too.
    _write("edge_only_competing", ["A"] * 4, [50, 100, 150, 600], [2, 2, 0, 0])
    # Every event on one day, with ties between causes, and censoring on the same day.
    _write(
        "edge_one_time",
        ["A"] * 10,
        [60] * 8 + [400, 400],
        [1, 1, 1, 1, 1, 2, 2, 0, 0, 0],
    )
    # Everyone fails on the same day: S reaches 0, the CI is undefined there.
    _write("edge_all_fail", ["A"] * 5, [60] * 5, [1, 1, 1, 2, 2])
    _write("edge_single_event", ["A"], [50], [1])
    _write("edge_single_censored", ["A"], [500], [0])
    # Two arms, B without any competing event.
    _write(
        "edge_no_competing_arm",
        ["A"] * 8 + ["B"] * 8,
        [20, 45, 90, 90, 200, 380, 500, 800, 30, 30, 100, 210, 210, 365, 700, 900],
        [1, 2, 1, 2, 0, 1, 2, 0, 1, 0, 1, 1, 0, 0, 1, 0],
    )

    # S is exactly 0.5 on [30, 40): print.survfit's median is the midpoint, 35.
    _write("edge_median_midpoint", ["A"] * 6, [10, 20, 30, 40, 50, 60], [1, 1, 1, 1, 0, 0])


def actim_months() -> tuple[list[float], list[int]]:
    """The ACTIM paper's 24 patients: 13 reach the endpoint at distinct times before month 12
    (months 1-6, 8-11, and 7.5, 8.5, 9.5), 1 is censored at month 7, 10 are still followed
    without event at month 13. 1 - KM at 12 months: 56% (95% CI 37-76%)."""
    events = [1, 2, 3, 4, 5, 6, 7.5, 8, 8.5, 9, 9.5, 10, 11]
    months = events + [7] + [13] * 10
    status = [1] * len(events) + [0] * 11
    return months, status


def actim() -> None:
    months, status = actim_months()
    days = [round(m * 365.25 / 12) for m in months]
    _write("actim", ["A"] * len(days), days, status)


if __name__ == "__main__":
    heavy_ties()
    edge_cases()
    actim()
