"""Reads and writes of the service's Redis data, shared by the API and the worker.

Every multi-key write is one Lua script, so it is atomic and lands in the AOF before Redis replies:
a batch of results is stored whole or not at all, and the patient's version bump and dirty mark
travel with the data (design-notes.md, "Tasks are hints; Redis state is the truth"). So does the
``pending`` mark on every stored document the write makes stale (see ``PENDING_LUA`` below).
Key names come from :mod:`shared.keys` only.
"""

from __future__ import annotations

import base64
import hashlib
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from shared import keys, timelines, worklist
from shared.clinical.timeline import collection_order
from shared.config import Settings
from shared.pending import PENDING_FALSE, PENDING_TRUE
from shared.result_codec import decode_result, encode_result

# The request path's bounds (design-notes.md, "Under pressure"): a stalled Redis (SIGSTOP, a long fork, a
# saturated host) costs a request at most one connect or one read timeout, never a retry of either, so
# it answers 503 within 2 s whatever Redis does. A batch write's script takes milliseconds.
REQUEST_CONNECT_TIMEOUT_S = 0.5
REQUEST_SOCKET_TIMEOUT_S = 1.0

T = TypeVar("T")


def connect(
    url: str,
    *,
    socket_timeout: float = 5.0,
    connect_timeout: float = 1.0,
    retries: int = 2,
    **extra: object,
) -> redis.Redis:
    """A client whose calls fail within bounded time when Redis is down or stalled (so the API can say
    503), instead of redis-py's default of no socket timeout and retries with a 10 s cap. The worker
    keeps the defaults (a few quick retries); the API passes the request bounds with no retry."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries),
        **extra,
    )


def connect_for_requests(url: str, **extra: object) -> redis.Redis:
    """The API's client: one connect or read timeout at most per call, no retry."""
    return connect(
        url, socket_timeout=REQUEST_SOCKET_TIMEOUT_S, connect_timeout=REQUEST_CONNECT_TIMEOUT_S, retries=0,
        **extra,
    )  # fmt: skip


def sentinel_kwargs(settings: Settings, socket_timeout: float, connect_timeout: float) -> dict:
    """How the sentinels are asked, by redis-py here and by kombu's Sentinel transport (shared.queue):
    with bounded timeouts and no retry (redis-py 8's default retries each sentinel with a back-off: a
    refused sentinel listed first cost a write seconds), so a dead sentinel costs one connect timeout,
    then the next is asked; with the sentinels' own password."""
    options: dict = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password
    return options


def _sentinels(settings: Settings, socket_timeout: float, connect_timeout: float) -> Sentinel:
    """The sentinels, asked with the same bounds as the data (sentinel_kwargs)."""
    return Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs=sentinel_kwargs(settings, socket_timeout, connect_timeout),
    )


def _sentinel_master(
    settings: Settings, socket_timeout: float, connect_timeout: float, retries: int
) -> redis.Redis:
    """A client of the primary the sentinels name, asked again after every connection error, so it
    follows a failover by itself (design-notes.md, "Replication and failover")."""
    sentinel = _sentinels(settings, socket_timeout, connect_timeout)
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), retries)
    return sentinel.master_for(
        settings.redis_sentinel_master, **_node_options(settings, socket_timeout, connect_timeout, retry)
    )


def _node_options(settings: Settings, socket_timeout: float, connect_timeout: float, retry: Retry) -> dict:
    """A data node's client options under Sentinel: connect's bounds, with the nodes' password."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 15,
        "retry": retry,
        "password": settings.redis_password,
    }


def connect_from_settings(
    settings: Settings,
    *,
    for_requests: bool = False,
    socket_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> redis.Redis:
    """The one way a process gets its data-store client from the configuration: the sentinels' primary
    when REDIS_SENTINELS is set (issue 12), else REDIS_URL. ``for_requests``: the request path's bounds
    (one connect or read timeout, no retry; connect_for_requests); the timeouts given override them."""
    if for_requests:
        read_s, connect_s, retries = REQUEST_SOCKET_TIMEOUT_S, REQUEST_CONNECT_TIMEOUT_S, 0
    else:
        read_s, connect_s, retries = 5.0, 1.0, 2  # connect's defaults: the worker's
    read_s = read_s if socket_timeout is None else socket_timeout
    connect_s = connect_s if connect_timeout is None else connect_timeout
    if settings.sentinel:
        return _sentinel_master(settings, read_s, connect_s, retries)
    extra = {"password": settings.redis_password} if settings.redis_password else {}
    return connect(
        settings.redis_url, socket_timeout=read_s, connect_timeout=connect_s, retries=retries, **extra
    )


def connect_replica(settings: Settings) -> redis.Redis | None:
    """The hot reads' replica, with the request bounds: REDIS_READ_URL's; or, with
    REDIS_READ_FROM_REPLICAS under Sentinel, the replicas the sentinels list (redis-py's
    ``Sentinel.slave_for``: each new connection goes to the next replica in turn, to the primary when
    none is reachable). None when neither is configured. Either way a failed read goes to the primary
    (read_preferring)."""
    if settings.redis_read_from_replicas:
        bounds = (REQUEST_SOCKET_TIMEOUT_S, REQUEST_CONNECT_TIMEOUT_S)
        sentinel = _sentinels(settings, *bounds)
        options = _node_options(settings, *bounds, Retry(NoBackoff(), 0))
        return sentinel.slave_for(settings.redis_sentinel_master, **options)
    if not settings.redis_read_url:
        return None
    extra = {"password": settings.redis_password} if settings.redis_password else {}
    return connect_for_requests(settings.redis_read_url, **extra)


# --- replica-acknowledged writes (issue 12) ---------------------------------------------------------


class NotReplicated(redis.exceptions.RedisError):
    """The write is stored on the primary, but fewer replicas than WRITE_REPLICAS confirmed it within
    WRITE_REPLICA_TIMEOUT_MS: a failover now could lose it, so no door acknowledges it. A retry of
    the same content is a no-op on the primary (content-hash idempotent) and waits for the replicas
    again, so the client's retry is what makes the acknowledgement true."""

    def __init__(self, wanted: int, confirmed: int, timeout_ms: int):
        super().__init__(f"{confirmed} of {wanted} replicas confirmed the write within {timeout_ms} ms")
        self.wanted, self.confirmed, self.timeout_ms = wanted, confirmed, timeout_ms


