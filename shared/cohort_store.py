"""Reads and writes of cohort data in Redis (key names from :mod:`shared.keys`).

A cohort's statistics follow the same rule as a patient's status: the version and dirty mark move
with the data (a member's follow-up record, the definition); a refresh stores what it computed with
the version it read, and clears the dirty mark only if nothing moved meanwhile. One refresh runs at a
time per cohort (a lock with a token); a burst of writes coalesces into few refreshes.

The statistics document's ``pending`` flag follows :mod:`shared.store` ("pending"): a definition change
marks it, and a refresh stores ``pending: false`` only if nothing moved and no member awaits.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import orjson
import redis

from shared import keys
from shared.cohorts import CohortData, definition
from shared.store import PENDING_LUA, PENDING_TRUE, _decode, canonical, now_ms

_DEFINE = (
    PENDING_LUA
    + """
-- KEYS[1] definition, [2] cohorts set, [3] version, [4] dirty cohorts, [5] enqueued cohorts,
-- [6] audit stream, [7] stats
-- ARGV[1] cohort id, [2] definition json, [3] now ms, [4] audit entry
local old = redis.call('GET', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
local tag = (old == ARGV[2] and 'unchanged') or (old and 'updated') or 'created'
redis.call('XADD', KEYS[6], '*', 'entry', ARGV[4], 'outcomes', tag)
if tag == 'unchanged' then return {tag, 0} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[3])
mark_pending(KEYS[7])  -- the stored statistics are of the old definition
redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[1])
local fresh = redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[1])
return {tag, fresh}
"""
)


def define_cohort(r: redis.Redis, cohort_id: str, doc: dict, audit: dict) -> tuple[str, bool]:
    """Store a definition; returns (created|updated|unchanged, whether a refresh must be enqueued)."""
    script_keys = [
        keys.cohort_definition(cohort_id),
        keys.COHORTS,
        keys.cohort_version(cohort_id),
        keys.DIRTY_COHORTS,
        keys.ENQUEUED_COHORTS,
        keys.AUDIT,
        keys.cohort_stats(cohort_id),
    ]
    args = [cohort_id, canonical(doc), now_ms(), canonical(audit)]
    tag, fresh = r.eval(_DEFINE, len(script_keys), *script_keys, *args)
    return _decode(tag), bool(int(fresh))


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector around a refresh: parsing 100,000 small acyclic records
    otherwise triggers hundreds of collections that cost more than the parsing (bench/README.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class CohortSnapshot:
    cohort_id: str
    version: int
    definition: dict
    records: dict[str, dict]


def load_cohort(r: redis.Redis, cohort_id: str) -> CohortSnapshot:
    """A consistent snapshot (MULTI/EXEC) of a cohort's definition and members' records."""
    pipe = r.pipeline(transaction=True)
    pipe.get(keys.cohort_version(cohort_id))
    pipe.get(keys.cohort_definition(cohort_id))
    pipe.hgetall(keys.cohort_followup(cohort_id))
    version, defn, records = pipe.execute()
    return CohortSnapshot(
        cohort_id,
        int(version or 0),
        definition(orjson.loads(defn) if defn else None),
        {_decode(k): orjson.loads(v) for k, v in records.items()},
    )


_COMMIT = (
    PENDING_LUA
    + """
-- KEYS[1] stats, [2] stats version, [3] data version, [4] dirty cohorts, [5] arrays, [6] refreshes,
-- [7] awaiting
-- ARGV[1] cohort id, [2] version computed from, [3] stats json, then arrays field/value pairs
local computed = tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if computed >= tonumber(redis.call('GET', KEYS[2]) or '-1') then
  redis.call('INCR', KEYS[6])
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('DEL', KEYS[5])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1]) end
  redis.call('SET', KEYS[2], computed)
  -- Pending unless these figures hold every acknowledged write: no newer cohort version (a member's
  -- record or the definition moved while computing) and no member whose write awaits its recompute.
  if current ~= computed or redis.call('SCARD', KEYS[7]) > 0 then mark_pending(KEYS[1]) end
