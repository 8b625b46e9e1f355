"""The write path's fast parts must answer exactly as the slow parts they stand in for: the result
fast path as AssayResultSchema (issue 11), the body parser's duplicate-key check as Python's parser,
and the batched task messages as Celery's own publish."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import random

import pytest

from shared.schemas import AssayResultSchema, ValidationError, fast_load_results

BASE = {
    "result_id": "R-1", "patient_id": "P-1", "collected_at": "2024-04-02", "control_gene": "ABL1",
    "control_copies": 100000.0, "bcr_abl1_copies": 3.2,
}  # fmt: skip
VARIANTS = {
    "result_id": ["R-2", "", "-x", "a" * 65, "a b", 5, None, "R\n"],
    "patient_id": ["P.2:x", "{p}", None, 3.0],
    "collected_at": [
        "2024-02-30",
        "1989-12-31",
        "2999-01-01",
        "2024-04-02T10:00:00Z",
        "24-04-02",
        20240402,
        "٢٠٢٤-٠٤-٠٢",
        "2024-4-2",
    ],
    "control_gene": ["GUSB", "BCR", "abl1", None, 1],
    "control_copies": [0.0, -1.0, 0.5, 1.0, 1e9, 1e10, None, True, "5", float("nan"), float("inf"), 3],
    "bcr_abl1_copies": [0.0, 1e-4, 1e-3, -1.0, None, 2e9, 1e9, False],
    "is_percent": [0.1, 0.0, 1e-7, 1e5, None, 10],
    "conversion_factor": [1.0, 0.5, 1e-4, 2e3, None, "1", 7],
    "is_percent_below": [None, 0.0032],
    "status": ["final", "amended", "corrected", "entered-in-error", "draft", None, ["final"]],
    "lab": ["Lab A", "", "x" * 100, "x" * 101, "a\x00b", "a\nb", None, 3],
    "assay": ["qPCR", None],
    "transcript": ["e14a2", "x" * 40, "x" * 41, None],
    "extra": ["unknown field"],
}


def _slow(items: list) -> object:
    try:
        return AssayResultSchema(many=True).load(items)
    except ValidationError as err:
        return err.messages


def _cases() -> list[dict]:
    cases = [dict(BASE)]
    for field, values in VARIANTS.items():
        for value in values:
            cases.append({**BASE, field: value})
        cases.append({k: v for k, v in BASE.items() if k != field})
    rng = random.Random(11)
    fields = list(VARIANTS)
    for _ in range(1500):
        doc = dict(BASE)
        for field in rng.sample(fields, 3):
            if rng.random() < 0.15:
                doc.pop(field, None)
            else:
                doc[field] = rng.choice(VARIANTS[field])
        cases.append(doc)
    return cases


def test_fast_path_loads_what_the_schema_loads():
    fast_taken = 0
    for doc in _cases():
        fast = fast_load_results([doc])
        if fast is not None:
            fast_taken += 1
            slow = _slow([doc])
            assert fast == slow, doc
            assert [list(d) for d in fast] == [list(d) for d in slow], doc  # same key order too
    assert fast_taken > 100


def test_fast_path_steps_aside_for_anything_the_schema_refuses():
    for doc in _cases():
        if isinstance(_slow([doc]), dict):  # refused
            assert fast_load_results([doc]) is None, doc


def test_one_unusual_item_sends_the_whole_batch_to_the_schema():
    assert (
        fast_load_results([BASE, {**BASE, "result_id": "R-2", "collected_at": "2024-04-02T10:00:00Z"}])
        is None
    )
    assert fast_load_results([BASE, "not an object"]) is None


BODIES = [
    b'{"a": 1, "b": {"a": 2}}',
    b'{"a": 1, "a": 2}',
    b'[{"k": "x:y"}, {"k": 1, "j": {"k": 2, "k": 3}}]',
    b'{"a\\"": ":", "a\\"": 2}',
    b'{"\\\\": "\\\\", "b": [1, 2, {"c": "\\":"}]}',
    b'{"x": "\\u0061", "\\u0078": 2}',
    b"[]",
    b"{}",
    b'"a:b"',
    b'{"a": {}, "b": [], "c": [{}]}',
]


@pytest.mark.parametrize("raw", BODIES)
def test_duplicate_keys_found_as_pythons_parser_finds_them(app, raw):
    from services.api.context import Problem, _parse

    def pairs(items: list) -> dict:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise KeyError(next(k for i, k in enumerate(keys) if k in keys[:i]))
        return dict(items)

    try:
        expected = ("ok", json.loads(raw, object_pairs_hook=pairs, parse_int=float, parse_float=float))
    except KeyError as exc:
        expected = ("dup", exc.args[0])
    try:
        got = ("ok", _parse(raw))
    except Problem as exc:
        got = ("dup", exc.extra["errors"][0]["field"])
    assert got == expected


def assert_same_message(ours: dict, celerys: dict) -> None:
    """Our message equals Celery's, key order included, but for what differs per send (the delivery tag
    and the enqueue stamp)."""
    for message in (celerys, ours):
        message["properties"].pop("delivery_tag")
        message["headers"].pop("enqueued_ms")
    assert ours == celerys
    assert base64.b64decode(ours["body"]) == base64.b64decode(celerys["body"])
    assert list(itertools.chain(ours["headers"], ours["properties"])) == list(
        itertools.chain(celerys["headers"], celerys["properties"])
    )


def test_batched_task_messages_are_celerys_own(redis_url):
    import redis

    from shared.config import load_settings
    from shared.queue import RECOMPUTE_PATIENT, TaskMessages, make_celery, send

    # A database no worker consumes, so the message Celery publishes stays there to be read.
    broker = redis_url.rsplit("/", 1)[0] + "/7"
    app = make_celery(dataclasses.replace(load_settings(), broker_url=broker), "cml-api", request_path=True)
    r = redis.Redis.from_url(broker)
    queue = "patients"
    r.delete(queue)
    send(app, RECOMPUTE_PATIENT, "P-msg", task_id="t-1")
    celerys = json.loads(r.lpop(queue))
    name, ours = TaskMessages(app).build(RECOMPUTE_PATIENT, [("P-msg", "t-1")])[0]
    assert name == queue
    assert_same_message(json.loads(ours), celerys)


def _lua_messages(r, shape: list, ids: list[str], pairs: list[str]) -> list[bytes]:
    """What the results write's script LPUSHes for ``ids`` (shared.store.TASK_MESSAGES_LUA)."""
    from shared.store import TASK_MESSAGES_LUA

    script = (
        TASK_MESSAGES_LUA
        + """
local s, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local shape, ids = {}, {}
for i = 3, s + 2 do shape[#shape + 1] = ARGV[i] end
for i = s + 3, s + 2 + k do ids[#ids + 1] = ARGV[i] end
return task_messages(ids, shape, s + 3 + k)
"""
    )
    return r.eval(script, 0, len(shape), len(ids), *shape, *ids, *pairs)


