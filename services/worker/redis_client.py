"""One Redis client per worker process, made lazily so that prefork children each get their own
connection pool after the fork (design-notes.md, "Processes")."""

from __future__ import annotations

import os

import redis

from shared.config import load_settings
from shared.store import connect_from_settings

_client: tuple[int, redis.Redis] | None = None


def redis_client() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), connect_from_settings(load_settings()))
    return _client[1]
