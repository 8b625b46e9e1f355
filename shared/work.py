"""The work bookkeeping both sides share: which patients and cohorts are dirty, which have a task
pending, what failed, which workers are alive, and what a write's task id means.

Tasks are hints; the dirty sets are the truth (design-notes.md): a task claims its item, recomputes
from Redis and clears the dirty mark only if nothing moved; the sweeper re-enqueues what stays dirty
with no task pending; a task that fails is parked as a dead letter until ops retry it.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import redis

from shared import keys
from shared.queue import QUEUE_FOR_KIND, QUEUES
from shared.store import (
    PENDING_LUA,
    PatientData,
    _decode,
    canonical,
    now_ms,
    parse_load,
    queue_load,
    status_version,
)


def claim(r: redis.Redis, kind: str, item_id: str) -> bool:
    """Called as a task for a patient or cohort starts: from now on a new write enqueues a new task.
    Returns whether there is anything to do (a duplicate task for a clean item does nothing)."""
    pipe = r.pipeline(transaction=True)
    pipe.zrem(keys.ENQUEUED[kind], item_id)
    pipe.zscore(keys.DIRTY[kind], item_id)
    _, dirty = pipe.execute()
    return dirty is not None


def claim_patient(r: redis.Redis, patient_id: str) -> tuple[bool, PatientData | None]:
    """``claim`` of a patient and ``load_patient(raw=True)`` in one MULTI (one round trip instead of
    two): (anything to do, the snapshot to compute from). The snapshot is taken as the claim is made,
    so any write after it enqueues a new task."""
    pipe = r.pipeline(transaction=True)
    pipe.zrem(keys.ENQUEUED["patient"], patient_id)
    pipe.zscore(keys.DIRTY["patient"], patient_id)
    queue_load(pipe, patient_id)
    _, dirty, *loaded = pipe.execute()
    if dirty is None:
        return False, None
    return True, parse_load(patient_id, loaded, raw=True)


# --- the sweeper: tasks are hints ----------------------------------------------------------------

_SWEEP = """
-- KEYS[1] dirty, [2] enqueued, [3] the kind's queue (a kombu list); ARGV[1] now ms, [2] age ms, [3] limit
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
-- A task enqueued after the oldest message still waiting may itself be waiting: it is behind a
-- backlog, not lost. Kombu LPUSHes and BRPOPs, so the list's last element is the oldest; every
-- message carries its enqueue time (shared.queue). Without this bound, a backlog older than the age
-- had every dirty item requeued each sweep, and the duplicates grew the backlog they were waiting
-- behind (a 1,000,000-result import queued 257,000 messages: bench/README.md, issue 11).
local head = redis.call('LINDEX', KEYS[3], -1)
if head then
  local ok, message = pcall(cjson.decode, head)
  if ok and type(message) == 'table' and type(message['headers']) == 'table' then
    local stamp = tonumber(message['headers']['enqueued_ms'])
    if stamp and stamp - 1 < cutoff then cutoff = stamp - 1 end
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, pid in ipairs(due) do
  local e = redis.call('ZSCORE', KEYS[2], pid)
  if (not e) or tonumber(e) <= cutoff then
    redis.call('ZADD', KEYS[2], ARGV[1], pid)
    table.insert(out, pid)
  end
end
return out
"""


def due_for_requeue(r: redis.Redis, kind: str, older_than_s: float, limit: int = 1000) -> list[str]:
    """Dirty patients or cohorts pending longer than ``older_than_s`` with no task enqueued since,
    nor since the oldest message still waiting in their queue: their task was lost (a killed worker,
    a crash between write and enqueue), not merely behind others."""
    reply = r.eval(
        _SWEEP, 3, keys.DIRTY[kind], keys.ENQUEUED[kind], QUEUE_FOR_KIND[kind], now_ms(),
        int(older_than_s * 1000), limit,
    )  # fmt: skip
    return [_decode(p) for p in reply]


# --- dead letters --------------------------------------------------------------------------------

# A dead-lettered item's stored documents must not look current: they say pending, and why, right
# after the flag (readers ignore properties they do not know; the recompute that ops' retry runs
# stores a fresh document without it). The flag stays first, so every other script still flips it.
DEAD_LETTER_REASON = "recompute-failed"

_DEAD_LETTER = (
    PENDING_LUA
    + """
