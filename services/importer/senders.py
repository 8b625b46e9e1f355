"""Sending one batch of rows through the API and telling, per row, what became of it.

A JSON batch (results, events) is all-or-nothing at the API: a 422 or 409 names its bad items by JSON
pointer (``/3/control_copies``). Those rows are rejected with the reasons and the rest of the batch is sent
again, until it is taken or empty, so one bad row never costs the good ones beside it. HL7 v2 and FHIR
batches are taken message by message, entry by entry: each ACK or entry response is its row's outcome.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

from services.importer.client import Answer, Api
from services.importer.readers import Row

OUTCOMES = ("created", "updated", "replaced", "withdrawn", "unchanged", "accepted")
_ITEM = re.compile(r"/(\d+)(/.*)?\Z")
_FHIR_OUTCOME = re.compile(r"result \S+ (created|unchanged|replaced|withdrawn)\b")
_ENTRY = re.compile(r"\ABundle\.entry\[\d+\]\.resource")
ER7 = "x-application/hl7-v2+er7"
# Stay well below the API's MAX_BODY_BYTES (2 MiB by default): a batch is closed at this many bytes.
MAX_BATCH_BYTES = 1_500_000


class ServerFailed(Exception):
    """A 5xx the API did not ask to retry (a fault of the service, not of a row): stop, checkpoint kept."""


@dataclass
class Outcome:
    status: str  # one of OUTCOMES, or "rejected"
    http: int | None = None
    reasons: list[dict] = field(default_factory=list)


def rejected(http: int | None, detail: str, pointer: str = "") -> Outcome:
    return Outcome("rejected", http, [{"pointer": pointer, "detail": detail}])


def batches(rows: Iterator[Row], kind: str, fmt: str, size: int) -> Iterator[list[Row]]:
    """Rows in batches of at most ``size`` (and MAX_BATCH_BYTES). A JSON results batch closes before a
    result_id it already holds (a correction after its original: the API refuses an id twice in one
    batch, and the order matters); an events batch holds one patient's consecutive rows."""
    batch: list[Row] = []
    ids: set[str] = set()
    nbytes = 0
    for row in rows:
        rec = row.record if isinstance(row.record, dict) else {}
        rid = rec.get("result_id") if kind == "results" and fmt in ("csv", "ndjson") else None
        close = len(batch) >= size or nbytes + (row.end - row.start) > MAX_BATCH_BYTES
        if batch and kind == "events" and fmt in ("csv", "ndjson"):
            close = close or rec.get("patient_id") != batch[0].record.get("patient_id")
        if batch and isinstance(rid, str) and rid in ids:
            close = True
        if batch and close:
            yield batch
            batch, ids, nbytes = [], set(), 0
        batch.append(row)
        nbytes += row.end - row.start
        if isinstance(rid, str):
            ids.add(rid)
    if batch:
        yield batch


def _problem_reasons(answer: Answer) -> list[dict]:
    doc = answer.json()
    doc = doc if isinstance(doc, dict) else {}
    reasons = [
        {"pointer": e.get("pointer", ""), "field": e.get("field", ""), "detail": e.get("detail", "")}
        for e in doc.get("errors") or []
        if isinstance(e, dict)
    ]
    if not reasons:
        detail = doc.get("detail") or doc.get("title") or answer.body[:300].decode("utf-8", "replace")
        reasons = [{"pointer": "", "detail": f"HTTP {answer.status}: {detail}"}]
    return reasons


def _fail_on_server_error(answer: Answer, what: str) -> None:
    if answer.status >= 500:
        raise ServerFailed(f"{what}: HTTP {answer.status} {_problem_reasons(answer)[0]['detail']}")


