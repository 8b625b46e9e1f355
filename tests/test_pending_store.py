"""The pending flag in the store's Lua scripts (shared.store, "pending"), against the real test Redis.

These run on their own Redis database (not the one the session's worker serves), so no worker or
sweeper recomputes anything behind the test's back: the test plays the worker with the same calls
the tasks make.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis

from shared import cohort_store, cohorts, documents, keys, store, work
from shared.schemas import AssayResultSchema, EventSchema
from tests.support import result

DB = 13  # the worker and the API use database 0


@pytest.fixture
def rs(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB}")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def cid() -> str:
    return f"C-{uuid.uuid4().hex[:8]}"


AUDIT = {"who": "tests"}


def register(rs: redis.Redis, pid: str, cohort_ids: list[str], **fields) -> None:
    doc = {"patient_id": pid, "cohorts": cohort_ids, "enrolled_on": "2023-01-10", "tki": "imatinib",
           "tki_started_on": "2019-06-01", "dose_mg": 400, **fields}  # fmt: skip
    store.register_patient(rs, pid, doc, AUDIT)


def post(rs: redis.Redis, *docs: dict) -> store.WriteOutcome:
    return store.store_results(rs, AssayResultSchema(many=True).load(docs), AUDIT)


def add_event(rs: redis.Redis, pid: str, day: str) -> store.WriteOutcome:
    """An event before enrolment: a write (the status's input) that the cohort record ignores."""
    return store.add_events(rs, pid, [EventSchema().load({"type": "add_on_started", "date": day})], AUDIT)


def recompute(rs: redis.Redis, pid: str, data: store.PatientData | None = None) -> int:
    """What recompute_patient does; ``data`` may be an older snapshot (a worker overtaken by a write)."""
    data = data or store.load_patient(rs, pid)
    current, _ = store.commit_status(rs, data, *documents.patient_documents(data))
    return current


def refresh(rs: redis.Redis, cohort_id: str) -> None:
    """What refresh_cohort does."""
    snap = cohort_store.load_cohort(rs, cohort_id)
    data = cohorts.cohort_data(snap.records, snap.definition)
    doc, curve = documents.cohort_documents(snap, data)
    cohort_store.commit_cohort(rs, cohort_id, snap.version, doc, cohort_store.encode_arrays(data, curve))


def pending(rs: redis.Redis, key: str) -> bool:
    raw = rs.get(key)
    assert raw is not None, key
    if key.endswith(":timeline"):
        # Stored as its envelope (the flag first, flipped in place) and classifications, built on read:
        # the document read says what the stored flag says.
        pid = key.split("{")[1].split("}")[0]
        built = orjson.loads(store.read_timeline(rs, pid))["pending"]
        assert raw.startswith(store.PENDING_TRUE if built else store.PENDING_FALSE), key
        return built
    return orjson.loads(raw)["pending"]  # the stored bytes stay valid JSON either way


def settled_patient(rs: redis.Redis, pid: str, cohort_ids: list[str]) -> None:
    """Registered, computed and in its cohorts' statistics, with nothing pending."""
    register(rs, pid, cohort_ids)
    post(rs, result(pid, collected_at="2023-02-01", bcr_abl1_copies=40))
    recompute(rs, pid)
    for c in cohort_ids:
        refresh(rs, c)
        assert not pending(rs, keys.cohort_stats(c))
    assert not pending(rs, keys.status(pid)) and not pending(rs, keys.timeline(pid))


def test_documents_start_with_the_flag_and_flip_in_place(rs, pid, cid):
    """The flag is the first field, so the scripts find it at a fixed offset; the flipped bytes have
    the same length and stay valid JSON."""
    settled_patient(rs, pid, [cid])
    for key in (keys.status(pid), keys.timeline(pid), keys.cohort_stats(cid)):
        assert rs.get(key).startswith(store.PENDING_FALSE), key
    before = {k: rs.get(k) for k in (keys.status(pid), keys.cohort_stats(cid))}
    post(rs, result(pid, collected_at="2023-03-01", bcr_abl1_copies=30))
    for key, old in before.items():
        new = rs.get(key)
        assert new.startswith(store.PENDING_TRUE) and len(new) == len(old)
        assert new[len(store.PENDING_TRUE) :] == old[len(store.PENDING_FALSE) :]
        assert {**orjson.loads(new), "pending": False} == orjson.loads(old)


def test_lua_cohort_keys_are_the_key_schema(cid):
    """The scripts build a cohort's keys from head + id + tail + suffix: the same names as shared.keys."""
    head, tail = keys.cohort_key_parts()
    for suffix, name in (("awaiting", keys.cohort_awaiting), ("stats", keys.cohort_stats),
                         ("stats_v", keys.cohort_stats_version), ("version", keys.cohort_version),
                         ("members", keys.cohort_members), ("followup", keys.cohort_followup)):  # fmt: skip
        assert head + cid + tail + suffix == name(cid)


def test_a_result_marks_everything_it_makes_stale_until_reflected(rs, pid, cid):
    other = f"{pid}-other"
    settled_patient(rs, pid, [cid, f"{cid}-b"])
    settled_patient(rs, other, [cid])
    outcome = post(rs, result(pid, collected_at="2023-03-01", bcr_abl1_copies=2))
    # In the same script as the data: the patient's documents and both its cohorts.
    assert pending(rs, keys.status(pid)) and pending(rs, keys.timeline(pid))
    for c in (cid, f"{cid}-b"):
        assert pending(rs, keys.cohort_stats(c))
        assert rs.smembers(keys.cohort_awaiting(c)) == {pid.encode()}
    assert not pending(rs, keys.status(other))
    # The recompute reflects the write: the patient is settled, the cohorts' records changed (MR4.5).
    assert recompute(rs, pid) == outcome.versions[pid]
    assert not pending(rs, keys.status(pid)) and not pending(rs, keys.timeline(pid))
    for c in (cid, f"{cid}-b"):
        assert rs.scard(keys.cohort_awaiting(c)) == 0
        assert pending(rs, keys.cohort_stats(c)), "the statistics are behind the new record"
        refresh(rs, c)
        assert not pending(rs, keys.cohort_stats(c))


def test_an_unchanged_repost_marks_nothing(rs, pid, cid):
    register(rs, pid, [cid])
    same = result(pid, collected_at="2023-02-01", bcr_abl1_copies=40)
    post(rs, same)
    recompute(rs, pid)
    refresh(rs, cid)
    assert post(rs, same).outcomes == ["unchanged"]
    assert not pending(rs, keys.status(pid)) and not pending(rs, keys.cohort_stats(cid))
    assert rs.scard(keys.cohort_awaiting(cid)) == 0


def test_a_recompute_overtaken_by_a_write_stores_pending(rs, pid, cid):
    settled_patient(rs, pid, [cid])
    post(rs, result(pid, collected_at="2023-03-01", bcr_abl1_copies=30))
    old = store.load_patient(rs, pid)
    post(rs, result(pid, collected_at="2023-04-01", bcr_abl1_copies=20))  # while the worker computes
    assert recompute(rs, pid, old) == old.version + 1
    status = orjson.loads(rs.get(keys.status(pid)))
    assert status["pending"] is True and status["data_version"] == old.version
    assert pending(rs, keys.timeline(pid))
    assert rs.sismember(keys.cohort_awaiting(cid), pid), "still awaiting the newer write"
    refresh(rs, cid)  # a refresh meanwhile: of the current cohort version, but a member awaits
    assert pending(rs, keys.cohort_stats(cid))
    recompute(rs, pid)
    assert not pending(rs, keys.status(pid)) and rs.scard(keys.cohort_awaiting(cid)) == 0
    refresh(rs, cid)
    assert not pending(rs, keys.cohort_stats(cid))


def test_a_write_that_leaves_the_record_unchanged_settles_the_cohort_without_a_refresh(rs, pid, cid):
    """An event before enrolment changes the status's inputs but not the cohort's follow-up record:
    no refresh follows, so the recompute itself says the statistics are current again."""
    settled_patient(rs, pid, [cid])
    refreshes = rs.get(keys.cohort_refreshes(cid))
    outcome = add_event(rs, pid, "2022-05-01")
    assert outcome.versions[pid] == int(rs.get(keys.version(pid)))
    assert pending(rs, keys.status(pid)) and pending(rs, keys.cohort_stats(cid))
    version = rs.get(keys.cohort_version(cid))
    recompute(rs, pid)
    assert rs.get(keys.cohort_version(cid)) == version, "the record did not change"
    assert not pending(rs, keys.status(pid)) and not pending(rs, keys.cohort_stats(cid))
    assert rs.get(keys.cohort_refreshes(cid)) == refreshes


def test_a_cohort_stays_pending_while_another_member_awaits(rs, pid, cid):
    a, b = f"{pid}-a", f"{pid}-b"
    settled_patient(rs, a, [cid])
    settled_patient(rs, b, [cid])
    add_event(rs, a, "2022-05-01")
    add_event(rs, b, "2022-05-02")
    recompute(rs, a)
    assert pending(rs, keys.cohort_stats(cid)), "b's write is not in the figures yet"
    recompute(rs, b)
    assert not pending(rs, keys.cohort_stats(cid))


def test_registration_changes(rs, pid, cid):
    stay, leave_unseen, leave_seen = cid, f"{cid}-x", f"{cid}-y"
    settled_patient(rs, f"{pid}-seen", [leave_seen])
    settled_patient(rs, f"{pid}-stay", [stay, leave_unseen])
    # A new patient in three cohorts, never computed: no record anywhere yet, awaiting in all three.
    register(rs, pid, [stay, leave_unseen])
    assert rs.sismember(keys.cohort_awaiting(leave_unseen), pid)
    assert pending(rs, keys.cohort_stats(stay)) and pending(rs, keys.cohort_stats(leave_unseen))
    # Leaving before any record: the cohort is clean again (its figures never included the patient).
    register(rs, pid, [stay, leave_seen])
    assert not rs.sismember(keys.cohort_awaiting(leave_unseen), pid)
    assert not pending(rs, keys.cohort_stats(leave_unseen))
    assert pending(rs, keys.cohort_stats(stay)) and pending(rs, keys.cohort_stats(leave_seen))
    recompute(rs, pid)
    refresh(rs, leave_seen)
    assert not pending(rs, keys.cohort_stats(leave_seen))
    # Leaving a cohort whose figures include the patient: they are stale until the refresh.
    register(rs, pid, [stay])
    assert not rs.sismember(keys.cohort_awaiting(leave_seen), pid)
    assert pending(rs, keys.cohort_stats(leave_seen))
    refresh(rs, leave_seen)
    assert not pending(rs, keys.cohort_stats(leave_seen))
    assert rs.smembers(keys.cohort_awaiting(stay)) == {pid.encode()}


def test_a_definition_change_marks_the_statistics_pending(rs, pid, cid):
    settled_patient(rs, pid, [cid])
    assert cohort_store.define_cohort(rs, cid, {"endpoint": "MR4"}, AUDIT)[0] == "created"
    assert pending(rs, keys.cohort_stats(cid))
    refresh(rs, cid)
    assert not pending(rs, keys.cohort_stats(cid))
    assert cohort_store.define_cohort(rs, cid, {"endpoint": "MR4"}, AUDIT)[0] == "unchanged"
    assert not pending(rs, keys.cohort_stats(cid))


def test_a_refresh_overtaken_by_a_new_version_stores_pending(rs, pid, cid):
    settled_patient(rs, pid, [cid])
    snap = cohort_store.load_cohort(rs, cid)
    cohort_store.define_cohort(rs, cid, {"endpoint": "MR4"}, AUDIT)  # while the refresh computes
    data = cohorts.cohort_data(snap.records, snap.definition)
    doc, curve = documents.cohort_documents(snap, data)
    cohort_store.commit_cohort(rs, cid, snap.version, doc, cohort_store.encode_arrays(data, curve))
    assert pending(rs, keys.cohort_stats(cid))
    # The curve and statistics at other horizons come from the same refresh: same flag.
    _, stored_curve, _ = cohort_store.read_data(rs, cid)
    assert stored_curve["pending"] is True


def test_a_dead_lettered_patient_keeps_its_cohorts_pending(rs, pid, cid):
    settled_patient(rs, pid, [cid])
    post(rs, result(pid, collected_at="2023-03-01", bcr_abl1_copies=30))
    work.dead_letter(rs, "patient", pid, "recompute_patient", "ValueError: boom")
    refresh(rs, cid)
    assert pending(rs, keys.cohort_stats(cid)) and pending(rs, keys.status(pid))
    assert work.retry_dead_letter(rs, "patient", pid, AUDIT)
    recompute(rs, pid)
    refresh(rs, cid)
    assert not pending(rs, keys.cohort_stats(cid)) and not pending(rs, keys.status(pid))


def test_a_rules_change_marks_every_document_pending_whatever_its_layout(rs, cid) -> None:
    """A deploy that changes the rules recomputes everything (rules_fingerprint): until then every
    stored document says pending, including one stored by a release whose flag was not first."""
    register(rs, "P-new", [cid])
    register(rs, "P-old", [cid])
    post(rs, result("P-new"), result("P-old"))
    recompute(rs, "P-new")
    recompute(rs, "P-old")
    old_layout = {"patient_id": "P-old", "computed_at": "2026-01-01T00:00:00+00:00", "data_version": 2,
                  "pending": False, "results_count": 1}  # fmt: skip
    rs.set(keys.status("P-old"), orjson.dumps(old_layout))
    assert orjson.loads(rs.get(keys.status("P-new")))["pending"] is False
    work.recompute_all_if_rules_changed(rs, "fingerprint-1")
    assert work.recompute_all_if_rules_changed(rs, "fingerprint-2") == 0  # already dirty
    for key in (keys.status("P-new"), keys.timeline("P-new"), keys.status("P-old")):
        assert pending(rs, key), key
    assert len(rs.get(keys.status("P-old"))) == len(orjson.dumps(old_layout))  # flipped in place
    recompute(rs, "P-new")
    assert orjson.loads(rs.get(keys.status("P-new")))["pending"] is False
    assert rs.zscore(keys.DIRTY_PATIENTS, "P-new") is None


def test_a_worklist_row_says_pending_while_its_status_does(rs, cid) -> None:
    """The worklist row is as old as the stored status: it says so until the write is reflected."""
    from datetime import date

    from shared import worklist

    def row() -> dict:
        [item] = worklist.query(rs, worklist.Query(cohort=cid), date(2025, 1, 1))["patients"]
        return item

    register(rs, "P-1", [cid])
    assert row()["pending"] is True and "response_level" not in row()  # no status yet
    post(rs, result("P-1", collected_at="2024-03-01", bcr_abl1_copies=500))
    recompute(rs, "P-1")
    assert row()["pending"] is False and row()["response_level"] == "MR2"
    post(rs, result("P-1", collected_at="2024-04-01", bcr_abl1_copies=50))
    assert row()["pending"] is True and row()["response_level"] == "MR2"  # the old row, said so
    assert worklist.query(rs, worklist.Query(cohort=cid, level="MR2"), date(2025, 1, 1))["patients"]
    recompute(rs, "P-1")
    assert row()["pending"] is False and row()["response_level"] == "MMR"
    # The level index moved with the status: the row no longer lists under MR2.
    assert worklist.query(rs, worklist.Query(cohort=cid, level="MR2"), date(2025, 1, 1))["patients"] == []


def test_an_unfiltered_worklist_pages_from_the_id_index(rs) -> None:
    """Without a filter, a page is read from the id index from its cursor, not from every patient; a
    deployment that added the index fills it at the rules check, and the set serves until then."""
    from datetime import date

    from shared import worklist

    def pages() -> list[list[str]]:
        out, after = [], None
        for _ in range(10):
            body = worklist.query(rs, worklist.Query(after=after, limit=2), date(2025, 1, 1))
            out.append([p["patient_id"] for p in body["patients"]])
            if body["next_cursor"] is None:
                return out
            after = worklist.decode_cursor(body["next_cursor"])
        raise AssertionError("cursor never ended")

    ids = [f"P-{i}" for i in (3, 1, 5, 2, 4)]
    for pid in ids:
        register(rs, pid, [])
    assert pages() == [["P-1", "P-2"], ["P-3", "P-4"], ["P-5"]]
    rs.srem(keys.PATIENTS, "P-5")  # served from the index, not the set: P-5 stays listed
    assert pages()[-1] == ["P-5"]
    rs.sadd(keys.PATIENTS, "P-5")
    rs.delete(keys.WORKLIST_IDS)  # as before the deploy: the set serves
    assert pages() == [["P-1", "P-2"], ["P-3", "P-4"], ["P-5"]]
    work.recompute_all_if_rules_changed(rs, "fingerprint-with-the-index")
    assert rs.zcard(keys.WORKLIST_IDS) == 5
