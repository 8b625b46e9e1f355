"""POST /v1/hl7v2 through the real app, Redis and Celery worker: an ORU^R01 does what the JSON it
stands for does, and every refusal is an ACK naming the segment and field."""

from __future__ import annotations

import json
import uuid

from shared import keys
from shared.ops import audit_entries
from shared.result_codec import decode_result
from tests.conftest import SCOPED_KEYS
from tests.interop.hl7_messages import copies, oru, oru_groups
from tests.procs import ROOT
from tests.support import register, result, wait_status

ER7 = "x-application/hl7-v2+er7"
URL = "/v1/hl7v2"


def post(client, text: str, **kw):
    return client.post(URL, data=text.encode(), content_type=ER7, **kw)


def lines(resp) -> list[str]:
    return resp.get_data(as_text=True).strip("\r").split("\r")


def errors(resp) -> list[str]:
    return [line.split("|")[2] + " " + line.split("|")[4] for line in lines(resp) if line.startswith("ERR")]


def control() -> str:
    return f"M{uuid.uuid4().hex[:16]}"


_VOLATILE = {"computed_at"}


def _strip(value, names: dict[str, str]):
    """The document without its timestamps, with the door's own ids (patient, result) renamed alike."""
    text = json.dumps(value)
    for name, same in names.items():
        text = text.replace(name, same)
    doc = json.loads(text)
    return {k: v for k, v in doc.items() if k not in _VOLATILE}


def test_an_oru_changes_the_status_as_the_equivalent_json_does(client, r):
    by_json, by_hl7 = f"P-{uuid.uuid4().hex[:10]}", f"P-{uuid.uuid4().hex[:10]}"
    for pid in (by_json, by_hl7):
        register(client, pid)
    run = uuid.uuid4().hex[:8]
    docs = [
        result(by_json, f"J1-{run}", collected_at="2024-01-05", bcr_abl1_copies=50),
        result(by_json, f"J2-{run}", collected_at="2024-03-01T08:30:00+01:00", bcr_abl1_copies=0,
               control_gene="GUSB", control_copies=80000),
        {"result_id": f"J3-{run}", "patient_id": by_json, "collected_at": "2024-04-02",
         "is_percent_below": 0.0032},
        result(by_json, f"J4-{run}", collected_at="2024-05-02", bcr_abl1_copies=None, is_percent=0.02,
               conversion_factor=0.9),
    ]  # fmt: skip
    assert client.post("/v1/assay-results", json=docs).status_code == 202
    message = oru_groups(by_hl7, [
        (f"H1-{run}", "20240105", copies(50)),
        (f"H2-{run}", "20240301083000+0100", ["SN|69380-4^BCR-ABL1/ABL1 IS^LN||<^0.0032|%|||||F",
                                               "NM|GUSB-COPIES^GUSB copies^L||80000||||||F"]),
        (f"H3-{run}", "20240402", ["SN|69380-4^^LN||<^0.0032|%|||||F"]),
        (f"H4-{run}", "20240502", ["NM|69380-4^^LN||0.02|%|||||F", "NM|ABL1-COPIES^^L||100000||||||F",
                                   "NM|IS-CF^^L||0.9||||||F"]),
    ], control=control())  # fmt: skip
    resp = post(client, message)
    assert resp.status_code == 200 and resp.mimetype == ER7, resp.get_data(as_text=True)
    assert lines(resp)[1].startswith("MSA|AA|M")
    done = {p: wait_status(client, p, lambda d: d["results_count"] == 4) for p in (by_json, by_hl7)}
    names = {by_json: "P", by_hl7: "P", **{f"{d}{n}-{run}": f"R{n}" for d in "JH" for n in range(1, 5)}}
    assert _strip(done[by_json], names) == _strip(done[by_hl7], names)
    timelines = {p: client.get(f"/v1/patients/{p}/results").get_json() for p in (by_json, by_hl7)}
    assert _strip(timelines[by_json], names) == _strip(timelines[by_hl7], names)
    stored = {p: sorted((_strip(decode_result(v, p), names) for v in r.hvals(keys.results(p))),
                        key=lambda d: d["result_id"]) for p in (by_json, by_hl7)}  # fmt: skip
    assert stored[by_json] == stored[by_hl7]
    entry = next(e for e in audit_entries(r, 50, None) if f"H1-{run}" in e.get("result_ids", []))
    assert (entry["who"], entry["what"]) == ("tests", "POST /v1/hl7v2 ORU^R01")