@dataclass(frozen=True)
class Replication:
    """How many replicas must confirm a write before a door acknowledges it, and how long to wait."""

    replicas: int = 0
    timeout_ms: int = 1000

    @classmethod
    def of(cls, settings: Settings) -> Replication:
        return cls(settings.write_replicas, settings.write_replica_timeout_ms)


NO_REPLICATION = Replication()


def replicate_or_raise(pinned: redis.Redis, replication: Replication) -> int:
    """WAIT for the replicas on ``pinned``'s own connection (WAIT counts the replicas that have the
    writes of the connection it runs on: https://redis.io/commands/wait/). Returns how many confirmed;
    raises NotReplicated when too few did. The read may last the whole timeout, so it is bounded by
    the timeout plus the request read bound, not by the socket timeout alone."""
    conn = pinned.connection
    if conn is None:  # a pooled client: its next command could take any connection
        raise TypeError("replicate_or_raise needs a single-connection client (store.replicated)")
    try:
        conn.send_command("WAIT", replication.replicas, replication.timeout_ms)
        confirmed = int(conn.read_response(timeout=replication.timeout_ms / 1000 + REQUEST_SOCKET_TIMEOUT_S))
    except redis.exceptions.ResponseError as exc:
        # The primary was demoted (a failover, REPLICAOF) while or before WAIT ran: Redis answers the
        # blocked WAIT "UNBLOCKED ... instance state changed (master -> replica?)", or a WAIT sent after
        # "ERR WAIT cannot be used with replica instances". Whether the write survives is unknown: the
        # store is unavailable for a while (503, retry), not a fault of the request.
        conn.disconnect()
        raise redis.exceptions.ConnectionError(f"primary demoted during WAIT: {exc}") from exc
    except BaseException:
        conn.disconnect()  # a reply may still be on its way: never hand this connection to another call
        raise
    if confirmed < replication.replicas:
        raise NotReplicated(replication.replicas, confirmed, replication.timeout_ms)
    return confirmed


