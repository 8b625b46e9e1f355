"""The clinical picture through the API (real Redis, real Celery worker): TKI names at the door, coded
reasons, lines of therapy, failure events and actions in the stored status, and data stored before the
vocabulary (clinical-rules.md s.7-10)."""

from __future__ import annotations

import orjson

from shared import keys
from tests.support import register, result, wait_status


def test_unknown_tki_and_free_text_reason_are_refused_naming_the_field(client, pid) -> None:
    resp = client.put(f"/v1/patients/{pid}", json={"cohorts": [], "tki": "imatanib"})
    assert resp.status_code == 422
    [error] = resp.get_json()["errors"]
    assert error["pointer"] == "/tki" and "Glivec" in error["detail"] and "asciminib" in error["detail"]
    register(client, pid, tki="Glivec")
    for item, pointer in [
        ({"type": "tki_changed", "date": "2020-01-01", "tki": "Tasigna", "reason": "rash"}, "/1/reason"),
        ({"type": "resistance_mutation", "date": "2020-02-01"}, "/1/mutation"),
        ({"type": "tki_changed", "date": "2020-01-01", "tki": "Tasigna", "phase": "blast"}, "/1/phase"),
    ]:
        ok = {"type": "add_on_started", "date": "2020-01-01"}
        bad = client.post(f"/v1/patients/{pid}/events", json=[ok, item])
        assert bad.status_code == 422
        assert [e["pointer"] for e in bad.get_json()["errors"]] == [pointer]


def test_brand_lines_failures_and_actions_reach_the_status(client, pid) -> None:
    reg = register(client, pid, tki="Glivec 400 mg", tki_started_on="2019-06-01")
    assert reg["patient"]["tki"] == "imatinib" and reg["patient"]["tki_product"] == "Glivec 400 mg"
    events = [
        # Brand to generic: no change of drug, line or dose history (ELN 2020).
        {"type": "tki_changed", "date": "2020-01-01", "tki": "imatinib Teva"},
        {"type": "tki_changed", "date": "2021-01-01", "tki": "Tasigna", "dose_mg": 600,
         "reason": "Intolerance", "reason_text": "QT prolongation"},
        {"type": "resistance_mutation", "date": "2022-01-01", "mutation": "T315I"},
    ]  # fmt: skip
    assert client.post(f"/v1/patients/{pid}/events", json=events).status_code == 202
    client.post("/v1/assay-results", json=[result(pid, collected_at="2022-01-05", bcr_abl1_copies=50)])
    s = wait_status(client, pid, lambda d: d["results_count"] == 1 and len(d["events"]) == 3)
    therapy = s["therapy"]
    assert therapy["line"] == 2 and therapy["current_tki_class"] == "second_generation"
    assert [c["kind"] for c in therapy["changes"]] == ["product", "drug"]
    assert therapy["changes"][1]["reason"] == "intolerance"
    assert therapy["changes"][1]["reason_text"] == "QT prolongation"
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is True
    assert s["eln_assessment"] == "failure" and s["eln_assessment_basis"]["type"] == "resistance_mutation"
    assert "T315I" in s["eln_failures"][0]["reason"]
    assert s["is_percent_result_id"] == s["latest_result"]["result_id"]
    assert s["next_sample_due"] == "2022-07-06"  # in MMR on TKI: + 182 days

    # A switch to ponatinib answers the mutation: the failure stays listed, no longer current.
    switch = {"type": "tki_changed", "date": "2022-01-20", "tki": "Iclusig", "reason": "resistance"}
    client.post(f"/v1/patients/{pid}/events", json=switch)
    s = wait_status(client, pid, lambda d: len(d["events"]) == 4)
    assert s["therapy"]["line"] == 3 and s["eln_failures"][0]["current"] is False
    assert s["tfr_eligibility"]["minimal"]["criteria"]["first_line_tki"]["met"] is False
    assert s["tfr_eligibility"]["minimal"]["criteria"]["no_prior_failure"]["met"] is False


def test_progression_ends_first_chronic_phase(client, pid) -> None:
    register(client, pid)
    client.post(
        f"/v1/patients/{pid}/events", json={"type": "progression", "date": "2023-05-01", "phase": "blast"}
    )
    s = wait_status(client, pid, lambda d: len(d["events"]) == 1)
    assert s["tfr_eligibility"]["mandatory"]["met"] is False
    assert s["eln_assessment"] == "failure"
    assert [a["code"] for a in s["actions"]] == ["mutation_analysis"]


def test_data_stored_before_the_vocabulary_is_flagged_not_lost(client, r, pid) -> None:
    """A registration stored with a name the vocabulary does not know is still computed: the name is
    listed in `unknown_tki` and treated as an unrecorded drug."""
    register(client, pid)
    raw = orjson.loads(r.get(keys.registration(pid)))
    r.set(keys.registration(pid), orjson.dumps({**raw, "tki": "sti571"}))
    client.post("/v1/assay-results", json=[result(pid, collected_at="2024-01-02")])
    s = wait_status(client, pid, lambda d: d["results_count"] == 1)
    assert s["unknown_tki"] == ["sti571"] and s["therapy"]["current_tki_class"] is None
    assert s["tfr_eligibility"]["minimal"]["criteria"]["tki_duration"]["met"] is not True


def test_undetectable_below_a_stated_limit_without_copies_is_never_deep(client, pid) -> None:
    """A result the lab reports only as `< 0.0032%` with no control copies (HL7 `<^0.0032`, FHIR `<`):
    stored, scored MMR at best (sensitivity unknown), and refused when mixed with a measurement."""
    register(client, pid)
    body = result(pid, "BELOW-1", collected_at="2024-02-01", is_percent_below=0.0032)
    for name in ("control_gene", "control_copies", "bcr_abl1_copies"):
        body.pop(name)
    assert client.post("/v1/assay-results", json=body).status_code == 202
    status = wait_status(client, pid, lambda d: d["latest_result"] is not None)
    latest = status["latest_result"]
    assert status["response_level"] == "MMR" and latest["level"] == "MMR"
    assert latest["sensitivity_known"] is False and latest["control_gene"] is None
    assert latest["upper_is_percent"] == 0.0032 and latest["detectable"] is False
    stored = client.get(f"/v1/patients/{pid}/results").get_json()
    [doc] = [d for d in stored["results"] if d["result_id"] == "BELOW-1"]
    assert doc["is_percent_below"] == 0.0032 and doc["control_copies"] is None
    mixed = result(pid, "BELOW-2", is_percent_below=0.0032)
    resp = client.post("/v1/assay-results", json=mixed)
    assert resp.status_code == 422
    pointers = {e["pointer"] for e in resp.get_json()["errors"]}
    assert pointers == {"/control_copies", "/bcr_abl1_copies"}
    # A measured result stored without the field hashes as before: a repost is unchanged, not a conflict.
    measured = result(pid, "MEASURED-1", collected_at="2024-03-01")
    assert client.post("/v1/assay-results", json=measured).status_code == 202
    again = client.post("/v1/assay-results", json={**measured, "is_percent_below": None})
    assert again.status_code == 202 and again.get_json()["accepted"][0]["outcome"] == "unchanged"