def test_refusals_name_segment_and_field(client, pid):
    register(client, pid)
    bad = post(client, oru(pid, f"A-{pid}", copies(abl1=0), control=control()))
    assert bad.status_code == 422 and lines(bad)[1].startswith("MSA|AE|")
    assert errors(bad) == ["OBX^2^5 E"] and "control_copies" in lines(bad)[2]

    nobody = post(client, oru(f"nobody-{pid}", f"B-{pid}", copies(), control=control()))
    assert nobody.status_code == 422 and errors(nobody) == ["PID^1^3 E"]
    assert "|204^Unknown key identifier^HL70357|" in lines(nobody)[2]

    prelim = post(client, oru(pid, f"C-{pid}", copies(status="P"), control=control()))
    assert (
        prelim.status_code == 422 and errors(prelim) == ["OBX^1^11 E"] and "preliminary" in lines(prelim)[2]
    )

    assert post(client, oru(pid, f"D-{pid}", copies(50), control=control())).status_code == 200
    conflict = post(client, oru(pid, f"D-{pid}", copies(7), control=control()))
    assert conflict.status_code == 409 and errors(conflict) == ["OBR^1^3 E"]

    unmapped = post(client, oru(pid, f"E-{pid}", [*copies(), "NM|HB^Hb^99LAB||13||||||F"], control=control()))
    assert unmapped.status_code == 200 and lines(unmapped)[1].startswith("MSA|AA|")
    assert errors(unmapped) == ["OBX^3^3 W"]

    version = post(client, oru(pid, f"F-{pid}", copies(), control=control(), version="2.6"))
    assert version.status_code == 400 and lines(version)[1].startswith("MSA|AR|")
    garbage = client.post(URL, data=b"\x00garbage", content_type="text/plain")
    assert garbage.status_code == 400 and lines(garbage)[1] == "MSA|AR|" and garbage.mimetype == "text/plain"
    assert client.post(URL, json={"x": 1}).status_code == 415


def test_a_resent_message_gets_the_same_ack_and_stores_nothing_twice(client, r, pid):
    register(client, pid)
    text = oru(pid, f"R-{pid}", copies(), control=control())
    first, again = post(client, text), post(client, text)
    assert first.status_code == again.status_code == 200
    assert first.get_data() == again.get_data()
    entries = [
        f for _, f in r.xrevrange(keys.AUDIT, count=200) if f"R-{pid}".encode() in b"".join(f.values())
    ]
    assert len(entries) == 1
    assert r.hlen(keys.results(pid)) == 1
    other = post(client, text.replace("|50|", "|51|"))  # same MSH-10, other content
    assert other.status_code == 409 and errors(other) == ["MSH^1^10 E"]


def test_a_batch_answers_a_batch_of_acks(client, pid):
    register(client, pid)
    good = oru(pid, f"G-{pid}", copies(), control=control())
    bad = oru(pid, f"H-{pid}", copies(status="P"), control=control())
    resp = post(
        client, f"FHS|^~\\&|LAB||||||||F-{pid}\rBHS|^~\\&|LAB||||||||B-{pid}\r{good}{bad}BTS|2\rFTS|1\r"
    )
    assert resp.status_code == 422
    msa = [line.split("|")[1] for line in lines(resp) if line.startswith("MSA")]
    assert msa == ["AA", "AE"] and lines(resp)[0].startswith("FHS|")
    # FHS-12/BHS-12 of the ACK batch: the incoming FHS-11/BHS-11 (HL7 v2.5 section 2.10.3).
    assert lines(resp)[0].split("|")[11] == f"F-{pid}" and lines(resp)[1].split("|")[11] == f"B-{pid}"


