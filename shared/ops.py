"""What ops watch: queues, workers, backlog, failures, recompute lag, the audit trail.

Read from Redis only (the broker's lists, kombu's unacked hash, the dirty sets, the worker
heartbeats), so any API process can answer without asking the workers.
"""

from __future__ import annotations

import orjson
import redis

from shared import keys, work
from shared.queue import QUEUES
from shared.store import _decode, now_ms

WORKER_SILENCE_S = work.WORKER_SILENCE_S


def _oldest_age_s(r: redis.Redis, queue: str, now: int) -> float | None:
    # Kombu LPUSHes and BRPOPs: the oldest message is the last element. The API and the sweeper
    # stamp each message with an ``enqueued_ms`` header.
    raw = r.lindex(queue, -1)
    if raw is None:
        return None
    stamp = orjson.loads(raw).get("headers", {}).get("enqueued_ms")
    return (now - stamp) / 1000 if stamp else None


def _in_flight(r: redis.Redis) -> dict[str, int]:
    counts = {q: 0 for q in QUEUES}
    for raw in r.hvals(keys.KOMBU_UNACKED):
        try:
            routing = orjson.loads(raw)[0]["properties"]["delivery_info"]["routing_key"]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        counts[routing] = counts.get(routing, 0) + 1
    return counts


# /readyz warns (and ops/alerts should act) when Redis uses this share of its maxmemory: above it, at
# maxmemory with noeviction, every write is refused (503) until memory is freed or raised.
MEMORY_WARN_RATIO = 0.8


def redis_memory(r: redis.Redis) -> dict:
    """Redis's used and maximum memory (INFO memory), the share used, and whether it is near the limit.
    ``max_bytes`` 0 means no limit set (the host's memory is the limit, and the OOM killer)."""
    info = r.info("memory")
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    ratio = used / limit if limit else None
    return {
        "used_bytes": used,
        "max_bytes": limit,
        "policy": str(info.get("maxmemory_policy", "")),
        "used_ratio": round(ratio, 4) if ratio is not None else None,
        "near_limit": ratio is not None and ratio >= MEMORY_WARN_RATIO,
    }


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def queue_report(r: redis.Redis) -> dict:
    now = now_ms()
    in_flight = _in_flight(r)
    beats = {_decode(w): int(ms) for w, ms in r.zrange(keys.WORKERS, 0, -1, withscores=True)}
    alive = {w for w, ms in beats.items() if now - ms <= WORKER_SILENCE_S * 1000}
    queues_of = work.worker_queues(r, beats)
    # Who listens to each queue, from the live workers' heartbeats: a queue with work and no
    # consumer is work that never gets done (and fails /readyz).
    consumers = work.consumers({w: q for w, q in queues_of.items() if w in alive})
    queues = [
        {"queue": q, "depth": r.llen(q), "oldest_age_s": _oldest_age_s(r, q, now), "in_flight": in_flight[q],
         "consumers": consumers[q], "consumers_alive": len(consumers[q])}
        for q in QUEUES
    ]  # fmt: skip
    workers = [
        {"worker": w, "last_heartbeat_ms": ms, "age_s": (now - ms) / 1000, "alive": w in alive,
         "queues": queues_of[w]}
        for w, ms in beats.items()
    ]  # fmt: skip
    backlog = {}
    for kind, key in keys.DIRTY.items():
        oldest = r.zrange(key, 0, 0, withscores=True)
        backlog[kind] = {
            "dirty": r.zcard(key),
            "oldest_age_s": (now - oldest[0][1]) / 1000 if oldest else None,
        }
    lags = sorted(float(x) for x in r.lrange(keys.LAG_PATIENTS, 0, -1))
    return {
        "queues": queues,
        "workers": workers,
        "workers_alive": sum(w["alive"] for w in workers),
        "backlog": backlog,
        "failed": {kind: r.hlen(key) for kind, key in keys.DEAD.items()},
        "recompute_lag_ms": {
            "samples": len(lags),
            "p50": _percentile(lags, 0.5),
            "p99": _percentile(lags, 0.99),
        },
        "redis_memory": redis_memory(r),
    }


def audit_entries(r: redis.Redis, count: int, before: str | None) -> list[dict]:
    rows = r.xrevrange(keys.AUDIT, max=f"({before}" if before else "+", min="-", count=count)
    return [
        {
            "id": _decode(i),
            **orjson.loads(fields[b"entry"]),
            "outcomes": _decode(fields[b"outcomes"]).split(","),
        }
        for i, fields in rows
    ]
