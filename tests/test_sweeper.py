"""The sweeper requeues lost work, not work waiting behind a backlog (issue 11: a 1,000,000-result
import had every dirty patient requeued each sweep once the backlog was older than REQUEUE_AFTER_S,
and the duplicates grew the backlog). Real Redis, real Celery messages, no worker consuming."""

from __future__ import annotations

import time

import redis

from services.worker import sweeper
from shared import keys, work
from shared.config import load_settings
from shared.queue import (
    PATIENT_QUEUE,
    RECOMPUTE_PATIENT,
    RECOMPUTE_PATIENTS,
    REFRESH_COHORT,
    make_celery,
    send,
)
from shared.store import now_ms


def _dirty_and_enqueued(r: redis.Redis, patient_id: str, enqueued_ms: int) -> None:
    r.zadd(keys.DIRTY_PATIENTS, {patient_id: now_ms() - 60_000})
    r.zadd(keys.ENQUEUED_PATIENTS, {patient_id: enqueued_ms})


def test_an_item_enqueued_after_the_oldest_waiting_message_is_not_requeued(own_redis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    celery = make_celery(load_settings())
    send(celery, RECOMPUTE_PATIENT, "SOMEONE-ELSE")  # the backlog's oldest message, stamped now
    time.sleep(0.005)
    _dirty_and_enqueued(r, "P-WAITING", now_ms())  # enqueued after it: still waiting behind it
    time.sleep(0.005)  # older than the age asked below: without the queue's bound, it would be due
    assert work.due_for_requeue(r, "patient", older_than_s=0) == []
    # Once the backlog drains (the message delivered), an item still dirty and enqueued is lost.
    assert r.rpop(PATIENT_QUEUE) is not None
    assert work.due_for_requeue(r, "patient", older_than_s=0) == ["P-WAITING"]
    # Requeued once: its enqueue time is now, so the next sweep leaves it to that task.
    assert work.due_for_requeue(r, "patient", older_than_s=10) == []


def test_an_item_enqueued_before_the_oldest_waiting_message_is_lost(own_redis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    celery = make_celery(load_settings())
    _dirty_and_enqueued(r, "P-LOST", now_ms() - 1_000)  # its message was delivered before this one
    send(celery, RECOMPUTE_PATIENT, "SOMEONE-ELSE")
    assert work.due_for_requeue(r, "patient", older_than_s=0.5) == ["P-LOST"]
    # The age still applies: a recent enqueue is left alone whatever the queue holds.
    _dirty_and_enqueued(r, "P-RECENT", now_ms() - 1_000)
    assert work.due_for_requeue(r, "patient", older_than_s=30) == []


def test_a_message_without_its_enqueue_time_falls_back_to_the_age(own_redis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    r.lpush(PATIENT_QUEUE, b'{"not": "a celery message"}', b"not json at all")
    _dirty_and_enqueued(r, "P-OLD", now_ms() - 20_000)
    assert work.due_for_requeue(r, "patient", older_than_s=10) == ["P-OLD"]


def test_the_sweeper_requeues_patients_a_hundred_to_a_message() -> None:
    due = [f"P{i:03d}" for i in range(250)]
    messages = sweeper._messages("patient", due)
    assert {task for task, _ in messages} == {RECOMPUTE_PATIENTS}
    assert [len(m) for _, m in messages] == [100, 100, 50]
    assert [p for _, m in messages for p in m] == due
    assert sweeper._messages("cohort", ["C1", "C2"]) == [(REFRESH_COHORT, "C1"), (REFRESH_COHORT, "C2")]
