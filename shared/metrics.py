"""Task metrics kept in Redis: workers are separate processes (and machines), so they count into
one hash that the API's /metrics exports in Prometheus format (prometheus-client custom collector).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from shared import keys, work
from shared.queue import QUEUES

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def record_task(r: redis.Redis, task: str, outcome: str, seconds: float) -> None:
    """Count one finished task and its latency (cumulative histogram buckets, as Prometheus)."""
    pipe = r.pipeline(transaction=False)
    label = f"{task}|{outcome}"
    pipe.hincrby(keys.TASK_METRICS, f"count|{label}", 1)
    pipe.hincrbyfloat(keys.TASK_METRICS, f"sum|{label}", seconds)
    for le in BUCKETS:
        if seconds <= le:
            pipe.hincrby(keys.TASK_METRICS, f"bucket|{label}|{le}", 1)
    pipe.execute()


class TaskCollector:
    """prometheus-client collector: task counts, latency histograms, queue depths and consumers from Redis."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def collect(self) -> Iterator:
        try:
            raw = {k.decode(): float(v) for k, v in self.r.hgetall(keys.TASK_METRICS).items()}
            depths = {q: self.r.llen(q) for q in QUEUES}
            consumers = work.live_consumers(self.r)
            memory = self.r.info("memory")
        except redis.RedisError:
            return
        yield from self._tasks(raw)
        depth = GaugeMetricFamily("cml_queue_depth", "Tasks waiting in each queue", labels=["queue"])
        for q, n in depths.items():
            depth.add_metric([q], n)
        yield depth
        # 0 is the alert: work routed to a queue that no live worker consumes is never done.
        listening = GaugeMetricFamily(
            "cml_queue_consumers", "Live workers consuming each queue (heartbeats)", labels=["queue"]
        )
        for q, names in consumers.items():
            listening.add_metric([q], len(names))
        yield listening
        # Alert on used / max (when max > 0): at maxmemory with noeviction every write answers 503.
        yield GaugeMetricFamily(
            "cml_redis_used_memory_bytes", "Memory Redis uses (INFO used_memory)", value=memory["used_memory"]
        )
        yield GaugeMetricFamily(
            "cml_redis_maxmemory_bytes", "Redis maxmemory (0: no limit set)", value=memory.get("maxmemory", 0)
        )

    @staticmethod
    def _tasks(raw: dict[str, float]) -> Iterator:
        count = CounterMetricFamily(
            "cml_tasks", "Finished tasks by task and outcome", labels=["task", "outcome"]
        )
        hist = HistogramMetricFamily(
            "cml_task_seconds", "Task latency by task and outcome", labels=["task", "outcome"]
        )
        for name, value in raw.items():
            kind, _, label = name.partition("|")
            if kind != "count":
                continue
            task, outcome = label.split("|")
            count.add_metric([task, outcome], value)
            buckets = [(str(le), raw.get(f"bucket|{label}|{le}", 0.0)) for le in BUCKETS] + [("+Inf", value)]
            hist.add_metric([task, outcome], buckets, raw.get(f"sum|{label}", 0.0))
        yield count
        yield hist
