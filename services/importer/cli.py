"""cml-import: registrations, events and results from a file, through the API, resumable.

Exit status: 0 everything imported (or valid, with --dry-run); 1 some rows rejected (see the rejects file);
2 a usage error, an unreadable file, a refused key or an API that cannot be reached (the checkpoint is
kept: re-run the same command to continue); 130 interrupted (Ctrl-C; likewise resumable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from services.importer import checkpoint as cp
from services.importer.client import Api, Refused, Unreachable
from services.importer.progress import Progress
from services.importer.readers import (
    FORMATS,
    KINDS,
    FormatError,
    Position,
    Row,
    detect_format,
    detect_kind,
    rows,
)
from services.importer.senders import (
    OUTCOMES,
    Outcome,
    ServerFailed,
    batches,
    send_events,
    send_fhir,
    send_hl7,
    send_patients,
    send_results,
)

EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cml-import",
        description="Import patients (registrations), events or results from CSV, NDJSON, HL7 v2 or FHIR "
        "NDJSON through the CML API, in batches, resumably.",
        epilog="Exit status: 0 all imported, 1 rows rejected, 2 usage error or API unreachable, "
        "130 interrupted.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--url", default=os.environ.get("CML_URL"), help="API base URL (default: $CML_URL)")
    p.add_argument("--key", default=os.environ.get("CML_API_KEY"), help="API key (default: $CML_API_KEY)")
    p.add_argument("--kind", choices=KINDS, help="what the file holds (default: guessed from its columns)")
    p.add_argument("--format", choices=FORMATS, help="file format (default: guessed from its content)")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per request (default 1000: MAX_BATCH)")
    p.add_argument("--parallel", type=int, default=8, help="patient registrations sent at once (default 8)")
    p.add_argument("--checkpoint", help="checkpoint file (default: FILE.cml-import.json)")
    p.add_argument(
        "--rejects", help="rejected rows (default: FILE.rejects.ndjson; FILE.dry-run.rejects.ndjson)"
    )
    p.add_argument("--restart", action="store_true", help="ignore the checkpoint: start from the first row")
    p.add_argument("--dry-run", action="store_true", help="validate every row locally; send nothing")
    p.add_argument("--retries", type=int, default=6, help="retries of a request on 429/503/network errors")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")
    p.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines off a TTY"
    )
    return p


class Usage(Exception):
    pass


def _counts_line(counts: dict[str, int]) -> list[tuple[str, int]]:
    always = ("created", "unchanged", "replaced")
    keys = [k for k in (*OUTCOMES, "valid") if counts.get(k) or k in always]
    return [(k, counts.get(k, 0)) for k in keys] + [("rejected", counts.get("rejected", 0))]


def _report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=1))
        return
    state = "dry run" if report["dry_run"] else ("complete" if report["complete"] else "NOT complete")
    print(f"cml-import: {report['file']} ({report['kind']}, {report['format']}): {state}")
    print(f"  {'rows':<10} {report['rows']:>10,}")
    for name, n in _counts_line(report["counts"]):
        print(f"  {name:<10} {n:>10,}")
    if report["counts"].get("rejected"):
        print(f"  rejected rows and their reasons: {report['rejects']}")
    rate = report["rows_per_s"]
    print(f"  this run: {report['rows_this_run']:,} rows in {report['elapsed_s']:.1f} s ({rate:,.0f} rows/s)")
    if not report["complete"] and not report["dry_run"]:
        print(f"  re-run the same command to continue (checkpoint {report['checkpoint']})")


def _reject_entry(row: Row, outcome: Outcome) -> dict:
    return {
        "row": row.number,
        "line": row.line,
        "offset": row.start,
        "record": row.record,
        "status": outcome.http,
        "reasons": outcome.reasons,
    }


def _sender(kind: str, fmt: str, api: Api, key_base: str, pool: ThreadPoolExecutor) -> Callable:
    if fmt == "hl7":
        return lambda batch: send_hl7(api, batch)
    if fmt == "fhir":
        return lambda batch: send_fhir(api, batch)
    if kind == "patients":
        return lambda batch: send_patients(api, batch, pool)
    send = send_results if kind == "results" else send_events
    return lambda batch: send(api, batch, f"{key_base}-{batch[0].start}")


def run(args: argparse.Namespace) -> int:
    path = args.file
    if not os.path.isfile(path):
        raise Usage(f"no file {path}")
    if args.batch_size < 1 or args.parallel < 1 or args.retries < 0:
        raise Usage("--batch-size and --parallel must be at least 1, --retries at least 0")
    fmt = args.format or detect_format(path)
    kind = args.kind or detect_kind(path, fmt)
    if fmt in ("hl7", "fhir") and kind != "results":
        raise Usage(f"a {fmt} file holds results, not {kind}")
    if not args.dry_run and not (args.url and args.key):
        raise Usage("--url and --key (or CML_URL and CML_API_KEY) are required, unless --dry-run")
    started = time.monotonic()
    ckpt_path = args.checkpoint or f"{path}.cml-import.json"
    rejects_path = args.rejects or (
        f"{path}.dry-run.rejects.ndjson" if args.dry_run else f"{path}.rejects.ndjson"
    )

    state = None if args.restart or args.dry_run else cp.load(ckpt_path, path, kind, fmt)
    if state is None:
        state = cp.State(os.path.abspath(path), cp.fingerprint(path), kind, fmt)
        rejects = cp.Rejects(rejects_path, None)
    else:
        rejects = cp.Rejects(rejects_path, state.rejects_bytes)
    first_rows = state.rows
    progress = Progress(os.path.getsize(path), state.offset, every_s=args.progress_every)
    exit_code = EXIT_OK
    counts = state.counts

    def report() -> dict:
        elapsed = time.monotonic() - started
        done = state.rows - first_rows
        return {
            "file": path, "kind": kind, "format": fmt, "dry_run": args.dry_run, "complete": state.complete,
            "rows": state.rows, "imported": state.rows - counts.get("rejected", 0),
            "counts": {k: counts.get(k, 0) for k in (*OUTCOMES, "valid", "rejected") if k in counts or
                       k in ("created", "unchanged", "replaced", "rejected")},
            "rejects": rejects_path, "checkpoint": None if args.dry_run else ckpt_path,
            "rows_this_run": done, "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(done / max(elapsed, 1e-9), 1),
        }  # fmt: skip

    pool = ThreadPoolExecutor(args.parallel, thread_name_prefix="cml-import")
    try:
        if args.dry_run:
            from services.importer.dryrun import Validator

            validator = Validator(kind, fmt)
            send: Callable[[Sequence[Row]], list[Outcome]] = lambda batch: [validator.check(r) for r in batch]  # noqa: E731
        else:
            api = Api(args.url, args.key, retries=args.retries)
            api.check()
            digest = hashlib.sha256(f"{state.file}\0{state.fingerprint}".encode()).hexdigest()[:12]
            key_base = f"cml-import-{digest}-{state.import_id}"
            send = _sender(kind, fmt, api, key_base, pool)
        position = Position(state.offset, state.rows, state.lines)
        for batch in batches(rows(path, fmt, position), kind, fmt, args.batch_size):
            outcomes = send(batch)
            for row, outcome in zip(batch, outcomes, strict=True):
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                if outcome.status == "rejected":
                    rejects.write(_reject_entry(row, outcome))
            last = batch[-1]
            state.offset, state.rows, state.lines = last.end, last.number, last.end_line
            state.rejects_bytes = rejects.sync()
            if not args.dry_run:
                cp.save(ckpt_path, state)
            progress.update(state.offset, state.rows - first_rows, counts.get("rejected", 0))
        state.complete = True
        if not args.dry_run:
            cp.save(ckpt_path, state)
    except KeyboardInterrupt:
        progress.finish()
        print("cml-import: interrupted; re-run the same command to continue", file=sys.stderr)
        exit_code = EXIT_INTERRUPTED
    except (Unreachable, ServerFailed, Refused) as exc:
        progress.finish()
        kind_of = "the API refused the key" if isinstance(exc, Refused) else "stopped"
        print(f"cml-import: {kind_of}: {exc}", file=sys.stderr)
        if not isinstance(exc, Refused) or state.rows:
            print(
                f"cml-import: re-run the same command to continue from row {state.rows + 1}", file=sys.stderr
            )
        exit_code = EXIT_FAILED
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        rejects.close()
    progress.finish()
    _report(report(), args.json)
    if exit_code == EXIT_OK and counts.get("rejected"):
        exit_code = EXIT_REJECTED
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """The console script `cml-import` (and `python -m services.importer`)."""
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (Usage, FormatError, cp.CheckpointMismatch) as exc:
        print(f"cml-import: {exc}", file=sys.stderr)
        if isinstance(exc, cp.CheckpointMismatch):
            print(
                "cml-import: pass --restart to start over, or --checkpoint for another file", file=sys.stderr
            )
        return EXIT_FAILED
