"""The timeline is stored as its classifications and built on read (shared/timelines.py): the document
read is, byte for byte, the one the recompute stored whole before (every stored result with
``withdrawn`` and its classification, in collection order, under the status's envelope), pending or
not, and a result replaced since the recompute is never shown with the classification of other content.
"""

from __future__ import annotations

import orjson

from shared import documents, keys, store, timelines
from shared.clinical.scored import WITHDRAWN_STATUS, score_result
from shared.clinical.timeline import collection_order
from shared.schemas import AssayResultSchema
from tests.support import result
from tests.test_pending_store import cid, post, recompute, register, rs  # noqa: F401


def whole_document(rs, pid: str) -> bytes:  # noqa: F811
    """The timeline as the release before stored it: built from the results and the stored envelope."""
    data = store.load_patient(rs, pid)
    status = orjson.loads(rs.get(keys.status(pid)))
    envelope = {k: status[k] for k in ("pending", "patient_id", "computed_at", "data_version")}
    ordered = sorted(data.results, key=lambda r: collection_order(r["collected_at"], r["result_id"]))
    entries = []
    for r in ordered:
        withdrawn = r.get("status") == WITHDRAWN_STATUS
        cls = None if withdrawn else score_result(r).classification.to_dict()
        entries.append({**r, "withdrawn": withdrawn, "classification": cls})
    return orjson.dumps({**envelope, "results": entries})


def test_the_timeline_read_is_the_document_stored_before(rs, pid, cid):  # noqa: F811
    register(rs, pid, [cid])
    docs = [
        result(pid, collected_at=f"2023-{m:02d}-01", bcr_abl1_copies=float(50 - 4 * m)) for m in range(1, 10)
    ]
    docs += [
        result(pid, collected_at="2023-05-01T10:30:00+02:00", bcr_abl1_copies=0.0, control_copies=120000.0),
        result(pid, collected_at="2023-06-01", status="entered-in-error"),
        result(
            pid, collected_at="2023-07-01", control_gene="GUSB", control_copies=250000.0, bcr_abl1_copies=3
        ),
    ]
    post(rs, *docs)
    recompute(rs, pid)
    stored = rs.get(keys.timeline(pid))
    assert stored.startswith(store.PENDING_FALSE) and len(stored) < len(whole_document(rs, pid)) / 4
    assert store.read_timeline(rs, pid) == whole_document(rs, pid)
    assert store.read_timeline(rs, pid) == whole_document(rs, pid)  # again, from the process's memo


def test_a_result_replaced_while_pending_shows_its_own_classification(rs, pid, cid):  # noqa: F811
    register(rs, pid, [cid])
    first = result(pid, collected_at="2023-02-01", bcr_abl1_copies=40.0, status="final")
    post(rs, first)
    recompute(rs, pid)
    post(rs, {**first, "bcr_abl1_copies": 2.0, "status": "amended"}, result(pid, collected_at="2023-03-01"))
    doc = orjson.loads(store.read_timeline(rs, pid))
    assert doc["pending"] is True
    [entry] = doc["results"]  # the new result is not in it yet: the timeline reflects data_version
    assert entry["bcr_abl1_copies"] == 2.0
    assert entry["classification"] == score_result(entry).classification.to_dict()
    recompute(rs, pid)
    assert store.read_timeline(rs, pid) == whole_document(rs, pid)


def test_stored_results_decode_to_their_canonical_json(rs, pid, cid):  # noqa: F811
    register(rs, pid, [cid])
    doc = result(pid, collected_at="2023-02-01", bcr_abl1_copies=40.0, lab="Lab é")
    post(rs, doc)
    raw = rs.hget(keys.results(pid), doc["result_id"])
    assert len(raw) < len(store.canonical(doc)) / 2
    assert orjson.dumps(store.decode_result(raw, pid)) == store.canonical(AssayResultSchema().load(doc))
    assert tuple(score_result(doc).classification.to_dict()) == timelines.FIELDS
    assert documents.rules_fingerprint()  # the stored layouts are part of the rules' fingerprint
