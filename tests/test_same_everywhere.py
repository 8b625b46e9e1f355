"""One patient's history sent four ways, each to its own patient id: the JSON API, an HL7 v2 ORU^R01 over
HTTP, the same over MLLP (a real `python -m services.mllp`), and a FHIR transaction Bundle. The stored
results, the status, the timeline and the FHIR view are equal but for ids: no door has rules of its own.

The history covers each way a measurement arrives (copies; undetectable against control copies; "< limit"
without them; an IS% with a conversion factor; GUSB as control), then a correction and a withdrawal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from shared import keys
from shared.result_codec import decode_result
from tests.interop.hl7_messages import MSH
from tests.procs import stop_process
from tests.support import register, wait_status
from tests.test_mllp import exchange, start

LOINC = "http://loinc.org"
SERVICE = "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr"

# (key, collected_at, measurement, status). The measurement is written once, in the JSON API's terms; each
# door below writes it in its own idiom.
FIRST = [
    ("R1", "2024-01-05", {"bcr": 50, "ABL1": 100000}, "final"),
    ("R2", "2024-03-01T08:30:00+01:00", {"undetectable": 0.0032, "GUSB": 80000}, "final"),
    ("R3", "2024-04-02", {"undetectable": 0.0032}, "final"),
    ("R4", "2024-05-02", {"is": 0.02, "ABL1": 100000, "cf": 0.9}, "final"),
    ("R5", "2024-06-01", {"bcr": 3, "ABL1": 120000, "cf": 1.1}, "final"),
]
SECOND = [
    ("R1", "2024-01-05", {"bcr": 40, "ABL1": 100000}, "corrected"),
    ("R5", "2024-06-01", {"bcr": 3, "ABL1": 120000, "cf": 1.1}, "entered-in-error"),
]
CONTROLS = ("ABL1", "GUSB")


def json_doc(pid: str, rid: str, collected: str, m: dict, status: str) -> dict:
    doc: dict = {"result_id": rid, "patient_id": pid, "collected_at": collected, "status": status}
    gene = next((g for g in CONTROLS if g in m), None)
    if gene:
        doc |= {"control_gene": gene, "control_copies": m[gene]}
    if "undetectable" in m:
        doc |= {"bcr_abl1_copies": 0} if gene else {"is_percent_below": m["undetectable"]}
    doc |= {"bcr_abl1_copies": m["bcr"]} if "bcr" in m else {}
    doc |= {"is_percent": m["is"]} if "is" in m else {}
    doc |= {"conversion_factor": m["cf"]} if "cf" in m else {}
    return doc


HL7_STATUS = {"final": "F", "corrected": "C", "entered-in-error": "W"}


def hl7_ts(collected: str) -> str:
    """2024-03-01T08:30:00+01:00 -> 20240301083000+0100; 2024-01-05 -> 20240105."""
    day, _, rest = collected.partition("T")
    if not rest:
        return day.replace("-", "")
    clock, offset = rest[:8], rest[8:]
    return day.replace("-", "") + clock.replace(":", "") + offset.replace(":", "")


def hl7_message(pid: str, items: list[tuple[str, str, dict, str]], control: str) -> str:
    segments = [MSH.format(control=control, version="2.5.1"), f"PID|1||{pid}^^^HOSP^MR||DOE^JANE"]
    for n, (rid, collected, m, status) in enumerate(items, 1):
        segments.append(f"OBR|{n}||{rid}^LAB|BCRABL^BCR-ABL1 qPCR^L|||{hl7_ts(collected)}")
        s = HL7_STATUS[status]
        obx = []
        if "undetectable" in m:
            obx.append(f"SN|69380-4^BCR-ABL1/ABL1 IS^LN||<^{m['undetectable']}|%|||||{s}")
        if "is" in m:
            obx.append(f"NM|69380-4^BCR-ABL1/ABL1 IS^LN||{m['is']}|%|||||{s}")
        if "bcr" in m:
            obx.append(f"NM|BCRABL1-COPIES^BCR-ABL1 copies^L||{m['bcr']}|{{copies}}|||||{s}")
        obx += [f"NM|{g}-COPIES^{g} copies^L||{m[g]}|{{copies}}|||||{s}" for g in CONTROLS if g in m]
        if "cf" in m:
            obx.append(f"NM|IS-CF^IS conversion factor^L||{m['cf']}|1|||||{s}")
        segments += [f"OBX|{i}|{seg}" for i, seg in enumerate(obx, 1)]
    return "\r".join(segments) + "\r"


def fhir_component(code: str, value: float) -> dict:
    return {"code": {"coding": [{"system": SERVICE, "code": code}]}, "valueQuantity": {"value": value}}


def fhir_observation(pid: str, rid: str, collected: str, m: dict, status: str) -> dict:
    obs: dict = {
        "resourceType": "Observation",
        "status": status,
        "identifier": [{"system": "urn:oid:1.2.3.4.5", "value": rid}],
        "code": {"coding": [{"system": LOINC, "code": "69380-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": collected,
    }
    if "undetectable" in m:
        obs["valueQuantity"] = {"value": m["undetectable"], "comparator": "<", "unit": "%"}
    if "is" in m:
        obs["valueQuantity"] = {"value": m["is"], "unit": "%"}
    components = [fhir_component("BCRABL1-COPIES", m["bcr"])] if "bcr" in m else []
    components += [fhir_component(f"{g}-COPIES", m[g]) for g in CONTROLS if g in m]
    components += [fhir_component("IS-CF", m["cf"])] if "cf" in m else []
    if components:
        obs["component"] = components
    return obs


def fhir_bundle(pid: str, items: list[tuple[str, str, dict, str]]) -> dict:
    entries = []
    for rid, collected, m, status in items:
        request = (
            {"method": "POST", "url": "Observation"}
            if status == "final"
            else {"method": "PUT", "url": f"Observation?identifier={rid}"}
        )
        entries.append({"resource": fhir_observation(pid, rid, collected, m, status), "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _comparable(doc: object, names: dict[str, str]) -> object:
    """The document with each door's ids replaced by one stand-in, without its timestamps."""
    text = json.dumps(doc, sort_keys=True)
    for real, stand_in in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(real, stand_in)
    loaded = json.loads(text)
    if isinstance(loaded, dict):
        for key in ("computed_at", "data_version", "meta", "id", "timestamp"):
            loaded.pop(key, None)
    return loaded


