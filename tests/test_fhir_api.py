"""FHIR R4 under /fhir through the real app, the real Redis and a real Celery worker (conftest.py)."""

from __future__ import annotations

import json
import uuid

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from shared import keys
from tests.conftest import SCOPED_KEYS
from tests.support import register, result, wait_status

FHIR = "application/fhir+json"
LOINC = "http://loinc.org"
SERVICE = "https://cml-response.org/fhir/CodeSystem/bcr-abl1-qpcr"
RESPONSE = "https://cml-response.org/fhir/CodeSystem/molecular-response"
EHR = "http://ehr.example/fhir"


def rid() -> str:
    return f"LAB-{uuid.uuid4().hex[:12]}"


def comp(code: str, value: float) -> dict:
    return {"code": {"coding": [{"system": SERVICE, "code": code}]}, "valueQuantity": {"value": value}}


def observation(pid: str, result_id: str, day: str = "2024-03-01", status: str = "final", **kw) -> dict:
    obs = {
        "resourceType": "Observation",
        "status": status,
        "identifier": [{"system": "urn:lab", "value": result_id}],
        "code": {"coding": [{"system": LOINC, "code": "69380-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day,
        "component": [comp("ABL1-COPIES", 100000), comp("BCRABL1-COPIES", 50)],
    }
    return obs | kw


def post(client, path: str, body: dict, **headers):
    return client.post(path, json=body, headers={"Content-Type": FHIR, **headers})


def bundle(kind: str, *resources: dict, put: bool = False) -> dict:
    def request(o: dict) -> dict:
        ident = o.get("identifier", [{}])[0].get("value")
        if put:
            return {"method": "PUT", "url": f"Observation?identifier={ident}"}
        return {"method": "POST", "url": "Observation"}

    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": o, "request": request(o)} for o in resources],
    }


def timeline(client, pid: str) -> list[dict]:
    return client.get(f"/v1/patients/{pid}/results").get_json()["results"]


def _comparable(doc: object, ids: dict[str, str]) -> object:
    """The document without its timestamps and versions, each id replaced by its stand-in."""
    text = json.dumps(doc, sort_keys=True)
    for real, stand_in in ids.items():
        text = text.replace(real, stand_in)
    loaded = json.loads(text)
    for key in ("computed_at", "data_version"):
        loaded.pop(key, None)
    return loaded


def test_a_transaction_changes_the_status_as_the_json_post_does(client, pid):
    other = f"{pid}-json"
    register(client, pid)
    register(client, other)
    days = ("2024-01-05", "2024-02-05", "2024-03-05", "2024-04-05")
    resources = [
        observation(
            pid, rid(), days[0], component=[comp("ABL1-COPIES", 100000), comp("BCRABL1-COPIES", 500)]
        ),
        observation(
            pid,
            rid(),
            days[1],
            valueQuantity={"value": 0.05, "unit": "%"},
            component=[comp("GUSB-COPIES", 80000)],
        ),
        observation(
            pid,
            rid(),
            days[2],
            valueQuantity={"value": 0.0032, "comparator": "<", "unit": "%"},
            component=[comp("ABL1-COPIES", 60000), comp("IS-CF", 0.9)],
        ),
        observation(pid, rid(), days[3], component=[comp("BCR-COPIES", 90000), comp("BCRABL1-COPIES", 3)]),
    ]
    done = post(client, "/fhir", bundle("transaction", *resources))
    assert done.status_code == 200 and done.mimetype == FHIR, done.get_json()
    answer = done.get_json()
    Bundle.model_validate(answer)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 4
    assert (
        answer["entry"][0]["response"]["location"] == f"Observation/{resources[0]['identifier'][0]['value']}"
    )

    json_results = [
        result(other, collected_at=days[0], bcr_abl1_copies=500),
        result(
            other,
            collected_at=days[1],
            bcr_abl1_copies=None,
            is_percent=0.05,
            control_gene="GUSB",
            control_copies=80000,
        ),
        result(other, collected_at=days[2], bcr_abl1_copies=0, control_copies=60000, conversion_factor=0.9),
        result(other, collected_at=days[3], bcr_abl1_copies=3, control_gene="BCR", control_copies=90000),
    ]
    assert client.post("/v1/assay-results", json=json_results).status_code == 202
    fhir_status = wait_status(client, pid, lambda d: d["results_count"] == 4)
    json_status = wait_status(client, other, lambda d: d["results_count"] == 4)
    assert fhir_status["response_level"] == json_status["response_level"] is not None
    fhir_ids = {o["identifier"][0]["value"]: f"R{i}" for i, o in enumerate(resources)} | {pid: "P"}
    json_ids = {d["result_id"]: f"R{i}" for i, d in enumerate(json_results)} | {other: "P"}
    assert _comparable(fhir_status, fhir_ids) == _comparable(json_status, json_ids)
    fhir_timeline = client.get(f"/v1/patients/{pid}/results").get_json()
    json_timeline = client.get(f"/v1/patients/{other}/results").get_json()
    assert _comparable(fhir_timeline, fhir_ids) == _comparable(json_timeline, json_ids)


def test_conditional_create_repeat_correct_withdraw_and_update(client, pid):
    register(client, pid)
    rid1 = rid()
    first = post(
        client, "/fhir/Observation", observation(pid, rid1), **{"If-None-Exist": f"identifier={rid1}"}
    )
    assert first.status_code == 201 and first.headers["Location"] == f"/fhir/Observation/{rid1}"
    OperationOutcome.model_validate(first.get_json())
    again = post(
        client, "/fhir/Observation", observation(pid, rid1), **{"If-None-Exist": f"identifier=urn:lab|{rid1}"}
    )
    assert again.status_code == 200 and "nothing was written" in again.get_json()["issue"][0]["diagnostics"]
    assert post(client, "/fhir/Observation", observation(pid, rid1)).status_code == 200  # a plain repeat

    other_final = observation(pid, rid1, component=[comp("ABL1-COPIES", 100000), comp("BCRABL1-COPIES", 7)])
    conflict = post(client, "/fhir/Observation", other_final)
    assert conflict.status_code == 409 and conflict.mimetype == FHIR
    issue = conflict.get_json()["issue"][0]
    assert issue["code"] == "conflict" and issue["expression"] == ["Observation.identifier[0].value"]

    corrected = post(client, "/fhir/Observation", {**other_final, "status": "corrected"})
    assert corrected.status_code == 200 and "replaced" in corrected.get_json()["issue"][0]["diagnostics"]
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    [stored] = timeline(client, pid)
    assert stored["bcr_abl1_copies"] == 7 and stored["status"] == "corrected"

    unsupported = post(
        client, "/fhir/Observation", observation(pid, rid1), **{"If-None-Exist": f"patient={pid}"}
    )
    assert unsupported.status_code == 400 and unsupported.get_json()["issue"][0]["code"] == "not-supported"

    # Conditional update: creates, then updates (amended), by identifier.
    rid2 = rid()
    url = f"/fhir/Observation?identifier=urn:lab|{rid2}"
    put = client.put(url, json=observation(pid, rid2), headers={"Content-Type": FHIR})
    assert put.status_code == 201
    amended = observation(
        pid, rid2, status="amended", component=[comp("ABL1-COPIES", 1e5), comp("BCRABL1-COPIES", 2)]
    )
    assert client.put(url, json=amended, headers={"Content-Type": FHIR}).status_code == 200

    withdrawn = post(client, "/fhir/Observation", observation(pid, rid1, status="entered-in-error"))
    assert withdrawn.status_code == 200 and "withdrawn" in withdrawn.get_json()["issue"][0]["diagnostics"]
    status = wait_status(client, pid, lambda d: d["results_count"] == 1 and d["results_withdrawn"] == 1)
    assert status["latest_result"]["level"] == "MR4.5"  # 2 copies in 100,000: 0.002 %
    read = client.get(f"/fhir/Observation/{rid1}").get_json()
    assert read["status"] == "entered-in-error" and "interpretation" not in read


def test_a_transaction_is_all_or_nothing(client, r, pid):
    register(client, pid)
    good, bad = observation(pid, rid()), observation(pid, rid())
    bad["valueQuantity"] = {"value": 0.1, "unit": "%", "comparator": ">"}
    refused = post(client, "/fhir", bundle("transaction", good, bad))
    assert refused.status_code == 422 and refused.mimetype == FHIR
    assert refused.get_json()["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.valueQuantity.comparator"
    ]
    nobody = observation(f"{pid}-nobody", rid())
    unknown = post(client, "/fhir", bundle("transaction", good, nobody))
    assert unknown.status_code == 422
    assert unknown.get_json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject"]
    invalid = post(client, "/fhir", bundle("transaction", good, {**good, "subject": {"reference": 7}}))
    assert invalid.status_code == 400
    assert invalid.get_json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert r.hlen(keys.results(pid)) == 0  # nothing of the refused transactions was stored
    assert client.get(f"/fhir/Observation/{good['identifier'][0]['value']}").status_code == 404


def test_a_batch_takes_each_entry_on_its_own(client, pid):
    register(client, pid)
    good, preliminary = observation(pid, rid()), observation(pid, rid(), status="preliminary")
    done = post(client, "/fhir", bundle("batch", good, preliminary, put=True))
    assert done.status_code == 200
    answer = done.get_json()
    Bundle.model_validate(answer)
    assert answer["type"] == "batch-response"
    first, second = (e["response"] for e in answer["entry"])
    assert first["status"] == "201 Created" and second["status"] == "422 Unprocessable Entity"
    assert second["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert "preliminary" in second["outcome"]["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Observation/{good['identifier'][0]['value']}").status_code == 200


def test_search_and_read_show_the_service_scoring(client, pid):
    register(client, pid)
    ids = [rid() for _ in range(3)]
    resources = [
        observation(
            pid, ids[0], "2023-12-01", component=[comp("ABL1-COPIES", 100000), comp("BCRABL1-COPIES", 500)]
        ),
        observation(pid, ids[1], "2024-02-01"),
        observation(
            pid,
            ids[2],
            "2024-04-01",
            valueQuantity={"value": 0.001, "comparator": "<", "unit": "%"},
            component=None,
        ),
    ]
    resources[2] = {k: v for k, v in resources[2].items() if v is not None}
    assert post(client, "/fhir", bundle("transaction", *resources)).status_code == 200
    wait_status(client, pid, lambda d: d["results_count"] == 3)

    found = client.get(f"/fhir/Observation?patient={pid}")
    assert found.status_code == 200 and found.mimetype == FHIR
    doc = found.get_json()
    Bundle.model_validate(doc)
    assert doc["type"] == "searchset" and doc["total"] == 3
    levels = [e["resource"]["interpretation"][0] for e in doc["entry"]]
    assert [lv["text"] for lv in levels] == ["MR2", "MMR", "MMR"]
    assert all(lv["coding"][0]["system"] == RESPONSE for lv in levels)
    below = doc["entry"][2]["resource"]
    assert below["valueQuantity"]["comparator"] == "<" and below["valueQuantity"]["value"] == 0.001
    assert below["interpretation"][1]["coding"][0]["code"] == "ND"

    dated = client.get(
        f"/fhir/Observation?patient=Patient/{pid}&date=ge2024-01-01&date=lt2024-04-01"
    ).get_json()
    assert [e["resource"]["id"] for e in dated["entry"]] == [ids[1]]
    coded = client.get(f"/fhir/Observation?patient={pid}&code=http://loinc.org|69380-4&_count=2").get_json()
    assert coded["total"] == 3 and len(coded["entry"]) == 2
    assert client.get(f"/fhir/Observation?patient={pid}&code=1234-5").get_json()["total"] == 0
    assert client.get(f"/fhir/Observation?patient={pid}&date=2024-3").status_code == 400
    assert client.get("/fhir/Observation").status_code == 400

    read = client.get(f"/fhir/Observation/{ids[1]}")
    assert read.status_code == 200 and read.get_json()["interpretation"][0]["text"] == "MMR"
    missing = client.get(f"/fhir/Observation/{rid()}")
    assert missing.status_code == 404 and missing.get_json()["issue"][0]["code"] == "not-found"


def test_auth_media_type_and_metadata(client, pid):
    meta = client.get("/fhir/metadata", headers={"Authorization": ""})
    assert meta.status_code == 200 and meta.mimetype == FHIR
    CapabilityStatement.model_validate(meta.get_json())

    none = client.get(f"/fhir/Observation?patient={pid}", headers={"Authorization": ""})
    assert none.status_code == 401 and none.mimetype == FHIR and none.headers["WWW-Authenticate"]
    OperationOutcome.model_validate(none.get_json())
    assert none.get_json()["issue"][0]["code"] == "login"
    reader = {"Authorization": f"Bearer {next(k for k, v in SCOPED_KEYS.items() if v == ['status:read'])}"}
    forbidden = post(client, "/fhir/Observation", observation(pid, rid()), **reader)
    assert forbidden.status_code == 403 and forbidden.get_json()["issue"][0]["code"] == "forbidden"

    text = client.post("/fhir/Observation", data="x", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.mimetype == FHIR
    broken = client.post("/fhir", data=b'{"resourceType": ', headers={"Content-Type": FHIR})
    assert broken.status_code == 400 and broken.mimetype == FHIR
    assert client.get("/fhir/Patient/x").status_code == 404


def _unchanged(r, pid: str):
    """What a write that writes nothing leaves as it was: the stored results, the version, the audit."""
    return r.hgetall(keys.results(pid)), r.get(keys.version(pid)), r.xlen(keys.AUDIT)


def test_a_conditional_create_with_a_match_writes_nothing(client, r, pid):
    """http://hl7.org/fhir/R4/http.html#ccreate: one match -> 200, the POST ignored, whatever its status."""
    register(client, pid)
    rid1, other = rid(), rid()
    assert (
        post(
            client, "/fhir", bundle("transaction", observation(pid, rid1), observation(pid, other))
        ).status_code
        == 200
    )
    before = _unchanged(r, pid)
    changed = [comp("ABL1-COPIES", 100000), comp("BCRABL1-COPIES", 7)]
    for status in ("corrected", "entered-in-error", "final", "amended"):
        sent = observation(pid, rid1, status=status, component=changed)
        answer = post(client, "/fhir/Observation", sent, **{"If-None-Exist": f"identifier=urn:lab|{rid1}"})
        assert answer.status_code == 200, (status, answer.get_json())
        assert "nothing was written" in answer.get_json()["issue"][0]["diagnostics"]
        assert answer.headers["Location"] == f"/fhir/Observation/{rid1}"
    # Criteria naming another stored result: evaluated, matched, nothing written (the new one neither).
    new = rid()
    named = post(
        client, "/fhir/Observation", observation(pid, new), **{"If-None-Exist": f"identifier={other}"}
    )
    assert named.status_code == 200 and client.get(f"/fhir/Observation/{new}").status_code == 404
    shown = post(
        client,
        "/fhir/Observation",
        observation(pid, rid1, status="corrected", component=changed),
        **{"If-None-Exist": f"identifier={rid1}", "Prefer": "return=representation"},
    )
    assert shown.status_code == 200 and shown.get_json()["resourceType"] == "Observation"
    assert shown.get_json()["id"] == rid1 and shown.get_json()["status"] == "final"
    corrected = observation(pid, rid1, status="corrected", component=changed)
    entry = {
        "resource": corrected,
        "request": {"method": "POST", "url": "Observation", "ifNoneExist": f"identifier={rid1}"},
    }
    for kind in ("batch", "transaction"):
        answer = post(client, "/fhir", {"resourceType": "Bundle", "type": kind, "entry": [entry]}).get_json()
        assert answer["entry"][0]["response"]["status"] == "200 OK", answer
        assert answer["entry"][0]["response"]["location"] == f"Observation/{rid1}"
    assert _unchanged(r, pid) == before  # byte-identical, no new version, no audit entry

    # No match: created. No match but the resource's own accession stored: 409, not replaced.
    created = post(
        client, "/fhir/Observation", observation(pid, new), **{"If-None-Exist": f"identifier={rid()}"}
    )
    assert created.status_code == 201 and created.headers["Location"] == f"/fhir/Observation/{new}"
    before = _unchanged(r, pid)
    over = post(client, "/fhir/Observation", corrected, **{"If-None-Exist": f"identifier={rid()}"})
    assert over.status_code == 409 and over.get_json()["issue"][0]["code"] == "conflict"
    assert _unchanged(r, pid) == before
    # A plain POST (no criteria) still replaces, as the JSON API does.
    replaced = post(client, "/fhir/Observation", corrected)
    assert replaced.status_code == 200 and "replaced" in replaced.get_json()["issue"][0]["diagnostics"]


def test_a_batch_answers_each_unsupported_entry_on_its_own(client, pid):
    """http://hl7.org/fhir/R4/http.html#brules: a bad entry is its own 400; a transaction is refused whole."""
    register(client, pid)
    good = observation(pid, rid())
    entries = [
        {"resource": good, "request": {"method": "POST", "url": "http://ehr.example/fhir/Observation"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": f"Observation/{rid()}"}},
        {"request": {"method": "GET", "url": f"Observation?patient={pid}"}},
    ]
    done = post(client, "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert done.status_code == 200, done.get_json()
    statuses = [e["response"]["status"] for e in done.get_json()["entry"]]
    assert statuses == ["201 Created"] + ["400 Bad Request"] * 3
    outcome = done.get_json()["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].request"]
    whole = post(client, "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert whole.status_code == 400
    assert [i["expression"] for i in whole.get_json()["issue"]] == [
        [f"Bundle.entry[{i}].request"] for i in (1, 2, 3)
    ]


def test_update_by_id_and_formats(client, pid):
    register(client, pid)
    one = rid()
    url = f"/fhir/Observation/{one}"
    # PUT Observation/<id>: creates, then replaces; the identifier must be the id.
    assert client.put(url, json=observation(pid, one), headers={"Content-Type": FHIR}).status_code == 201
    amended = observation(
        pid, one, status="amended", component=[comp("ABL1-COPIES", 1e5), comp("BCRABL1-COPIES", 9)]
    )
    assert client.put(url, json=amended, headers={"Content-Type": FHIR}).status_code == 200
    other = client.put(url, json=observation(pid, rid()), headers={"Content-Type": FHIR})
    assert other.status_code == 400 and other.get_json()["resourceType"] == "OperationOutcome"
    wrong_id = client.put(url, json={**observation(pid, one), "id": "else"}, headers={"Content-Type": FHIR})
    assert wrong_id.status_code == 400
    # JSON only: XML asked for is 406; _format=json is taken.
    assert client.get(f"{url}?_format=xml").status_code == 406
    xml = client.get(url, headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 406 and xml.get_json()["issue"][0]["code"] == "not-supported"
    assert client.get(f"{url}?_format=json").status_code == 200


def test_what_ehrs_send_is_taken(client, pid):
    """An absolute subject, DSTU2's media type, an absolute request.url, PUT ?identifier=&_format=json."""
    register(client, pid)
    two = rid()
    absolute = observation(pid, two, subject={"reference": f"http://ehr.example/fhir/Patient/{pid}"})
    dstu2 = client.post(
        "/fhir/Observation", data=json.dumps(absolute), headers={"Content-Type": "application/json+fhir"}
    )
    assert dstu2.status_code == 201, dstu2.get_json()
    assert client.get(f"/fhir/Observation/{two}").get_json()["subject"]["reference"] == f"Patient/{pid}"
    three = rid()
    put = client.put(
        f"/fhir/Observation?identifier={three}&_format=json",
        json=observation(pid, three),
        headers={"Content-Type": FHIR},
    )
    assert put.status_code == 201
    four, five = rid(), rid()
    entries = [
        {
            "resource": observation(pid, four),
            "request": {"method": "PUT", "url": f"{EHR}/Observation/{four}"},
        },
        {"resource": observation(pid, five), "request": {"method": "POST", "url": f"{EHR}/Observation"}},
        {
            "resource": observation(pid, rid()),
            "request": {"method": "PUT", "url": f"{EHR}/Observation/{four}"},
        },
    ]
    answer = post(client, "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": entries}).get_json()
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created", "201 Created", "400 Bad Request"]  # the last: not its own id


def _ids(doc: dict) -> list[str]:
    return [e["resource"]["id"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]


def test_search_pages_links_aliases_statuses_and_dates(client, pid):
    register(client, pid)
    days = ("2023-12-31", "2024-02-29", "2024-03-01", "2024-03-31T23:30:00+02:00", "2024-04-01")
    ids = [f"{pid}-{i}" for i in range(len(days))]
    resources = [observation(pid, i, d) for i, d in zip(ids, days, strict=True)]
    assert post(client, "/fhir", bundle("transaction", *resources)).status_code == 200
    withdrawn = observation(pid, ids[1], "2024-02-29", status="entered-in-error")
    assert post(client, "/fhir/Observation", withdrawn).status_code == 200
    wait_status(client, pid, lambda d: d["results_count"] == 4)

    def found(query: str) -> dict:
        answer = client.get(f"/fhir/Observation?{query}")
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    # Paging: _count with more matches gives next (by _offset); the self link shows what was used.
    page = found(f"patient={pid}&_count=2&foo=bar")
    assert _ids(page) == ids[:2] and page["total"] == 5
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert "foo" not in links["self"] and "_count=2" in links["self"]
    following = found(links["next"].split("?", 1)[1])
    assert _ids(following) == ids[2:4]
    assert {link["relation"] for link in following["link"]} == {"self", "first", "previous", "next"}
    last = found({link["relation"]: link["url"] for link in following["link"]}["next"].split("?", 1)[1])
    assert _ids(last) == ids[4:] and "next" not in {link["relation"] for link in last["link"]}
    # status; subject as an alias of patient (two different patients: nothing); an absolute patient URL.
    assert _ids(found(f"patient={pid}&status=entered-in-error")) == [ids[1]]
    assert _ids(found(f"patient={pid}&status=final,corrected")) == ids[:1] + ids[2:]
    assert _ids(found(f"subject=Patient/{pid}&date=2024-03-01")) == [ids[2]]
    assert found(f"patient={pid}&subject=Patient/{pid}-B")["total"] == 0
    # identifier: matched on the value (the system the lab sent is not stored)
    assert _ids(found(f"patient={pid}&identifier=urn:other|{ids[2]},{ids[4]}")) == [ids[2], ids[4]]
    assert found(f"patient=http://ehr.example/fhir/Patient/{pid}")["total"] == 5
    # Dates: partial dates are ranges; sa, eb, ne; a dateTime is compared with the day of collection.
    assert _ids(found(f"patient={pid}&date=2024-03")) == ids[2:4]
    assert _ids(found(f"patient={pid}&date=2024")) == ids[1:]
    assert _ids(found(f"patient={pid}&date=sa2024-03-01")) == ids[3:]
    assert _ids(found(f"patient={pid}&date=eb2024-03")) == ids[:2]
    assert _ids(found(f"patient={pid}&date=ne2024-03")) == [ids[0], ids[1], ids[4]]
    assert _ids(found(f"patient={pid}&date=ge2024-03-01T12:00:00Z")) == ids[2:]
    assert _ids(found(f"patient={pid}&date=lt2024-03-01T00:00:00Z")) == ids[:2]
    assert client.get(f"/fhir/Observation?patient={pid}&date=2024-13").status_code == 400


def test_the_readme_example_is_answered_as_the_readme_says(client):
    """The README's transaction Bundle, as written (fresh ids only), and the search it shows next."""
    from tests.procs import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## FHIR R4 from and to the EHR") :]
    start = section.index("curl -s -X POST localhost:8000/fhir")
    body = section[section.index("-d '", start) + 4 : section.index("}'\n", start) + 1]
    said = "\n".join(
        line.removeprefix("# ")
        for line in section[start : section.index("\n\n", start)].splitlines()[1:]
        if line.startswith("# ") and not line.startswith("# ->") and not line.startswith("# The")
    )
    run = uuid.uuid4().hex[:8]
    pid, accession = f"P-{run}", f"LAB-{run}"
    register(client, pid)
    text = body.replace("P-0001", pid).replace("LAB-2024-000124", accession)
    resp = client.post("/fhir", data=text, headers={"Content-Type": FHIR})
    assert resp.status_code == 200, resp.get_json()
    expected = json.loads(said.replace("LAB-2024-000124", accession))
    got = resp.get_json()
    task = got["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert task.startswith(f"result {accession} created (recomputation /v1/tasks/")
    expected["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"] = task
    assert got == expected, json.dumps(got, indent=1)
    wait_status(client, pid, lambda d: d["results_count"] == 1)
    found = client.get(f"/fhir/Observation?patient={pid}&date=ge2024-01-01&_count=20").get_json()
    [entry] = [e for e in found["entry"] if e.get("search", {}).get("mode") == "match"]
    coding = entry["resource"]["interpretation"][0]["coding"][0]
    assert coding["code"] == "MR4.5" and entry["resource"]["valueQuantity"]["comparator"] == "<"


def test_a_result_is_read_before_any_recompute(own_redis):
    """No worker on this Redis: the patient's timeline was never computed, yet FHIR read and search find
    the stored result, scored on read by the worker's function (a door never waits for the worker)."""
    from services.api import create_app
    from shared.config import load_settings

    app = create_app(load_settings())
    fresh = app.test_client()
    pid, accession = "P-NO-WORKER", rid()
    assert fresh.put(f"/v1/patients/{pid}", json={"cohorts": []}).status_code == 201
    assert post(fresh, "/fhir/Observation", observation(pid, accession)).status_code == 201
    read = fresh.get(f"/fhir/Observation/{accession}")
    assert read.status_code == 200, read.get_json()
    assert read.get_json()["interpretation"][0]["coding"][0]["code"] == "MMR"  # 50 in 100,000 ABL1
    found = fresh.get(f"/fhir/Observation?patient={pid}").get_json()
    assert [
        e["resource"]["id"] for e in found["entry"] if e["resource"]["resourceType"] == "Observation"
    ] == [accession]