@contextmanager
def replicated(r: redis.Redis, replication: Replication) -> Iterator[redis.Redis]:
    """A client for one write that a door acknowledges only once ``replication.replicas`` replicas have
    it: the write's commands and the WAIT after them run on one connection of ``r``'s pool (WAIT on
    another connection would wait for nothing). Without replicas to wait for, ``r`` itself. Nothing
    is waited for when the write raised (a StoreError wrote nothing)."""
    if replication.replicas <= 0:
        yield r
        return
    pinned = redis.Redis(connection_pool=r.connection_pool, single_connection_client=True)
    try:
        yield pinned
        replicate_or_raise(pinned, replication)
    finally:
        pinned.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def canonical(doc: dict) -> bytes:
    """The canonical JSON of a document: same content, same bytes (for the idempotency hash)."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def content_hash(doc: dict) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


class LuaScript:
    """A script run by its SHA1 (EVALSHA: its text is not sent, nor hashed by Redis, on every call), loaded
    with EVAL the first time a Redis has not seen it (a NOSCRIPT reply runs nothing, so it is atomic
    either way)."""

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1

    def __call__(self, r: redis.Redis, numkeys: int, *keys_and_args: object):
        try:
            return r.evalsha(self.sha, numkeys, *keys_and_args)
        except redis.exceptions.NoScriptError:
            return r.eval(self.text, numkeys, *keys_and_args)


class StoreError(Exception):
    """A write refused by the data already stored; carries the item index and a reason code."""

    def __init__(self, code: str, index: int, value: str):
        super().__init__(f"{code} at item {index}: {value}")
        self.code = code
        self.index = index
        self.value = value


# --- pending: what a stored document says about acknowledged writes ------------------------------

# Every stored document (status, timeline, cohort statistics) starts with its pending flag
# (shared.documents). The scripts below flip it in place:
#
# - A write that bumps a patient's version marks, in the same script as the data, the patient's
#   status and timeline pending; it adds the patient to the ``awaiting`` set of each cohort its stored
#   registration names and marks those cohorts' statistics pending.
# - commit_status stores the status and timeline pending if a newer write arrived while computing.
#   Once they reflect the current version it takes the patient out of its cohorts' awaiting sets, and a
#   cohort left clean (nobody awaiting, statistics of the current cohort version) says false again.
# - commit_cohort stores the statistics pending unless they are of the current cohort version and
#   nobody is awaiting. Anything that bumps a cohort's version marks its statistics pending.
#
# So a document says ``pending: false`` only when no acknowledged write is missing from it. A patient
# whose recompute is dead-lettered stays awaiting, and its cohorts' statistics stay pending until ops
# retry it: that is true, their figures do miss its write.
#
# Why in place: the read path is one GET returning the stored bytes (bench/read_path.py), so the bytes
# must carry the flag. ``"pending":true `` (with a space, which JSON allows between tokens) has the
# length of ``"pending":false``, and the flag sits at a fixed offset (first in the document), so a flip
# is a GETRANGE and a SETRANGE of the first 17 bytes: O(1) whatever the document's size (a timeline of
# hundreds of results), where a GET and SET of the document would copy it twice inside the script,
# which blocks Redis; and no scan for the flag (nothing before it can look like it). A flip happens
# only when the flag says the other thing: a burst of writes rewrites a document once.

PENDING_LUA = """
-- Helpers shared by the write scripts (shared.store: "pending"). Documents start with FALSE or TRUE.
local PENDING_FALSE, PENDING_TRUE = '{"pending":false,', '{"pending":true ,'
local function set_flag(key, from, to)
  if redis.call('GETRANGE', key, 0, #from - 1) == from then redis.call('SETRANGE', key, 0, to) end
end
local function mark_pending(key) set_flag(key, PENDING_FALSE, PENDING_TRUE) end
local function mark_settled(key) set_flag(key, PENDING_TRUE, PENDING_FALSE) end

-- A cohort's keys, from the head and tail of shared.keys.cohort_key_parts().
local function cohort_key(head, tail, c, suffix) return head .. c .. tail .. suffix end

-- An acknowledged write to patient pid (whose version it bumped): its status and timeline are
-- behind, and so is every cohort its stored registration names (``marked`` dedupes within a script).
local function await_write(pid, status_key, timeline_key, registration, head, tail, marked)
  mark_pending(status_key)
  mark_pending(timeline_key)
  if not registration then return end
  for _, c in ipairs(cjson.decode(registration)['cohorts'] or {}) do
    redis.call('SADD', cohort_key(head, tail, c, 'awaiting'), pid)
    if not marked[c] then
      marked[c] = true
      mark_pending(cohort_key(head, tail, c, 'stats'))
    end
  end
end

-- Nobody awaiting and the statistics of the cohort's current version: they reflect every write.
local function settle_cohort(awaiting_key, stats_key, stats_version_key, version_key)
  if redis.call('SCARD', awaiting_key) == 0
      and redis.call('GET', stats_version_key) == redis.call('GET', version_key) then
    mark_settled(stats_key)
  end
end
"""
assert f"'{PENDING_FALSE.decode()}', '{PENDING_TRUE.decode()}'" in PENDING_LUA


# --- task messages built in a script ---------------------------------------------------------------

# Celery task messages each carrying a list of ids (shared.queue.TaskMessages.shape gives the limits and
# the template), built by the script that decides which ids need one. Ids are of the id alphabet, so
# they need no escaping in JSON nor in Python's repr.
TASK_MESSAGES_LUA = """
local B64 = {}
do
  local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  for i = 1, 64 do B64[i - 1] = string.sub(alphabet, i, i) end
end
local function base64(s)
  local out, n, i = {}, #s, 1
  local floor = math.floor
  while i + 2 <= n do
    local x, y, z = string.byte(s, i, i + 2)
    local v = x * 65536 + y * 256 + z
    out[#out + 1] = B64[floor(v / 262144)] .. B64[floor(v / 4096) % 64]
      .. B64[floor(v / 64) % 64] .. B64[v % 64]
    i = i + 3
  end
  if n - i == 0 then
    local v = string.byte(s, i) * 65536
    out[#out + 1] = B64[floor(v / 262144)] .. B64[floor(v / 4096) % 64] .. '=='
  elseif n - i == 1 then
    local x, y = string.byte(s, i, i + 1)
    local v = x * 65536 + y * 256
    out[#out + 1] = B64[floor(v / 262144)] .. B64[floor(v / 4096) % 64] .. B64[floor(v / 64) % 64] .. '='
  end
  return table.concat(out)
end

-- The messages for ids (in order), at most shape[1] ids each and each one's argsrepr (Python's repr of
-- the args) at most shape[2] characters; shape[3..5] the body's JSON around the ids, shape[6] the number
-- of template pieces that follow; ids_at: the ARGV index of the first of the (task id, tag) pairs.
local function task_messages(ids, shape, ids_at)
  local per, maxrepr = tonumber(shape[1]), tonumber(shape[2])
  local head, sep, tail = shape[3], shape[4], shape[5]
  local npieces = tonumber(shape[6])
  local out, chunk, size = {}, {}, 4
  local function flush()
    local j = ids_at + #out * 2
    local fill = {
      id = ARGV[j], tag = ARGV[j + 1],
      body = base64(head .. table.concat(chunk, sep) .. tail),
      argsrepr = "[['" .. table.concat(chunk, "', '") .. "']]",
    }
    local parts = {}
    for p = 1, npieces do
      local piece = shape[6 + p]
      if string.byte(piece, 1) == 0 then parts[p] = fill[string.sub(piece, 2)] else parts[p] = piece end
    end
    out[#out + 1] = table.concat(parts)
  end
  for _, id in ipairs(ids) do
    local add = #id + 2
    if #chunk > 0 then add = add + 2 end
    if #chunk > 0 and (#chunk >= per or size + add > maxrepr) then
      flush()
      chunk, size, add = {}, 4, #id + 2
    end
    chunk[#chunk + 1] = id
    size = size + add
  end
  if #chunk > 0 then flush() end
  return out
end
"""


# --- writing results ------------------------------------------------------------------------------

_STORE_RESULTS = (
    PENDING_LUA
    + TASK_MESSAGES_LUA
    + """
-- KEYS[1] result index, KEYS[2] dirty zset, KEYS[3] enqueued zset, KEYS[4] audit stream,
-- then per item: registration, results hash, version, status, timeline (5 keys).
-- ARGV[1] now ms, ARGV[2] audit entry, [3] cohort key head, [4] tail, [5] number of items n,
-- [6] task key head ('' when the caller enqueues the recomputes itself), [7] task ttl s, [8] queue,
-- [9] number of patients to follow m, [10] number of message shape arguments s,
-- then per item: result_id, patient_id, status, sha, json,
-- then per patient to follow (when [6] is set): patient_id, tracking id,
-- then the message shape (s arguments: task_messages' shape), then (task id, delivery tag) pairs.
-- (Item i's keys are at k = 4 + (i - 1) * 5, its arguments at a = FIXED + (i - 1) * 5.)
local FIXED = 10
local n = tonumber(ARGV[5])
local outcome = {}
-- Pass 1 checks everything, so that a refused batch writes nothing.
for i = 1, n do
  local a = FIXED + (i - 1) * 5
  local rid, pid, st, sha = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local k = 4 + (i - 1) * 5
  if redis.call('EXISTS', KEYS[k + 1]) == 0 then return {'unknown_patient', i, pid} end
  local idx = redis.call('HGET', KEYS[1], rid)
  if not idx then
    outcome[i] = 'created'
  else
    local sep = string.find(idx, '|', 1, true)
    local opid, osha = string.sub(idx, 1, sep - 1), string.sub(idx, sep + 1)
    if opid ~= pid then return {'patient_mismatch', i, opid} end
    if osha == sha then outcome[i] = 'unchanged'
    elseif st == 'final' then return {'conflict', i, rid}
    elseif st == 'entered-in-error' then outcome[i] = 'withdrawn'
    else outcome[i] = 'replaced' end
  end
end
-- Pass 2 writes, bumping each touched patient's version once.
local touched, order = {}, {}
for i = 1, n do
  if outcome[i] ~= 'unchanged' then
    local a = FIXED + (i - 1) * 5
    local k = 4 + (i - 1) * 5
    redis.call('HSET', KEYS[1], ARGV[a + 1], ARGV[a + 2] .. '|' .. ARGV[a + 4])
    redis.call('HSET', KEYS[k + 2], ARGV[a + 1], ARGV[a + 5])
    if not touched[ARGV[a + 2]] then
      touched[ARGV[a + 2]] = k
      table.insert(order, ARGV[a + 2])
    end
  end
end
local reply = {'ok', outcome}
local versions = {}
local marked = {}
-- Following the recomputes here (shared.intake.dispatch, one_pipeline): each touched patient's task
-- record, and its task message when none is pending, land with the data.
local task_head, follow, fresh_ids = ARGV[6], {}, {}
local follow_at = FIXED + n * 5 + 1
local shape_at = follow_at + tonumber(ARGV[9]) * 2
if task_head ~= '' then
  for f = follow_at, shape_at - 1, 2 do follow[ARGV[f]] = f end
end
for _, pid in ipairs(order) do
  local k = touched[pid]
  local v = redis.call('INCR', KEYS[k + 3])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[1], pid)
  local fresh = redis.call('ZADD', KEYS[3], 'NX', ARGV[1], pid)
  await_write(pid, KEYS[k + 4], KEYS[k + 5], redis.call('GET', KEYS[k + 1]), ARGV[3], ARGV[4], marked)
  local f = follow[pid]
  if f then
    -- shared.work.track_tasks' record, byte for byte (ids hold no quote or backslash).
    redis.call('SET', task_head .. ARGV[f + 1],
      '{"patient_id":"' .. pid .. '","version":' .. v .. ',"created_ms":' .. ARGV[1] .. '}', 'EX', ARGV[7])
    if fresh == 1 then table.insert(fresh_ids, pid) end
  end
  table.insert(versions, {pid, v, fresh})
end
-- One task message per chunk of the patients that had none pending (RECOMPUTE_PATIENTS).
if #fresh_ids > 0 then
  local shape = {}
  for i = shape_at, shape_at + tonumber(ARGV[10]) - 1 do shape[#shape + 1] = ARGV[i] end
  for _, message in ipairs(task_messages(fresh_ids, shape, shape_at + tonumber(ARGV[10]))) do
    redis.call('LPUSH', ARGV[8], message)
  end
end
table.insert(reply, versions)
-- The audit entry lands with the data: an acknowledged write always has its entry.
redis.call('XADD', KEYS[4], '*', 'entry', ARGV[2],
  'outcomes', table.concat(outcome, ','))
return reply
"""
)


_STORE_RESULTS_SCRIPT = LuaScript(_STORE_RESULTS)


@dataclass
class WriteOutcome:
    """What a write did: per item its outcome, per touched patient its new version, and which
    patients need a recompute task enqueued (they had none pending)."""

    outcomes: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    to_enqueue: list[str] = field(default_factory=list)
    cohorts_to_enqueue: list[str] = field(default_factory=list)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_versions(rows: Sequence) -> tuple[dict[str, int], list[str]]:
    versions: dict[str, int] = {}
    fresh: list[str] = []
    for pid, version, added in rows:
        versions[_decode(pid)] = int(version)
        if int(added):
            fresh.append(_decode(pid))
    return versions, fresh


@dataclass
class FollowUp:
    """What store_results does for the recomputes in the same script, when the broker is this Redis:
    per patient its tracking id, stored; and the patients that had no task pending, in as few task
    messages as their number allows (RECOMPUTE_PATIENTS, built by TASK_MESSAGES_LUA from ``shape`` and
    ``ids``: shared.queue.TaskMessages.shape and ids_for), LPUSHed to ``queue``."""

    ttl_s: int
    queue: str
    tasks: dict[str, str]  # patient id -> tracking id
    shape: list
    ids: list[str]


def store_results(
    r: redis.Redis, results: Sequence[dict], audit: dict, follow: FollowUp | None = None
) -> WriteOutcome:
    """Store validated results atomically with their audit entry; raise StoreError (writing
    nothing) on a conflict. With ``follow``, the touched patients' task records and messages are
    written by the same script (one round trip for the whole write)."""
    script_keys = [keys.RESULT_INDEX, keys.DIRTY_PATIENTS, keys.ENQUEUED_PATIENTS, keys.AUDIT]
    args: list = [now_ms(), canonical(audit), *keys.cohort_key_parts(), len(results)]
    if follow:
        args += [keys.task(""), follow.ttl_s, follow.queue, len(follow.tasks), len(follow.shape)]
    else:
        args += ["", 0, "", 0, 0]
    sha256 = hashlib.sha256
    for doc in results:
        pid = doc["patient_id"]
        script_keys += [
            keys.registration(pid), keys.results(pid), keys.version(pid), keys.status(pid), keys.timeline(pid)
        ]  # fmt: skip
        body = canonical(doc)  # content_hash is the SHA-256 of these bytes
        args += [doc["result_id"], pid, doc["status"], sha256(body).hexdigest(), encode_result(doc)]
    if follow:
        for pid, task_id in follow.tasks.items():
            args += [pid, task_id]
        args += follow.shape
        args += follow.ids
    reply = _STORE_RESULTS_SCRIPT(r, len(script_keys), *script_keys, *args)
    tag = _decode(reply[0])
    if tag != "ok":
        raise StoreError(tag, int(reply[1]) - 1, _decode(reply[2]))
    versions, fresh = _parse_versions(reply[2])
    return WriteOutcome([_decode(o) for o in reply[1]], versions, fresh)


# --- registering patients -------------------------------------------------------------------------

_REGISTER = (
    PENDING_LUA
    + """
-- KEYS[1] registration, [2] version, [3] patients set, [4] dirty, [5] enqueued, [6] cohorts set,
-- [7] dirty cohorts, [8] enqueued cohorts, [9] audit stream, [10] status, [11] timeline,
-- [12] worklist ids
-- ARGV[1] patient id, [2] document, [3] now ms, [4] cohort key head, [5] tail, [6] audit entry,
-- [7..] cohorts
local old = redis.call('GET', KEYS[1])
local function audit(outcome)
  redis.call('XADD', KEYS[9], '*', 'entry', ARGV[6], 'outcomes', outcome)
end
if old == ARGV[2] then
  audit('unchanged')
  return {'unchanged', tonumber(redis.call('GET', KEYS[2]) or '0'), 0, {}}
end
local head, tail = ARGV[4], ARGV[5]
local keep, fresh_cohorts = {}, {}
for i = 7, #ARGV do keep[ARGV[i]] = true end
if old then
  for _, c in ipairs(cjson.decode(old)['cohorts']) do
    local function ck(suffix) return cohort_key(head, tail, c, suffix) end
    redis.call('SREM', ck('members'), ARGV[1])
    if not keep[c] then
      -- Pending: whatever the patient's awaiting writes were, they no longer concern this cohort.
      redis.call('SREM', ck('awaiting'), ARGV[1])
      -- Leaving a cohort changes its statistics: drop the record, mark the cohort dirty.
      if redis.call('HDEL', ck('followup'), ARGV[1]) == 1 then
        redis.call('INCR', ck('version'))
        mark_pending(ck('stats'))
        redis.call('ZADD', KEYS[7], 'NX', ARGV[3], c)
        if redis.call('ZADD', KEYS[8], 'NX', ARGV[3], c) == 1 then table.insert(fresh_cohorts, c) end
      else
        -- Never in its statistics: the cohort may be clean now that the patient no longer awaits.
        settle_cohort(ck('awaiting'), ck('stats'), ck('stats_v'), ck('version'))
      end
    end
  end
end
for i = 7, #ARGV do
  redis.call('SADD', head .. ARGV[i] .. tail .. 'members', ARGV[1])
  redis.call('SADD', KEYS[6], ARGV[i])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[12], 0, ARGV[1])  -- the worklist pages every patient by id from it
local v = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[4], 'NX', ARGV[3], ARGV[1])
local fresh = redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[1])
-- Pending: the new registration's cohorts await this patient's recompute.
await_write(ARGV[1], KEYS[10], KEYS[11], ARGV[2], head, tail, {})
local tag = old and 'updated' or 'created'
audit(tag)
return {tag, v, fresh, fresh_cohorts}
"""
)


def register_patient(r: redis.Redis, patient_id: str, doc: dict, audit: dict) -> tuple[str, WriteOutcome]:
    """Create or replace a registration; returns ('created'|'updated'|'unchanged', outcome)."""
    head, tail = keys.cohort_key_parts()
    script_keys = [
        keys.registration(patient_id),
        keys.version(patient_id),
        keys.PATIENTS,
        keys.DIRTY_PATIENTS,
        keys.ENQUEUED_PATIENTS,
        keys.COHORTS,
        keys.DIRTY_COHORTS,
        keys.ENQUEUED_COHORTS,
        keys.AUDIT,
        keys.status(patient_id),
        keys.timeline(patient_id),
        keys.WORKLIST_IDS,
    ]
    args = [patient_id, canonical(doc), now_ms(), head, tail, canonical(audit), *doc["cohorts"]]
    tag, version, fresh, cohorts = r.eval(_REGISTER, len(script_keys), *script_keys, *args)
    outcome = WriteOutcome(
        versions={patient_id: int(version)}, cohorts_to_enqueue=[_decode(c) for c in cohorts]
    )
    if int(fresh):
        outcome.to_enqueue.append(patient_id)
    return _decode(tag), outcome


# --- clinical events ------------------------------------------------------------------------------

_ADD_EVENTS = (
    PENDING_LUA
    + """
-- KEYS[1] registration, [2] events hash, [3] version, [4] dirty, [5] enqueued, [6] audit stream,
-- [7] status, [8] timeline
-- ARGV[1] patient id, [2] now ms, [3] audit entry, [4] cohort key head, [5] tail,
-- then pairs: event id, json
local registration = redis.call('GET', KEYS[1])
if not registration then return {'unknown_patient', 0, 0} end
local changed = false
for i = 6, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    changed = true
  end
end
redis.call('XADD', KEYS[6], '*', 'entry', ARGV[3],
  'outcomes', changed and 'stored' or 'unchanged')
if not changed then return {'unchanged', tonumber(redis.call('GET', KEYS[3]) or '0'), 0} end
local v = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[1])
local fresh = redis.call('ZADD', KEYS[5], 'NX', ARGV[2], ARGV[1])
await_write(ARGV[1], KEYS[7], KEYS[8], registration, ARGV[4], ARGV[5], {})
return {'ok', v, fresh}
"""
)


def event_id(event: dict) -> str:
    """A caller may name an event; otherwise its id is its content's hash, so a repost is a no-op."""
    return event.get("event_id") or "ev-" + content_hash(event)[:16]


def add_events(r: redis.Redis, patient_id: str, events: Iterable[dict], audit: dict) -> WriteOutcome:
    script_keys = [
        keys.registration(patient_id),
        keys.events(patient_id),
        keys.version(patient_id),
        keys.DIRTY_PATIENTS,
        keys.ENQUEUED_PATIENTS,
        keys.AUDIT,
        keys.status(patient_id),
        keys.timeline(patient_id),
    ]
    args: list = [patient_id, now_ms(), canonical(audit), *keys.cohort_key_parts()]
    for ev in events:
        ev = {**ev, "event_id": event_id(ev)}
        args += [ev["event_id"], canonical(ev)]
    tag, version, fresh = r.eval(_ADD_EVENTS, len(script_keys), *script_keys, *args)
    if _decode(tag) == "unknown_patient":
        raise StoreError("unknown_patient", 0, patient_id)
    outcome = WriteOutcome(versions={patient_id: int(version)})
    if int(fresh):
        outcome.to_enqueue.append(patient_id)
    return outcome


# --- reading a patient's data ---------------------------------------------------------------------


@dataclass
class PatientData:
    patient_id: str
    version: int
    registration: dict
    results: list  # dicts; or the stored bytes of each (load_patient(raw=True)), as a recompute reads them
    events: list[dict]


def load_patient(r: redis.Redis, patient_id: str, raw: bool = False) -> PatientData | None:
    """A consistent snapshot (MULTI/EXEC) of everything a status is computed from; with ``raw`` the
    results as stored (bytes): a recompute parses and scores only contents it has not seen
    (shared.clinical.scored.stored_entry)."""
    pipe = r.pipeline(transaction=True)
    queue_load(pipe, patient_id)
    return parse_load(patient_id, pipe.execute(), raw)


def queue_load(pipe: redis.client.Pipeline, patient_id: str) -> None:
    """Queue load_patient's reads on ``pipe`` (a MULTI that may hold other commands before them)."""
    pipe.get(keys.version(patient_id))
    pipe.get(keys.registration(patient_id))
    pipe.hvals(keys.results(patient_id))
    pipe.hvals(keys.events(patient_id))


def parse_load(patient_id: str, replies: Sequence, raw: bool = False) -> PatientData | None:
    """load_patient's answer from the replies of queue_load's four commands."""
    version, reg, results, events = replies
    if reg is None:
        return None
    return PatientData(
        patient_id,
        int(version or 0),
        orjson.loads(reg),
        results if raw else [decode_result(x, patient_id) for x in results],
        [orjson.loads(x) for x in events],
    )


def patient_exists(r: redis.Redis, patient_id: str) -> bool:
    return bool(r.exists(keys.registration(patient_id)))


# --- computed status ------------------------------------------------------------------------------

_COMMIT_STATUS = (
    PENDING_LUA
    + worklist.INDEX_LUA
    + """
-- KEYS[1] status, [2] status version, [3] data version, [4] dirty, [5] timeline,
-- [6] dirty cohorts, [7] enqueued cohorts, [8] lag list, [9] worklist rows, [10] worklist due,
-- then per cohort (6 keys): members, follow-up, version, awaiting, stats, stats version.
-- ARGV[1] patient id, [2] data version computed from, [3] status, [4] timeline, [5] follow-up
-- record, [6] now ms, [7] number of cohorts n, [8..7+n] cohort ids (in the order of their keys),
-- [8+n] worklist level head, [9+n] action head, then the worklist index arguments (worklist.index_args)
local PER_COHORT = 6
local pid, computed = ARGV[1], tonumber(ARGV[2])
local n = tonumber(ARGV[7])
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
local fresh_cohorts = {}
-- Never replace a newer status with an older one (two workers may race on one patient); the same
-- version is rewritten (a recompute after a rules change).
if computed >= tonumber(redis.call('GET', KEYS[2]) or '-1') then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('SET', KEYS[5], ARGV[4])
  redis.call('SET', KEYS[2], computed)
  -- Pending: a write acknowledged while this was computed is not in it (its own task follows).
  if current > computed then
    mark_pending(KEYS[1])
    mark_pending(KEYS[5])
  end
  -- The worklist indexes move with the status they are made from (shared/worklist.py).
  local w = 10 + n
  local codes = {}
  for i = w + 3, #ARGV do table.insert(codes, ARGV[i]) end
  index_worklist(pid, KEYS[9], KEYS[10], ARGV[w], ARGV[w + 1], ARGV[w + 2], codes,
    ARGV[8 + n], ARGV[9 + n])
  for c = 1, n do
    local k = 10 + (c - 1) * PER_COHORT
    local cid = ARGV[7 + c]
    -- Still a member (a registration may have moved the patient meanwhile), and a real change:
    -- only then does the cohort need a refresh.
    if redis.call('SISMEMBER', KEYS[k + 1], pid) == 1
        and redis.call('HGET', KEYS[k + 2], pid) ~= ARGV[5] then
      redis.call('HSET', KEYS[k + 2], pid, ARGV[5])
      redis.call('INCR', KEYS[k + 3])
      mark_pending(KEYS[k + 5])  -- the statistics are now behind the cohort's version
      redis.call('ZADD', KEYS[6], 'NX', ARGV[6], cid)
      if redis.call('ZADD', KEYS[7], 'NX', ARGV[6], cid) == 1 then table.insert(fresh_cohorts, cid) end
    end
  end
end
if current == computed then
  -- Recompute lag: from the oldest write this status now reflects (its 202) to now.
  local since = redis.call('ZSCORE', KEYS[4], pid)
  if since then
    redis.call('LPUSH', KEYS[8], tonumber(ARGV[6]) - tonumber(since))
    redis.call('LTRIM', KEYS[8], 0, 999)
  end
  redis.call('ZREM', KEYS[4], pid)
  -- Pending: every write of this patient is in its follow-up records now; a cohort left with nobody
  -- awaiting and statistics of its current version (the record did not change) is settled again.
  for c = 1, n do
    local k = 10 + (c - 1) * PER_COHORT
    redis.call('SREM', KEYS[k + 4], pid)
    settle_cohort(KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 3])
  end
end
return {current, fresh_cohorts}
"""
)


def commit_status(
    r: redis.Redis, data: PatientData, status: dict, timeline: bytes | dict, record: dict
) -> tuple[int, list[str]]:
    """Store a patient's status, timeline and cohort follow-up record computed from ``data``; clear
    the dirty mark (and the patient's awaiting marks in its cohorts) only if no write came in
    meanwhile, else store the documents marked pending. Returns the current data version (greater
    than ``data.version``: a newer write is pending, with its own task) and the cohorts whose
    refresh must be enqueued."""
    pid = data.patient_id
    cohorts = list(data.registration.get("cohorts", []))
    script_keys = [
        keys.status(pid),
        keys.status_version(pid),
        keys.version(pid),
        keys.DIRTY_PATIENTS,
        keys.timeline(pid),
        keys.DIRTY_COHORTS,
        keys.ENQUEUED_COHORTS,
        keys.LAG_PATIENTS,
        keys.WORKLIST_ROWS,
        keys.WORKLIST_DUE,
    ]
    for c in cohorts:
        script_keys += [
            keys.cohort_members(c), keys.cohort_followup(c), keys.cohort_version(c),
            keys.cohort_awaiting(c), keys.cohort_stats(c), keys.cohort_stats_version(c),
        ]  # fmt: skip
    args = [
        pid,
        data.version,
        orjson.dumps(status),
        timeline if isinstance(timeline, bytes) else orjson.dumps(timeline),
        canonical(record),
        now_ms(),
        len(cohorts),
        *cohorts,
        keys.WORKLIST_LEVEL_HEAD,
        keys.WORKLIST_ACTION_HEAD,
        *worklist.index_args(worklist.worklist_row(status)),
    ]
    current, fresh = r.eval(_COMMIT_STATUS, len(script_keys), *script_keys, *args)
    return int(current), [_decode(c) for c in fresh]


# A read replica that failed is left alone for this long (per process): the reads meanwhile go to the
# primary at once instead of each paying the replica's connect or read timeout (0.5 s, 1 s).
REPLICA_BACKOFF_S = 5.0
# replica client -> time.monotonic() it may be tried again (weak: a client dropped takes its mark along)
_replica_bad_until: weakref.WeakKeyDictionary[redis.Redis, float] = weakref.WeakKeyDictionary()


def read_preferring(replica: redis.Redis | None, primary: redis.Redis, read: Callable[[redis.Redis], T]) -> T:
    """A hot read (status, timeline) from REDIS_READ_URL's replica when there is one, from the primary
    when there is none or it cannot be reached (issue 12). What a replica answers is stale by at most
    its replication lag (README, "Configuration"). A replica down, stalled, loading, or cut off from its
    primary with ``replica-serve-stale-data no`` (MASTERDOWN) hands the read to the primary, and the
    process's reads skip the replica for REPLICA_BACKOFF_S before trying it again."""
    if replica is not None and _replica_bad_until.get(replica, 0.0) <= time.monotonic():
        try:
            return read(replica)
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.MasterDownError,
        ):
            # the primary answers, as without a replica; so do the next reads for a while
            _replica_bad_until[replica] = time.monotonic() + REPLICA_BACKOFF_S
    return read(primary)


def read_status(r: redis.Redis, patient_id: str) -> bytes | None:
    return r.get(keys.status(patient_id))


# The timeline is stored as its classifications (shared.timelines) and built on read with the stored
# results: both in one script, one round trip, one consistent view.
_READ_TIMELINE = """
-- KEYS[1] timeline, [2] results hash
-- The results even without a stored timeline: a reader of single results (FHIR) scores them itself.
return {redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[2])}
"""


def _timeline_parts(r: redis.Redis, patient_id: str) -> tuple[bytes | None, dict[str, bytes]]:
    """(the stored timeline, None if none was computed yet; the stored results), in one round trip."""
    stored, results = r.eval(_READ_TIMELINE, 2, keys.timeline(patient_id), keys.results(patient_id))
    return (stored or None), timelines.results_map(results)


def read_timeline(r: redis.Redis, patient_id: str) -> bytes | None:
    """The timeline document (GET /v1/patients/{id}/results) as its bytes, None if none was computed."""
    stored, results = _timeline_parts(r, patient_id)
    return None if stored is None else timelines.build(stored, results, patient_id)


def read_timeline_entries(r: redis.Redis, patient_id: str) -> tuple[list[dict], bool]:
    """Every stored result with its classification, in collection order, and whether any was scored at
    read time (stored since the timeline was computed, or replaced while it is pending): one round trip."""
    stored, results = _timeline_parts(r, patient_id)
    known: dict[str, tuple] = {}
    if stored is not None:
        table = timelines.rows(stored)
        if table is None:  # a whole document of the release before
            table = [(e["result_id"], e) for e in orjson.loads(stored)["results"]]
        known = dict(table)
    pending = stored is None or stored.startswith(PENDING_TRUE)
    out, behind = [], False
    for rid, raw in results.items():
        doc = decode_result(raw, patient_id)
        if rid in known and not pending:
            values = known[rid]
            if isinstance(values, dict):  # legacy entry
                out.append(values)
                continue
            out.append(
                {**doc, "withdrawn": values is None, "classification": timelines.classification(values)}
            )
            continue
        withdrawn, cls = timelines.scored_now(doc)
        stale = rid not in known or (
            (known[rid] is None) != withdrawn
            or (not isinstance(known[rid], dict) and timelines.classification(known[rid]) != cls)
        )
        behind = behind or stale
        out.append({**doc, "withdrawn": withdrawn, "classification": cls})
    out.sort(key=lambda e: collection_order(e["collected_at"], e["result_id"]))
    return out, behind


def status_version(r: redis.Redis, patient_id: str) -> int:
    return int(r.get(keys.status_version(patient_id)) or -1)


# --- idempotency keys ----------------------------------------------------------------------------

_RESERVE = """
-- KEYS[1] idempotency key; ARGV[1] pending document, [2] lease ms. The stored document, or nil once reserved.
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# The reservation is its owner's lease: renewed while the owner handles the request, it lapses within
# the lease once the owner is gone (a killed API worker), and only the owner may renew, release or
# answer it (a token in the document).
_RENEW = """
-- KEYS[1] idempotency key; ARGV[1] owner token, [2] lease ms. 1 if renewed, 0 if no longer ours.
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local doc = cjson.decode(held)
if doc['owner'] ~= ARGV[1] or doc['status'] ~= cjson.null then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = """
-- KEYS[1] idempotency key; ARGV[1] owner token. Deletes the reservation if it is still ours.
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local doc = cjson.decode(held)
if doc['owner'] ~= ARGV[1] or doc['status'] ~= cjson.null then return 0 end
return redis.call('DEL', KEYS[1])
"""

_REMEMBER = """
-- KEYS[1] idempotency key; ARGV[1] owner token, [2] answer document, [3] ttl s. Stores the answer
-- unless another owner holds the key now (ours lapsed meanwhile: its request answers for itself).
local held = redis.call('GET', KEYS[1])
if held then
  local doc = cjson.decode(held)
  if doc['owner'] ~= ARGV[1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def reserve_idempotency_key(
    r: redis.Redis, caller: str, idempotency_key: str, request_hash: str, lease_s: float, owner: str = ""
) -> dict | None:
    """Reserve a key for a request being handled (atomically) as ``owner``'s lease of ``lease_s``; if
    the key is already held, return what it holds: a finished response, or a pending reservation
    (``status`` None)."""
    pending = orjson.dumps({"request_hash": request_hash, "status": None, "owner": owner})
    held = r.eval(_RESERVE, 1, keys.idempotency(caller, idempotency_key), pending, int(lease_s * 1000))
    return orjson.loads(held) if held else None


def renew_idempotency_key(
    r: redis.Redis, caller: str, idempotency_key: str, owner: str, lease_s: float
) -> bool:
    """Extend ``owner``'s reservation by ``lease_s``; False once it is not theirs any more."""
    return bool(r.eval(_RENEW, 1, keys.idempotency(caller, idempotency_key), owner, int(lease_s * 1000)))


def release_idempotency_key(r: redis.Redis, caller: str, idempotency_key: str, owner: str = "") -> None:
    """Give a key back when its request stored nothing (refused or failed): the caller may retry."""
    r.eval(_RELEASE, 1, keys.idempotency(caller, idempotency_key), owner)


def remembered_body(stored: dict) -> bytes:
    """The response body a remembered answer holds (deflated since this release, plain before)."""
    if "body_z" in stored:
        return zlib.decompress(base64.b64decode(stored["body_z"]))
    return stored["body"].encode()


def remember_response(
    r: redis.Redis,
    caller: str,
    idempotency_key: str,
    request_hash: str,
    status: int,
    body: bytes,
    ttl_s: int,
    owner: str = "",
) -> None:
    """Keep the response to a reserved key, for its retries: the answer only (its status and its body
    deflated, about a quarter of a 1,000-result batch's 200 KB answer; no request body: the hash
    stands for it), for ``ttl_s`` (IDEMPOTENCY_TTL_S)."""
    packed = base64.b64encode(zlib.compress(body, 6)).decode()
    doc = {"request_hash": request_hash, "status": status, "body_z": packed}
    r.eval(_REMEMBER, 1, keys.idempotency(caller, idempotency_key), owner, orjson.dumps(doc), ttl_s)