class JsonBatch:
    """POST a JSON array of items; reject the items a 422/409 names and send the rest again."""

    def __init__(self, api: Api, path: str, key_base: str):
        self.api, self.path, self.key_base = api, path, key_base

    def send(
        self,
        items: list[tuple[int, dict]],
        out: list[Outcome | None],
        taken: Callable[[list[tuple[int, dict]], object], None],
    ) -> None:
        stack = [items]
        while stack:
            part = stack.pop()
            if not part:
                continue
            body = json.dumps([doc for _, doc in part], separators=(",", ":")).encode()
            # Derived from the file, the batch's offset and its content: a batch re-sent after a crash or a
            # lost answer is the same request (the API replays its first answer).
            key = f"{self.key_base}-{hashlib.sha256(body).hexdigest()[:24]}"
            headers = {"Content-Type": "application/json", "Idempotency-Key": key}
            answer = self.api.request("POST", self.path, body, headers)
            if 200 <= answer.status < 300:
                taken(part, answer.json())
                continue
            _fail_on_server_error(answer, f"POST {self.path}")
            if answer.status == 413 and len(part) > 1:
                half = len(part) // 2
                stack += [part[half:], part[:half]]
                continue
            reasons = _problem_reasons(answer)
            by_item: dict[int, list[dict]] = {}
            for reason in reasons:
                m = _ITEM.match(reason["pointer"])
                if m and int(m[1]) < len(part):
                    by_item.setdefault(int(m[1]), []).append({**reason, "pointer": m[2] or ""})
            if answer.status in (409, 422) and by_item:
                for j, item_reasons in by_item.items():
                    out[part[j][0]] = Outcome("rejected", answer.status, item_reasons)
                stack.append([p for j, p in enumerate(part) if j not in by_item])
                continue
            # Refused as a whole, naming no item (an unknown patient for events, a bad path...): every row.
            for i, _ in part:
                out[i] = Outcome("rejected", answer.status, reasons)


def _locally_rejected(rows: Sequence[Row]) -> list[Outcome | None]:
    return [rejected(None, row.error) if row.error else None for row in rows]


def send_results(api: Api, rows: Sequence[Row], key_base: str) -> list[Outcome]:
    out = _locally_rejected(rows)

    def taken(part: list[tuple[int, dict]], doc: object) -> None:
        accepted = doc.get("accepted", []) if isinstance(doc, dict) else []
        for (i, _), item in zip(part, accepted, strict=False):
            out[i] = Outcome(item.get("outcome", "accepted"), 202)
        for i, _ in part[len(accepted) :]:
            out[i] = Outcome("accepted", 202)

    items = [(i, row.record) for i, row in enumerate(rows) if out[i] is None]
    JsonBatch(api, "/v1/assay-results", key_base).send(items, out, taken)
    return [o or rejected(None, "not sent") for o in out]


def _patient_id(row: Row) -> tuple[str | None, dict]:
    rec = dict(row.record)
    pid = rec.pop("patient_id", None)
    return (pid if isinstance(pid, str) and pid else None), rec


def send_events(api: Api, rows: Sequence[Row], key_base: str) -> list[Outcome]:
    """One patient's events (batches() groups them) in one POST /v1/patients/<id>/events."""
    out = _locally_rejected(rows)
    items = []
    for i, row in enumerate(rows):
        if out[i] is None:
            pid, rec = _patient_id(row)
            if pid is None:
                out[i] = rejected(None, "patient_id is required", "/patient_id")
            else:
                items.append((i, rec))
    if items:
        pid = _patient_id(rows[items[0][0]])[0]

        def taken(part: list[tuple[int, dict]], doc: object) -> None:
            for i, _ in part:
                out[i] = Outcome("accepted", 202)

        path = f"/v1/patients/{quote(pid, safe='')}/events"
        JsonBatch(api, path, key_base).send(items, out, taken)
    return [o or rejected(None, "not sent") for o in out]


def send_patients(api: Api, rows: Sequence[Row], pool: ThreadPoolExecutor) -> list[Outcome]:
    """One PUT /v1/patients/<id> per row, several at once."""

    def put(row: Row) -> Outcome:
        if row.error:
            return rejected(None, row.error)
        pid, rec = _patient_id(row)
        if pid is None:
            return rejected(None, "patient_id is required", "/patient_id")
        body = json.dumps(rec).encode()
        path = f"/v1/patients/{quote(pid, safe='')}"
        answer = api.request("PUT", path, body, {"Content-Type": "application/json"})
        if answer.status in (200, 201):
            doc = answer.json()
            state = doc.get("outcome") if isinstance(doc, dict) else None
            return Outcome(state if state in OUTCOMES else "created", answer.status)
        _fail_on_server_error(answer, "PUT /v1/patients/<id>")
        return Outcome("rejected", answer.status, _problem_reasons(answer))

    return list(pool.map(put, rows))


def _acks(text: str) -> list[tuple[str, list[dict]]]:
    """(MSA-1, reasons from its ERR segments) of each ACK in an answer (a batch or a single ACK)."""
    acks: list[tuple[str, list[dict]]] = []
    for seg in re.split(r"\r\n|\r|\n", text):
        f = seg.split("|") + [""] * 9
        if f[0] == "MSH":
            acks.append(("", []))
        elif f[0] == "MSA" and acks:
            acks[-1] = (f[1], acks[-1][1])
        elif f[0] == "ERR" and acks:
            acks[-1][1].append({"pointer": f[2], "code": f[3], "severity": f[4], "detail": f[8]})
    return acks