@pytest.fixture
def mllp(redis_url, worker, tmp_path):
    server = start(redis_url, tmp_path)
    yield server
    stop_process(server.proc)


def test_one_history_four_doors_equal_but_for_ids(client, r, mllp):
    run = uuid.uuid4().hex[:8]
    doors = ("json", "hl7", "mllp", "fhir")
    pids = {door: f"SAME-{door}-{run}" for door in doors}
    for pid in pids.values():
        register(client, pid)

    def ids(door: str, items: list) -> list:
        return [(f"{door}-{run}-{key}", c, m, s) for key, c, m, s in items]

    def send_json(items: list) -> None:
        body = [json_doc(pids["json"], *item) for item in ids("json", items)]
        resp = client.post("/v1/assay-results", json=body)
        assert resp.status_code == 202, resp.get_json()

    def send_hl7(items: list) -> None:
        message = hl7_message(pids["hl7"], ids("hl7", items), control=f"H{uuid.uuid4().hex[:12]}")
        resp = client.post("/v1/hl7v2", data=message.encode(), content_type="x-application/hl7-v2+er7")
        assert resp.status_code == 200 and "MSA|AA|" in resp.get_data(as_text=True), resp.get_data(
            as_text=True
        )

    def send_mllp(items: list) -> None:
        message = hl7_message(pids["mllp"], ids("mllp", items), control=f"M{uuid.uuid4().hex[:12]}")
        with mllp.connect() as sock:
            ack = exchange(sock, message.encode())
        assert "MSA|AA|" in ack, ack

    def send_fhir(items: list) -> None:
        bundle = fhir_bundle(pids["fhir"], ids("fhir", items))
        resp = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
        assert resp.status_code == 200, resp.get_json()
        statuses = [e["response"]["status"] for e in resp.get_json()["entry"]]
        assert all(s.startswith(("200", "201")) for s in statuses), statuses

    senders: dict[str, Callable[[list], None]] = {
        "json": send_json, "hl7": send_hl7, "mllp": send_mllp, "fhir": send_fhir,
    }  # fmt: skip
    for batch in (FIRST, SECOND):
        for door in doors:
            senders[door](batch)

    def settled(doc: dict) -> bool:
        return doc["results_count"] == 4 and doc["results_withdrawn"] == 1

    names = {pid: "PATIENT" for pid in pids.values()}
    names |= {f"{door}-{run}-": "RESULT-" for door in doors}
    statuses = {door: wait_status(client, pid, settled) for door, pid in pids.items()}
    reference = _comparable(statuses["json"], names)
    assert reference["response_level"] is not None
    for door in doors[1:]:
        assert _comparable(statuses[door], names) == reference, door

    timelines = {door: client.get(f"/v1/patients/{pid}/results").get_json() for door, pid in pids.items()}
    assert len(timelines["json"]["results"]) == 5
    stored = {
        door: sorted(
            (decode_result(v, pid) for v in r.hvals(keys.results(pid))), key=lambda d: d["result_id"]
        )
        for door, pid in pids.items()
    }
    views = {
        door: client.get(f"/fhir/Observation?patient={pid}&_count=100").get_json()
        for door, pid in pids.items()
    }
    for door in doors[1:]:
        assert _comparable(timelines[door], names) == _comparable(timelines["json"], names), door
        assert _comparable(stored[door], names) == _comparable(stored["json"], names), door
        entries = [_comparable(e["resource"], names) for e in views[door]["entry"]]
        assert entries == [_comparable(e["resource"], names) for e in views["json"]["entry"]], door
    # The shapes the history was meant to exercise are really there.
    by_key = {d["result_id"].rsplit("-", 1)[1]: d for d in stored["json"]}
    assert by_key["R2"]["bcr_abl1_copies"] == 0 and by_key["R2"]["control_gene"] == "GUSB"
    assert by_key["R3"]["is_percent_below"] == 0.0032 and by_key["R3"]["control_copies"] is None
    assert by_key["R1"]["status"] == "corrected" and by_key["R1"]["bcr_abl1_copies"] == 40
    assert by_key["R5"]["status"] == "entered-in-error"
