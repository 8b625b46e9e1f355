"""cml-import (services/importer) against a real API: gunicorn serving the app, a real worker, a real Redis.

The command runs as a subprocess (`python -m services.importer`), as an operator runs it: CSV and NDJSON
registrations, events and results, an HL7 v2 batch file, FHIR NDJSON; rejected rows with their reasons while
the good rows of the same batch are stored; exit codes; --dry-run; a SIGKILL mid-import and a re-run; and
the same history imported newest first and oldest first giving the same status.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
import redis

from services.importer.readers import NUMBER_FIELDS
from shared import keys, store
from tests.conftest import FULL_KEY
from tests.procs import ROOT, free_port, start_gunicorn, stop_process, wait_for
from tests.support import http

PYTHON = sys.executable


@pytest.fixture(scope="module")
def api(redis_url, worker, tmp_path_factory):
    proc, base = start_gunicorn(redis_url, tmp_path_factory.mktemp("gunicorn-import") / "api.log")
    yield base
    stop_process(proc)


def command(api: str, *args: str, key: str = FULL_KEY) -> list[str]:
    return [PYTHON, "-m", "services.importer", "--url", api, "--key", key, "--json", *args]


def run_import(api: str, *args: str, key: str = FULL_KEY, timeout: float = 120) -> tuple[int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command(api, *args, key=key), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done.returncode, report, done.stderr


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_ndjson(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def status_of(api: str, pid: str, results: int, timeout: float = 20) -> dict:
    def fresh():
        code, doc = http("GET", f"{api}/v1/patients/{pid}/status")
        return doc if code == 200 and not doc.get("pending") and doc.get("results_count") == results else None

    return wait_for(fresh, timeout, interval=0.1, what=f"status of {pid}")


def ids(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"P-{tag}-{i}" for i in range(n)]


def test_number_fields_are_the_schemas_numbers():
    from shared.schemas import AssayResultSchema, EventSchema, Number, PatientSchema

    numbers = {
        name
        for schema in (AssayResultSchema, EventSchema, PatientSchema)
        for name, f in schema._declared_fields.items()
        if isinstance(f, Number)
    }
    assert numbers == NUMBER_FIELDS


def test_csv_patients_events_and_results_end_to_end(api, tmp_path):
    p1, p2, p3 = ids(3)
    patients = write_csv(
        tmp_path / "patients.csv",
        ["patient_id", "cohorts", "enrolled_on", "tki", "tki_started_on", "dose_mg"],
        [
            [p1, "IMPORT-A;IMPORT-B", "2023-01-10", "imatinib", "2023-01-10", "400"],
            [p2, "IMPORT-A", "2023-02-01", "Tasigna", "2023-02-01", "600"],
            [p3, "", "", "", "", ""],
        ],
    )
    rc, report, err = run_import(api, str(patients))
    assert rc == 0, err
    assert report["kind"] == "patients" and report["counts"]["created"] == 3 and report["complete"]
    code, reg = http("GET", f"{api}/v1/patients/{p1}/status")
    assert code == 200
    header = ["result_id", "patient_id", "collected_at", "control_gene", "control_copies", "bcr_abl1_copies"]
    t = uuid.uuid4().hex[:8]
    results = write_csv(
        tmp_path / "results.csv",
        header,
        [
            [f"{t}-1", p1, "2023-04-10", "ABL1", "100000", "5000"],  # 5% IS
            [f"{t}-2", p1, "2023-07-10", "ABL1", "100000", "80"],  # 0.08%: MMR
            [f"{t}-3", p1, "2024-01-10", "ABL1", "100000", "3.2"],  # MR4.5
            [f"{t}-4", p2, "2023-05-01", "ABL1", "100000", "900"],
            [f"{t}-5", p2, "2023-08-01", "GUSB", "2.4e5", "0"],  # undetectable in 240,000 GUSB
            [f"{t}-6", p3, "2024-02-01", "ABL1", "50000", "50"],
        ],
    )
    rc, report, err = run_import(api, str(results))
    assert rc == 0, err
    assert report["kind"] == "results" and report["counts"]["created"] == 6 and report["rows"] == 6
    s1, s2, s3 = status_of(api, p1, 3), status_of(api, p2, 2), status_of(api, p3, 1)
    assert s1["response_level"] == "MR4.5" and s1["data_version"] >= 2
    assert s2["response_level"].startswith("MR") and s2["data_version"] >= 2
    assert s3["response_level"] in ("MMR", "MR3") and s3["data_version"] >= 2
    # Events: patient_id + the event's fields.
    events = write_csv(
        tmp_path / "events.csv",
        ["patient_id", "type", "date", "tki", "dose_mg", "reason"],
        [
            [p1, "tki_changed", "2024-02-01", "dasatinib", "100", "intolerance"],
            [p2, "tki_stopped", "2024-03-01", "", "", "treatment_free_remission"],
        ],
    )
    rc, report, err = run_import(api, str(events))
    assert rc == 0, err
    assert report["kind"] == "events" and report["counts"]["accepted"] == 2
    # The same files again: nothing changes (the checkpoints say they are done; with --restart, unchanged).
    rc, report, _ = run_import(api, str(results))
    assert rc == 0 and report["rows_this_run"] == 0 and report["counts"]["created"] == 6
    rc, report, _ = run_import(api, str(results), "--restart")
    assert rc == 0 and report["counts"] == {"created": 0, "unchanged": 6, "replaced": 0, "rejected": 0}
    rc, report, _ = run_import(api, str(patients), "--restart")
    assert rc == 0 and report["counts"]["unchanged"] == 3


def test_ndjson_results_with_a_correction_in_the_same_file(api, tmp_path):
    (pid,) = ids(1)
    assert http("PUT", f"{api}/v1/patients/{pid}", {"cohorts": []})[0] == 201
    t = uuid.uuid4().hex[:8]
    base = {"patient_id": pid, "control_gene": "ABL1", "control_copies": 100000}
    docs = [
        {**base, "result_id": f"{t}-1", "collected_at": "2024-01-05", "bcr_abl1_copies": 50},
        {**base, "result_id": f"{t}-2", "collected_at": "2024-03-05", "bcr_abl1_copies": 8},
        {
            **base,
            "result_id": f"{t}-1",
            "collected_at": "2024-01-05",
            "bcr_abl1_copies": 40,
            "status": "corrected",
        },
        {
            **base,
            "result_id": f"{t}-3",
            "collected_at": "2024-05-05",
            "is_percent": 0.005,
            "conversion_factor": 0.8,
        },
    ]
    path = write_ndjson(tmp_path / "results.ndjson", docs)
    rc, report, err = run_import(api, str(path))
    assert rc == 0, err
    assert (
        report["format"] == "ndjson"
        and report["counts"]["created"] == 3
        and report["counts"]["replaced"] == 1
    )
    stored = {d["result_id"]: d for d in store.load_patient(_redis(api), pid).results}
    assert stored[f"{t}-1"]["bcr_abl1_copies"] == 40 and stored[f"{t}-1"]["status"] == "corrected"
    assert status_of(api, pid, 3)["results_count"] == 3


_R: dict[str, redis.Redis] = {}


def _redis(api: str) -> redis.Redis:
    return _R[api]


@pytest.fixture(autouse=True)
def _redis_for(api, redis_url):
    _R[api] = redis.Redis.from_url(redis_url)


def hl7_message(control_id: str, pid: str, accession: str, when: str, copies: float) -> str:
    return "\r".join([
        f"MSH|^~\\&|LAB|HOSP|CML|HOSP|{when}090000||ORU^R01|{control_id}|P|2.5.1",
        f"PID|1||{pid}^^^HOSP^MR||DOE^JANE",
        f"OBR|1|ORD1|{accession}^LAB|BCRABL^BCR-ABL1 qPCR^L|||{when}083000+0100",
        f"OBX|1|NM|BCRABL1-COPIES^BCR-ABL1 copies^L||{copies}|{{copies}}|||||F",
        "OBX|2|NM|ABL1-COPIES^ABL1 copies^L||100000|{copies}|||||F",
    ]) + "\r"  # fmt: skip


def test_hl7_batch_file(api, tmp_path):
    pid, stranger = ids(2)
    assert http("PUT", f"{api}/v1/patients/{pid}", {})[0] == 201
    t = uuid.uuid4().hex[:8]
    messages = [
        hl7_message(f"{t}-1", pid, f"{t}-A1", "20240105", 50),
        hl7_message(f"{t}-2", stranger, f"{t}-A2", "20240205", 5),  # not registered: AE
        hl7_message(f"{t}-3", pid, f"{t}-A3", "20240305", 3),
    ]
    body = "FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + "".join(messages) + "BTS|3\rFTS|1\r"
    path = tmp_path / "oru.hl7"
    path.write_text(body.replace("\r", "\r\n"))  # CRLF on disk, as files from Windows engines are
    rc, report, err = run_import(api, str(path), "--batch-size", "2")
    assert rc == 1, err
    assert (
        report["format"] == "hl7" and report["counts"]["accepted"] == 2 and report["counts"]["rejected"] == 1
    )
    (bad,) = rejects(tmp_path / "oru.hl7.rejects.ndjson")
    assert bad["row"] == 2 and stranger in bad["record"]
    assert any("not registered" in r["detail"] and r["pointer"].startswith("PID") for r in bad["reasons"])
    assert status_of(api, pid, 2)["results_count"] == 2
    # Plain concatenated messages (no batch segments), re-sent: the ACKs are the same (MSH-10 remembered).
    plain = tmp_path / "plain.hl7"
    plain.write_text(messages[0] + messages[2])
    rc, report, err = run_import(api, str(plain))
    assert rc == 0 and report["counts"]["accepted"] == 2, err


def observation(pid: str, accession: str, when: str, copies: float, status: str = "final") -> dict:
    service = "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr"
    return {
        "resourceType": "Observation",
        "status": status,
        "identifier": [{"system": "urn:oid:1.2.3.4.5", "value": accession}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "69380-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "component": [
            {
                "code": {"coding": [{"system": service, "code": "BCRABL1-COPIES"}]},
                "valueQuantity": {"value": copies},
            },
            {
                "code": {"coding": [{"system": service, "code": "ABL1-COPIES"}]},
                "valueQuantity": {"value": 100000},
            },
        ],
    }


def test_fhir_ndjson(api, tmp_path):
    (pid,) = ids(1)
    assert http("PUT", f"{api}/v1/patients/{pid}", {})[0] == 201
    t = uuid.uuid4().hex[:8]
    lines = [
        observation(pid, f"{t}-1", "2024-01-05", 50),
        observation(pid, f"{t}-2", "2024-02-05", 5, status="preliminary"),  # refused: 422
        observation(pid, f"{t}-3", "2024-03-05", 3),
        observation(pid, f"{t}-1", "2024-01-05", 50),  # a repeat: unchanged
    ]
    path = write_ndjson(tmp_path / "obs.ndjson", lines)
    rc, report, err = run_import(api, str(path))
    assert rc == 1, err
    assert report["format"] == "fhir"
    assert report["counts"]["created"] == 2 and report["counts"]["unchanged"] == 1
    assert report["counts"]["rejected"] == 1
    (bad,) = rejects(tmp_path / "obs.ndjson.rejects.ndjson")
    assert bad["row"] == 2 and bad["status"] == 422 and bad["record"]["status"] == "preliminary"
    assert any(r["pointer"] == "Observation.status" for r in bad["reasons"])
    assert status_of(api, pid, 2)["results_count"] == 2


def test_rejected_rows_are_written_with_reasons_and_the_good_rows_of_their_batch_stored(api, tmp_path):
    pid, stranger = ids(2)
    assert http("PUT", f"{api}/v1/patients/{pid}", {})[0] == 201
    t = uuid.uuid4().hex[:8]
    conflict = {"result_id": f"{t}-c", "patient_id": pid, "collected_at": "2024-01-01",
                "control_gene": "ABL1", "control_copies": 100000, "bcr_abl1_copies": 10}  # fmt: skip
    assert http("POST", f"{api}/v1/assay-results", conflict)[0] == 202
    header = ["result_id", "patient_id", "collected_at", "control_gene", "control_copies", "bcr_abl1_copies"]
    rows = [
        [f"{t}-1", pid, "2024-02-01", "ABL1", "100000", "50"],
        [f"{t}-2", pid, "2024-02-02", "ABL1", "-5", "50"],  # row 2: control_copies
        [f"{t}-3", stranger, "2024-02-03", "ABL1", "100000", "50"],  # row 3: unknown patient
        [f"{t}-4", pid, "2024-02-04", "ABL1", "100000", "7"],
        [f"{t}-c", pid, "2024-01-01", "ABL1", "100000", "11"],  # row 5: conflict (409)
        [f"{t}-6", pid, "2024-02-06", "ABL1", "lots", "50"],  # row 6: not a number
        [f"{t}-7", pid, "2024-02-07", "ABL1", "100000"],  # row 7: a cell short
        [f"{t}-8", pid, "2024-02-08", "ABL1", "100000", "3"],
    ]
    path = write_csv(tmp_path / "mixed.csv", header, rows)
    rc, report, err = run_import(api, str(path))
    assert rc == 1, err
    assert report["counts"]["created"] == 3 and report["counts"]["rejected"] == 5 and report["rows"] == 8
    bad = {b["row"]: b for b in rejects(tmp_path / "mixed.csv.rejects.ndjson")}
    assert sorted(bad) == [2, 3, 5, 6, 7]
    assert bad[2]["status"] == 422 and bad[2]["reasons"][0]["pointer"] == "/control_copies"
    assert bad[2]["record"]["result_id"] == f"{t}-2" and bad[2]["line"] == 3
    assert (
        bad[3]["reasons"][0]["pointer"] == "/patient_id"
        and "not registered" in bad[3]["reasons"][0]["detail"]
    )
    assert bad[5]["status"] == 409 and bad[5]["reasons"][0]["pointer"] == "/result_id"
    assert bad[6]["reasons"][0]["pointer"] == "/control_copies" and "number" in bad[6]["reasons"][0]["detail"]
    assert bad[7]["status"] is None and "cells" in bad[7]["reasons"][0]["detail"]
    stored = {d["result_id"] for d in store.load_patient(_redis(api), pid).results}
    assert stored == {f"{t}-c", f"{t}-1", f"{t}-4", f"{t}-8"}


def test_exit_codes(api, tmp_path):
    (pid,) = ids(1)
    path = write_ndjson(tmp_path / "p.ndjson", [{"patient_id": pid, "cohorts": []}])
    rc, _, err = run_import(f"http://127.0.0.1:{free_port()}", str(path), "--retries", "1")
    assert rc == 2 and "stopped" in err
    rc, _, err = run_import(api, str(path), key="not-a-key")
    assert rc == 2 and "refused the key" in err
    rc, _, err = run_import(api, str(tmp_path / "missing.csv"))
    assert rc == 2
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    rc, _, err = run_import(api, str(odd))
    assert rc == 2 and "--kind" in err
    rc, report, _ = run_import(api, str(path))
    assert rc == 0 and report["counts"]["created"] == 1


def test_dry_run_touches_nothing(api, tmp_path):
    (pid,) = ids(1)
    assert http("PUT", f"{api}/v1/patients/{pid}", {})[0] == 201
    t = uuid.uuid4().hex[:8]
    base = {"patient_id": pid, "control_gene": "ABL1", "control_copies": 100000}
    docs = [
        {**base, "result_id": f"{t}-1", "collected_at": "2024-01-05", "bcr_abl1_copies": 50},
        {**base, "result_id": f"{t}-2", "collected_at": "2024-13-05", "bcr_abl1_copies": 8},
        {**base, "result_id": f"{t}-3", "collected_at": "2024-03-05", "bcr_abl1_copies": 3, "unknown": 1},
    ]
    path = write_ndjson(tmp_path / "r.ndjson", docs)
    r = _redis(api)
    version = r.get(keys.version(pid))
    env = {k: v for k, v in os.environ.items() if k not in ("CML_URL", "CML_API_KEY")}
    done = subprocess.run(
        [PYTHON, "-m", "services.importer", "--dry-run", "--json", str(path)],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] and report["counts"]["valid"] == 1 and report["counts"]["rejected"] == 2
    bad = {b["row"]: b for b in rejects(tmp_path / "r.ndjson.dry-run.rejects.ndjson")}
    assert (
        bad[2]["reasons"][0]["pointer"] == "/collected_at" and bad[3]["reasons"][0]["pointer"] == "/unknown"
    )
    assert store.load_patient(r, pid).results == [] and r.get(keys.version(pid)) == version
    assert not (tmp_path / "r.ndjson.cml-import.json").exists()


def _history(pid: str, tag: str, n: int, start: date = date(2020, 1, 1)) -> list[dict]:
    return [
        {"result_id": f"{tag}-{i}", "patient_id": pid, "collected_at": (start + timedelta(i)).isoformat(),
         "control_gene": "ABL1", "control_copies": 100000.0, "bcr_abl1_copies": float((i * 37) % 5000) / 10}
        for i in range(n)
    ]  # fmt: skip


def test_resume_after_kill(api, tmp_path):
    """SIGKILL mid-import (20,000 results, batches of 500), then the same command again: every result is
    stored exactly once and as in the file; the report counts every row once."""
    pids = ids(20)
    write_ndjson(tmp_path / "patients.ndjson", [{"patient_id": p, "cohorts": []} for p in pids])
    rc, _, err = run_import(api, str(tmp_path / "patients.ndjson"))
    assert rc == 0, err
    tag = uuid.uuid4().hex[:8]
    docs = [d for k, p in enumerate(pids) for d in _history(p, f"{tag}-{k}", 1000)]
    path = write_ndjson(tmp_path / "big.ndjson", docs)
    ckpt = tmp_path / "big.ndjson.cml-import.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = command(api, str(path), "--batch-size", "500")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def progressed() -> bool:
        try:
            state = json.loads(ckpt.read_text())
        except (OSError, ValueError):
            return False
        return state["rows"] >= 3000

    wait_for(progressed, 60, interval=0.005, what="the checkpoint to show progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = json.loads(ckpt.read_text())
    assert 0 < killed_at["rows"] < 20000 and not killed_at["complete"]
    started = time.monotonic()
    rc, report, err = run_import(api, str(path), "--batch-size", "500")
    elapsed = time.monotonic() - started
    assert rc == 0, err
    assert (
        report["complete"]
        and report["rows"] == 20000
        and report["rows_this_run"] == 20000 - killed_at["rows"]
    )
    counts = report["counts"]
    assert counts["rejected"] == 0 and sum(counts.values()) == 20000
    assert counts["created"] + counts["unchanged"] == 20000
    r = _redis(api)
    stored = {d["result_id"]: d for p in pids for d in store.load_patient(r, p).results}
    assert len(stored) == 20000
    for doc in docs:
        assert {k: stored[doc["result_id"]][k] for k in doc} == doc
    print(
        f"\nresumed import: {report['rows_this_run']} rows in {elapsed:.1f} s ({report['rows_per_s']} rows/s)"
    )


def _comparable(doc: object, pid: str) -> object:
    """A status document without what differs between two patients given the same history: ids, times."""
    if isinstance(doc, dict):
        return {
            k: _comparable(v, pid)
            for k, v in doc.items()
            if k not in ("patient_id", "computed_at", "data_version") and not k.endswith("result_id")
        }
    if isinstance(doc, list):
        return [_comparable(v, pid) for v in doc]
    return doc.replace(pid, "<patient>") if isinstance(doc, str) else doc


def test_newest_first_and_oldest_first_give_the_same_status(api, tmp_path):
    early, late = ids(2)
    registration = {
        "enrolled_on": "2023-01-10",
        "tki": "imatinib",
        "tki_started_on": "2023-01-10",
        "dose_mg": 400,
    }
    write_ndjson(tmp_path / "p.ndjson", [{"patient_id": p, **registration} for p in (early, late)])
    assert run_import(api, str(tmp_path / "p.ndjson"))[0] == 0
    copies = [20000, 4000, 900, 90, 40, 8, 2, 0, 0, 60, 150]  # a response, then a loss of MMR
    t = uuid.uuid4().hex[:8]

    def history(pid: str) -> list[dict]:
        base = {"patient_id": pid, "control_gene": "ABL1", "control_copies": 100000}
        return [
            {**base, "result_id": f"{t}-{pid}-{i}", "bcr_abl1_copies": c,
             "collected_at": f"{2023 + (i + 3) // 12}-{(i + 3) % 12 + 1:02d}-10"}
            for i, c in enumerate(copies)
        ]  # fmt: skip

    write_ndjson(tmp_path / "oldest.ndjson", history(early))
    write_ndjson(tmp_path / "newest.ndjson", list(reversed(history(late))))
    for name in ("oldest.ndjson", "newest.ndjson"):
        rc, report, err = run_import(api, str(tmp_path / name), "--batch-size", "3")
        assert rc == 0 and report["counts"]["created"] == len(copies), err
    a, b = status_of(api, early, len(copies)), status_of(api, late, len(copies))
    assert a["response_level"] == b["response_level"]
    assert _comparable(a, early) == _comparable(b, late)