def test_batched_patients_messages_are_celerys_own(redis_url):
    import redis
    from celery.utils.saferepr import saferepr

    from shared.config import load_settings
    from shared.queue import RECOMPUTE_PATIENTS, TaskMessages, make_celery, send

    broker = redis_url.rsplit("/", 1)[0] + "/7"
    app = make_celery(dataclasses.replace(load_settings(), broker_url=broker), "cml-api", request_path=True)
    r = redis.Redis.from_url(broker)
    rng = random.Random(5)
    alphabet = "abcXYZ0189._:-"
    ids = ["P-1"] + [
        rng.choice("aZ0") + "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 3, 8, 20, 63])))
        for _ in range(400)
    ]
    messages = TaskMessages(app)
    queue, shape = messages.shape(RECOMPUTE_PATIENTS)
    assert queue == "patients"
    for some in (ids[:1], ids[:7], ids):
        pairs = messages.ids_for(len(some))
        ours = [json.loads(m) for m in _lua_messages(r, shape, some, pairs)]
        carried = []
        for i, message in enumerate(ours):
            chunk = json.loads(base64.b64decode(message["body"]))[0][0]
            assert 0 < len(chunk) <= TaskMessages.PATIENTS_PER_MESSAGE
            assert message["headers"]["id"] == pairs[2 * i]
            assert message["properties"]["delivery_tag"] == pairs[2 * i + 1]
            assert message["headers"]["argsrepr"] == saferepr([chunk], 1024) == repr([chunk])
            carried += chunk
            r.delete(queue)
            send(app, RECOMPUTE_PATIENTS, chunk, task_id=message["headers"]["id"])
            assert_same_message(message, json.loads(r.lpop(queue)))
        assert carried == some
    # A full message is as large as the limits allow: the next id would overflow one of them.
    assert len(ours) < len(ids) / 10