def test_keys_and_scopes(client, pid):
    ident = control()
    text = oru(pid, f"K-{pid}", copies(), control=ident)
    anonymous = post(client, text, headers={"Authorization": ""})
    # Refused before the message is read, and still an ACK (not problem+json), naming its MSH-10.
    assert anonymous.status_code == 401 and anonymous.mimetype == ER7
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="cml"'
    assert lines(anonymous)[1] == f"MSA|AR|{ident}" and errors(anonymous) == [" E"]
    assert lines(anonymous)[2].split("|")[5].startswith("unauthorized^")
    reader = next(k for k, scopes in SCOPED_KEYS.items() if scopes == ["status:read"])
    forbidden = post(client, text, headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.status_code == 403 and forbidden.mimetype == ER7
    assert lines(forbidden)[1] == f"MSA|AR|{ident}" and "results:write" in lines(forbidden)[2]
    writer = next(k for k, scopes in SCOPED_KEYS.items() if scopes == ["results:write"])
    register(client, pid)
    assert post(client, text, headers={"Authorization": f"Bearer {writer}"}).status_code == 200


def test_the_readme_example_is_acknowledged_as_the_readme_says(client):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## HL7 v2 from the lab") :]
    example = section[section.index("```\nMSH") + 4 : section.index("```", section.index("```\nMSH") + 4)]
    register(client, "12345")
    run = uuid.uuid4().hex[:8]
    # Fresh ids each run: the test Redis outlives one test and result ids are global.
    text = example.replace("ACC-2024-0001", f"ACC-{run}").replace("MSG0001", f"MSG-{run}")
    resp = post(client, text)
    assert resp.status_code == 200 and lines(resp)[1] == f"MSA|AA|MSG-{run}"
    said = [line.removeprefix("# ") for line in section.splitlines() if line.startswith("# ERR")]
    assert [line.split("|")[:5] + line.split("|")[8:] for line in lines(resp)[2:]] == [
        line.split("|")[:5] + line.split("|")[8:] for line in said
    ]


def test_problems_before_the_handler_are_acks(client):
    wrong = client.post(URL, json={"message": "MSH"})
    assert wrong.status_code == 415 and wrong.mimetype == ER7 and lines(wrong)[1] == "MSA|AR|"
    assert lines(wrong)[2].split("|")[5].startswith("unsupported-media-type^") and ER7 in lines(wrong)[2]
    huge = post(client, oru("P", "A", copies(), control="BIG") + "NTE|" + "x" * (3 * 1024 * 1024))
    assert huge.status_code == 413 and huge.mimetype == ER7
    assert lines(huge)[1] == "MSA|AR|"  # an oversized body is not read, not even for MSH-10
    assert lines(huge)[2].split("|")[5].startswith("request-entity-too-large^")


def test_two_messages_in_one_body_are_rejected_and_nothing_stored(client, r, pid):
    register(client, pid)
    first, second = control(), control()
    body = oru(pid, f"T1-{pid}", copies(), control=first) + oru(pid, f"T2-{pid}", copies(), control=second)
    resp = post(client, body)
    assert resp.status_code == 400 and lines(resp)[1] == f"MSA|AR|{first}"
    assert errors(resp) == ["MSH^2 E"] and "one message per frame" in lines(resp)[2]
    assert r.hlen(keys.results(pid)) == 0
    assert [line for line in lines(resp) if line.startswith("MSA")] == [f"MSA|AR|{first}"]


def test_training_messages_are_not_stored(client, r, pid):
    register(client, pid)
    text = oru(pid, f"TR-{pid}", copies(), control=control()).replace("|P|2.5.1", "|T|2.5.1")
    resp = post(client, text)
    assert resp.status_code == 400 and lines(resp)[1].startswith("MSA|AR|")
    assert errors(resp) == ["MSH^1^11 E"] and "training/debugging messages are not stored" in lines(resp)[2]
    assert lines(resp)[0].split("|")[10] == "T" and r.hlen(keys.results(pid)) == 0


def test_a_retry_with_a_new_msh7_gets_the_first_ack(client, r, pid):
    register(client, pid)
    text = oru(pid, f"RT-{pid}", copies(), control=control())
    first = post(client, text)
    retry = post(client, text.replace("|20240301090000||", "|20240301091500||"))
    assert first.status_code == retry.status_code == 200 and first.get_data() == retry.get_data()
    assert r.hlen(keys.results(pid)) == 1


def test_the_ack_is_in_the_messages_charset(client, pid):
    register(client, pid)
    ident = control()
    text = oru(pid, f"CS-{pid}", [*copies(), "NM|HB^Hb \u20ac^99LAB||1||||||F"], control=ident)
    raw = text.replace("|2.5.1\r", "|2.5.1||||||8859/15\r").encode("iso-8859-15")
    resp = client.post(URL, data=raw, content_type=ER7)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == f"{ER7}; charset=iso-8859-15"
    assert b"Hb \xa4" in resp.get_data()
    ack = resp.get_data().decode("iso-8859-15").split("\r")
    assert ack[0].split("|")[17] == "8859/15" and ack[1] == f"MSA|AA|{ident}"
    other = client.post(URL, data=raw.replace(b"8859/15", b"8859/2"), content_type=ER7)
    assert other.status_code == 400 and errors(other) == ["MSH^1^18 E"]