def _hl7_outcome(code: str, reasons: list[dict], http: int) -> Outcome:
    if code == "AA":
        return Outcome("accepted", 200)
    errors = [r for r in reasons if r["severity"] == "E"] or reasons
    return Outcome("rejected", http, errors or [{"pointer": "", "detail": f"ACK {code or 'missing'}"}])


def send_hl7(api: Api, rows: Sequence[Row]) -> list[Outcome]:
    """The messages as one FHS/BHS batch; the batch of ACKs answers them in order. An answer that is not
    one ACK per message (the batch itself refused) has each message sent alone instead."""
    out = _locally_rejected(rows)
    todo = [i for i in range(len(rows)) if out[i] is None]
    if not todo:
        return [o or rejected(None, "not sent") for o in out]
    body = "FHS|^~\\&|CML-IMPORT\rBHS|^~\\&|CML-IMPORT\r"
    body += "".join(rows[i].record.rstrip("\r") + "\r" for i in todo) + f"BTS|{len(todo)}\rFTS|1\r"
    answer = api.request("POST", "/v1/hl7v2", body.encode(), {"Content-Type": ER7})
    _fail_on_server_error(answer, "POST /v1/hl7v2")
    acks = _acks(answer.body.decode("utf-8", "replace"))
    if len(acks) == len(todo):
        for i, (code, reasons) in zip(todo, acks, strict=True):
            out[i] = _hl7_outcome(code, reasons, 200 if code == "AA" else answer.status)
        return [o or rejected(None, "not sent") for o in out]
    for i in todo:
        one = api.request("POST", "/v1/hl7v2", rows[i].record.encode(), {"Content-Type": ER7})
        _fail_on_server_error(one, "POST /v1/hl7v2")
        code, reasons = (_acks(one.body.decode("utf-8", "replace")) or [("", [])])[0]
        out[i] = _hl7_outcome(code, reasons, one.status)
    return [o or rejected(None, "not sent") for o in out]


def _issues(outcome: object) -> list[dict]:
    issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
    return [
        {
            "pointer": _ENTRY.sub("Observation", (i.get("expression") or [""])[0]),
            "severity": i.get("severity", ""),
            "detail": i.get("diagnostics", ""),
        }
        for i in issues
        if isinstance(i, dict)
    ]


def send_fhir(api: Api, rows: Sequence[Row]) -> list[Outcome]:
    """The Observations as one batch Bundle (each entry on its own); a non-2xx entry is a rejected row."""
    out = _locally_rejected(rows)
    stack = [[i for i in range(len(rows)) if out[i] is None]]
    while stack:
        part = stack.pop()
        if not part:
            continue
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"request": {"method": "POST", "url": "Observation"}, "resource": rows[i].record}
                for i in part
            ],
        }
        body = json.dumps(bundle, separators=(",", ":")).encode()
        answer = api.request("POST", "/fhir", body, {"Content-Type": "application/fhir+json"})
        _fail_on_server_error(answer, "POST /fhir")
        doc = answer.json()
        entries = doc.get("entry") if isinstance(doc, dict) else None
        if answer.status == 200 and isinstance(entries, list) and len(entries) == len(part):
            for i, entry in zip(part, entries, strict=True):
                resp = entry.get("response", {}) if isinstance(entry, dict) else {}
                code = int(str(resp.get("status", "0")).split()[0] or 0)
                issues = _issues(resp.get("outcome"))
                if 200 <= code < 300:
                    said = next(
                        (m[1] for x in issues if (m := _FHIR_OUTCOME.search(x["detail"]))), "accepted"
                    )
                    out[i] = Outcome(said, code)
                else:
                    out[i] = Outcome("rejected", code, [x for x in issues if x["severity"] != "information"])
            continue
        if answer.status == 413 and len(part) > 1:
            half = len(part) // 2
            stack += [part[half:], part[:half]]
            continue
        reasons = _issues(doc) or [{"pointer": "", "detail": f"HTTP {answer.status}"}]
        for i in part:
            out[i] = Outcome("rejected", answer.status, reasons)
    return [o or rejected(None, "not sent") for o in out]