-- KEYS[1] dirty, [2] dead letters, then the item's stored documents; ARGV[1] id, [2] failure json,
-- [3] the reason field (``"pending_reason":"...",``).
-- Out of the dirty set, so the sweeper stops retrying a task that fails every time; ops retry it.
-- HSET first: under maxmemory it is refused before anything changed (ZREM, allowed, would drop the
-- item from the dirty set with no dead letter to show for it).
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 3, #KEYS do
  local doc = redis.call('GET', KEYS[i])
  if doc then
    local head = string.sub(doc, 1, #PENDING_FALSE)
    local rest = string.sub(doc, #PENDING_FALSE + 1)
    if (head == PENDING_FALSE or head == PENDING_TRUE) and string.sub(rest, 1, #ARGV[3]) ~= ARGV[3] then
      redis.call('SET', KEYS[i], PENDING_TRUE .. ARGV[3] .. rest)
    elseif head == PENDING_FALSE then
      mark_pending(KEYS[i])
    end
  end
end
"""
)


def _documents(kind: str, item_id: str) -> list[str]:
    if kind == "patient":
        return [keys.status(item_id), keys.timeline(item_id)]
    return [keys.cohort_stats(item_id)]


def dead_letter(r: redis.Redis, kind: str, item_id: str, task: str, error: str) -> None:
    """Park an item whose task fails for a reason that will repeat, and make its stored documents say
    ``pending: true`` with ``pending_reason: "recompute-failed"`` (the error is in the dead letter)."""
    failure = {"kind": kind, "id": item_id, "task": task, "error": error, "failed_ms": now_ms()}
    script_keys = [keys.DIRTY[kind], keys.DEAD[kind], *_documents(kind, item_id)]
    reason = f'"pending_reason":"{DEAD_LETTER_REASON}",'
    r.eval(_DEAD_LETTER, len(script_keys), *script_keys, item_id, orjson.dumps(failure), reason)


def dead_letters(r: redis.Redis) -> list[dict]:
    rows = [orjson.loads(v) for key in keys.DEAD.values() for v in r.hvals(key)]
    return sorted(rows, key=lambda row: row["failed_ms"], reverse=True)


_RETRY = """
-- KEYS[1] dead letters, [2] dirty, [3] enqueued, [4] audit; ARGV[1] id, [2] now ms, [3] audit entry
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('XADD', KEYS[4], '*', 'entry', ARGV[3], 'outcomes', 'requeued')
return 1
"""


def retry_dead_letter(r: redis.Redis, kind: str, item_id: str, audit: dict) -> bool:
    """Put a failed item back to work (dirty again), audited; False if there is no such dead letter."""
    script_keys = [keys.DEAD[kind], keys.DIRTY[kind], keys.ENQUEUED[kind], keys.AUDIT]
    return bool(r.eval(_RETRY, len(script_keys), *script_keys, item_id, now_ms(), canonical(audit)))


# --- rules changes -------------------------------------------------------------------------------

_RULES_CHANGED = (
    PENDING_LUA
    + """
-- KEYS[1] rules fingerprint, [2] patients set, [3] dirty patients, [4] cohorts set, [5] dirty cohorts,
-- [6] worklist ids
-- ARGV[1] fingerprint, [2] now ms, [3] patient key head, [4] tail, [5] cohort key head, [6] tail
if redis.call('GET', KEYS[1]) == ARGV[1] then return -1 end
-- Every stored document is about to be remade by other rules: each says pending until it is. A
-- document stored by a release before the flag led it carries the flag further in: flip it there
-- (the same length, so in place); its recompute stores the current layout.
local function mark_any(key)
  local head = redis.call('GETRANGE', key, 0, 511)
  if head == '' or string.sub(head, 1, #PENDING_FALSE) == PENDING_TRUE then return end
  local at = string.find(head, '"pending":false', 1, true)
  if at then redis.call('SETRANGE', key, at - 1, '"pending":true ') end
end
local n = 0
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  n = n + redis.call('ZADD', KEYS[3], 'NX', ARGV[2], pid)
  redis.call('ZADD', KEYS[6], 0, pid)  -- patients registered before the worklist's id index
  mark_any(ARGV[3] .. pid .. ARGV[4] .. 'status')
  mark_any(ARGV[3] .. pid .. ARGV[4] .. 'timeline')
end
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('ZADD', KEYS[5], 'NX', ARGV[2], cid)
  mark_any(ARGV[5] .. cid .. ARGV[6] .. 'stats')
end
redis.call('SET', KEYS[1], ARGV[1])
return n
"""
)


def recompute_all_if_rules_changed(r: redis.Redis, fingerprint: str) -> int:
    """Mark every patient and cohort dirty when the stored documents were made by other rules (a
    deployment changed them), and every stored document pending; the sweeper then recomputes them
    all. Returns how many patients were marked, -1 if the rules are unchanged."""
    script_keys = [
        keys.RULES, keys.PATIENTS, keys.DIRTY_PATIENTS, keys.COHORTS, keys.DIRTY_COHORTS, keys.WORKLIST_IDS,
    ]  # fmt: skip
    parts = [*keys.patient_key_parts(), *keys.cohort_key_parts()]
    return int(r.eval(_RULES_CHANGED, len(script_keys), *script_keys, fingerprint, now_ms(), *parts))


# --- the audit trail ------------------------------------------------------------------------------


def trim_audit(r: redis.Redis, retention_days: float) -> int:
    """Drop audit entries older than the retention (stream ids are their write times in ms); with
    no retention set (0) keep them all. Returns how many were dropped."""
    if retention_days <= 0:
        return 0
    oldest_kept_ms = max(0, now_ms() - int(retention_days * 86_400_000))
    return int(r.xtrim(keys.AUDIT, minid=oldest_kept_ms, approximate=False))


# --- work tracking and workers --------------------------------------------------------------------


def track_tasks(r: redis.Redis, tasks: dict[str, tuple[str, int]], ttl_s: int) -> None:
    """Record, per tracking id, which patient must reach which data version (the results write does it
    in its own script: shared.store.FollowUp, the same record)."""
    pipe = r.pipeline(transaction=False)
    for task_id, (patient_id, version) in tasks.items():
        doc = {"patient_id": patient_id, "version": version, "created_ms": now_ms()}
        pipe.set(keys.task(task_id), orjson.dumps(doc), ex=ttl_s)
    pipe.execute()


def read_task(r: redis.Redis, task_id: str) -> dict | None:
    raw = r.get(keys.task(task_id))
    if raw is None:
        return None
    doc = orjson.loads(raw)
    doc["status_version"] = status_version(r, doc["patient_id"])
    return doc


# A worker heartbeats every few seconds (services/worker/sweeper.py); silence for this long = gone.
WORKER_SILENCE_S = 15.0
# A worker silent this long is dropped from the list ops see (a dead one stays listed, not alive, a day).
FORGET_WORKER_AFTER_MS = 86_400_000

_HEARTBEAT = """
-- KEYS[1] workers zset, [2] worker queues hash; ARGV[1] worker, [2] now ms, [3] forget at or before ms,
-- [4] the worker's queues (JSON list)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
"""


def heartbeat(r: redis.Redis, worker: str, queues: Iterable[str]) -> None:
    """Say this worker is alive and which queues it consumes; forget workers silent for a day (their
    queues with them, in the same script, so the two keys never disagree)."""
    now = now_ms()
    script_keys = [keys.WORKERS, keys.WORKER_QUEUES]
    names = orjson.dumps(sorted(set(queues)))
    r.eval(_HEARTBEAT, len(script_keys), *script_keys, worker, now, now - FORGET_WORKER_AFTER_MS, names)


def live_workers(r: redis.Redis, within_s: float) -> dict[str, int]:
    rows = r.zrangebyscore(keys.WORKERS, now_ms() - int(within_s * 1000), "+inf", withscores=True)
    return {_decode(w): int(s) for w, s in rows}


def worker_queues(r: redis.Redis, workers: Iterable[str]) -> dict[str, list[str] | None]:
    """The queues each worker consumed at its last heartbeat; None for a worker that never said (one
    of a release before workers recorded their queues)."""
    names = list(workers)
    if not names:
        return {}
    return {
        w: None if raw is None else orjson.loads(raw)
        for w, raw in zip(names, r.hmget(keys.WORKER_QUEUES, names), strict=True)
    }


def consumers(queues_by_worker: dict[str, list[str] | None]) -> dict[str, list[str]]:
    """Per queue the app routes to (shared.queue.QUEUES), the workers consuming it, sorted; pass the
    live workers only. A worker that did not record its queues counts as consuming every queue: the
    release before this one started its workers with ``-Q patients,cohorts`` (docker-compose.yml,
    scripts/run), and counting it as consuming nothing would fail /readyz on every API instance
    for the whole of a rolling upgrade that updates the API before the workers."""
    out: dict[str, list[str]] = {q: [] for q in QUEUES}
    for worker, queues in sorted(queues_by_worker.items()):
        for q in QUEUES if queues is None else queues:
            if q in out:  # a queue nothing routes to (a worker's own -Q extra) is not reported
                out[q].append(worker)
    return out


def live_consumers(r: redis.Redis, within_s: float = WORKER_SILENCE_S) -> dict[str, list[str]]:
    """Per routed queue, the workers that heartbeated within ``within_s`` and consume it."""
    return consumers(worker_queues(r, live_workers(r, within_s)))
