"""The worker's deliveries and acknowledgements survive Redis at ``maxmemory`` (``noeviction``).

kombu's Redis transport pops a message (BRPOP, allowed under OOM) and then records it as unacked
(ZADD and HSET in a MULTI, refused): the error leaves the consumer's event loop and the worker exits
with the message gone from Redis. Here the delivery goes ahead unrecorded instead: the task runs (its
writes are refused as transient, the item stays dirty) and the sweeper re-enqueues it, so a message
lost with a worker killed meanwhile costs nothing (tasks are hints; the dirty set is the truth).

It acknowledges a message with ZREM and HDEL in a MULTI. Redis refuses every
command queued in a MULTI while used memory is above ``maxmemory`` (even one that frees memory), so
the acknowledgement raises ``OutOfMemoryError`` in the consumer's event loop and the worker exits
("Unrecoverable error"). The same two commands sent without MULTI are allowed (neither is marked
``denyoom``) and free memory. If even those fail, the message stays unacknowledged: the broker gives
it back after its visibility timeout, and the sweeper has redone the item long before (a duplicate
recompute is a no-op). Either way the worker lives on. The periodic restore of messages past their
visibility timeout takes a lock with SET: a round refused is skipped, the next one does it.

Not covered: a worker *started* while Redis is at maxmemory still exits as it declares its queues
(kombu's queue_declare and binding writes are refused); a running worker rides the episode out.
"""

from __future__ import annotations

import logging

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_original_ack = kombu_redis.QoS.ack
_original_append = kombu_redis.QoS.append
_original_restore_visible = kombu_redis.QoS.restore_visible


def _restore_visible(self: kombu_redis.QoS, *args: object, **kwargs: object) -> None:
    # Takes a lock (SET, refused under OOM) to give back messages past their visibility timeout; it
    # runs as the consumer starts and then periodically: skipping one round delays, loses nothing.
    try:
        _original_restore_visible(self, *args, **kwargs)
    except redis.exceptions.ResponseError as exc:
        log.warning("restoring unacked messages skipped (%s)", type(exc).__name__)


def _append(self: kombu_redis.QoS, message: object, delivery_tag: str) -> None:
    try:
        _original_append(self, message, delivery_tag)
    except redis.exceptions.ResponseError as exc:
        log.warning("delivery not recorded as unacked (%s): the sweeper covers it", type(exc).__name__)
        super(kombu_redis.QoS, self).append(message, delivery_tag)


def _ack(self: kombu_redis.QoS, delivery_tag: str) -> None:
    try:
        _original_ack(self, delivery_tag)
        return
    except redis.exceptions.ResponseError as exc:
        log.warning("acknowledgement refused (%s): acknowledging without MULTI", type(exc).__name__)
    try:
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag).execute()
    except redis.exceptions.RedisError as exc:
        log.warning(
            "acknowledgement failed (%s): the message comes back after the visibility timeout",
            type(exc).__name__,
        )
    # Forget the delivery locally either way (kombu's virtual QoS bookkeeping).
    super(kombu_redis.QoS, self).ack(delivery_tag)


_original_reject = kombu_redis.QoS.reject


def _reject(self: kombu_redis.QoS, delivery_tag: str, requeue: bool = False) -> None:
    # A task whose child process died is rejected (requeued: LPUSH in a MULTI, refused under OOM).
    # The item is still dirty: the sweeper re-enqueues it; only the local bookkeeping must go.
    try:
        _original_reject(self, delivery_tag, requeue=requeue)
    except redis.exceptions.ResponseError as exc:
        log.warning("reject refused (%s): the sweeper re-enqueues the item", type(exc).__name__)
        _ack(self, delivery_tag)


def install() -> None:
    """Patch kombu's Redis QoS once per process (the worker only: the API never consumes)."""
    if kombu_redis.QoS.ack is not _ack:
        kombu_redis.QoS.ack = _ack
        kombu_redis.QoS.append = _append
        kombu_redis.QoS.restore_visible = _restore_visible
        kombu_redis.QoS.reject = _reject
