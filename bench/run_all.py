"""Every benchmark in one command, one after another (never two at once: each one measures against a
baseline in its own run, and two would share the two cores).

    python bench/run_all.py [--only read_path,write_path] [--out bench/results.txt]

Each benchmark runs with its defaults, the method and table of which are in bench/README.md; their
output is printed and, with --out, written to a file as well. Some need wrk (apt-get install wrk) and R
(r-base-core r-cran-cmprsk) for their comparisons; a missing tool fails that benchmark, not the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# In the order of bench/README.md: the read path first, the long whole-service runs last.
ALL = (
    "read_path", "write_path", "recompute", "memory", "pending_write", "durability", "freshness",
    "freshness_steady", "stats_bench", "cohort_refresh", "cohort_scale", "burst", "import_history",
    "capacity",
)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated names, e.g. read_path,recompute")
    parser.add_argument("--out", type=Path, help="also write everything printed to this file")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(ALL)
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(ALL)}")
    sink = args.out.open("w") if args.out else None
    failed = []
    for name in names:
        header = f"\n=== {name} ({time.strftime('%Y-%m-%d %H:%M:%S')}) ===\n"
        print(header, flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(BENCH / f"{name}.py")], capture_output=True, text=True)
        text = done.stdout + (done.stderr[-4000:] if done.returncode else "")
        footer = f"--- {name}: exit {done.returncode} after {time.perf_counter() - started:.0f} s\n"
        print(text + footer, flush=True)
        if sink:
            sink.write(header + text + footer)
            sink.flush()
        if done.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