end
if current == computed then redis.call('ZREM', KEYS[4], ARGV[1]) end
return current
"""
)


def encode_arrays(data: CohortData, curve: dict) -> dict[str, bytes]:
    return {
        "patients": "\n".join(data.patients).encode(),
        "time": data.time_days.astype("<f8").tobytes(),
        "status": data.status.astype("i1").tobytes(),
        "levels": orjson.dumps(data.levels),
        "not_evaluable": "\n".join(data.not_evaluable).encode(),
        "curve": orjson.dumps(curve),
    }


def commit_cohort(r: redis.Redis, cohort_id: str, version: int, doc: dict, arrays: dict[str, bytes]) -> int:
    """Swap in a refreshed statistics document (one script: readers never see half of it)."""
    script_keys = [
        keys.cohort_stats(cohort_id),
        keys.cohort_stats_version(cohort_id),
        keys.cohort_version(cohort_id),
        keys.DIRTY_COHORTS,
        keys.cohort_arrays(cohort_id),
        keys.cohort_refreshes(cohort_id),
        keys.cohort_awaiting(cohort_id),
    ]
    pairs = [x for item in arrays.items() for x in item]
    args = [cohort_id, version, orjson.dumps(doc), *pairs]
    return int(r.eval(_COMMIT, len(script_keys), *script_keys, *args))


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def acquire_lock(r: redis.Redis, cohort_id: str, ttl_s: float) -> str | None:
    token = uuid.uuid4().hex
    ok = r.set(keys.cohort_lock(cohort_id), token, nx=True, px=int(ttl_s * 1000))
    return token if ok else None


def release_lock(r: redis.Redis, cohort_id: str, token: str) -> None:
    r.eval(_RELEASE, 1, keys.cohort_lock(cohort_id), token)


# --- reading --------------------------------------------------------------------------------------


def read_stats(r: redis.Redis, cohort_id: str) -> bytes | None:
    return r.get(keys.cohort_stats(cohort_id))


def cohort_exists(r: redis.Redis, cohort_id: str) -> bool:
    return bool(r.sismember(keys.COHORTS, cohort_id))


def read_data(r: redis.Redis, cohort_id: str) -> tuple[CohortData, dict, int] | None:
    """The evaluable data, curve and version of the last refresh (None before the first). The curve's
    ``pending`` is the stored statistics document's: both are of the same refresh."""
    pipe = r.pipeline(transaction=True)
    pipe.hgetall(keys.cohort_arrays(cohort_id))
    pipe.get(keys.cohort_stats_version(cohort_id))
    pipe.getrange(keys.cohort_stats(cohort_id), 0, len(PENDING_TRUE) - 1)
    raw, version, flag = pipe.execute()
    if not raw:
        return None
    split = lambda b: b.decode().split("\n") if b else []  # noqa: E731
    data = CohortData(
        patients=split(raw[b"patients"]),
        time_days=np.frombuffer(raw[b"time"], dtype="<f8").astype(float),
        status=np.frombuffer(raw[b"status"], dtype="i1").astype(np.int64),
        not_evaluable=split(raw[b"not_evaluable"]),
        levels=orjson.loads(raw[b"levels"]),
    )
    curve = orjson.loads(raw[b"curve"])
    curve["pending"] = flag == PENDING_TRUE
    return data, curve, int(version or 0)


def list_cohorts(r: redis.Redis) -> list[dict]:
    """Every cohort with its definition, member count and when its statistics were computed."""
    ids = sorted(_decode(c) for c in r.smembers(keys.COHORTS))
    pipe = r.pipeline(transaction=False)
    for c in ids:
        pipe.get(keys.cohort_definition(c))
        pipe.scard(keys.cohort_members(c))
        pipe.get(keys.cohort_stats(c))
    rows = pipe.execute()
    out = []
    for i, c in enumerate(ids):
        defn, n, stats = rows[3 * i : 3 * i + 3]
        doc = orjson.loads(stats) if stats else {}
        out.append({
            "cohort_id": c,
            "definition": definition(orjson.loads(defn) if defn else None),
            "n": int(n),
            "computed_at": doc.get("computed_at"),
            "data_version": doc.get("data_version"),
        })  # fmt: skip
    return out
