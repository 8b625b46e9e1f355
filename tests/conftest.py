"""Fixtures: a real redis-server and a real Celery worker, started by the tests themselves."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.procs import RedisServer, Worker

# Keys for the tests: one with every scope (the default for test clients) and one per scope.
FULL_KEY = "test-full-key"
SCOPED_KEYS = {
    f"test-{s.replace(':', '-')}": [s] for s in ("results:write", "status:read", "cohorts:write", "ops:read")
}
os.environ["API_KEYS"] = json.dumps(
    {FULL_KEY: {"name": "tests", "scopes": ["results:write", "status:read", "cohorts:write", "ops:read"]},
     **SCOPED_KEYS}
)  # fmt: skip
os.environ.setdefault("RATE_LIMIT", "100000/minute")


class AuthorizedClient(FlaskClient):
    """A test client that sends the full-scope key unless a test sets Authorization itself."""

    def open(self, *args, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Authorization", f"Bearer {FULL_KEY}")
        return super().open(*args, headers=headers, **kwargs)


Flask.test_client_class = AuthorizedClient


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill, stall or fill it, with the API's
    REDIS_URL pointing at it; `appendfsync always` as deployed (docker-compose.yml), the setting under
    which a kill -9 loses nothing acknowledged (with `everysec` a write postponed behind a background
    fsync can be lost)."""
    server = RedisServer(tmp_path / "redis", appendfsync="always")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(redis_url, "main", tmp_path_factory.mktemp("logs"))
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def app(redis_url: str):
    os.environ["REDIS_URL"] = redis_url
    from services.api import create_app
    from shared.config import load_settings

    return create_app(load_settings())


@pytest.fixture
def client(app, worker):
    return app.test_client()


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def pid() -> str:
    """A fresh patient id, so tests sharing one Redis never see each other's patients."""
    return f"P-{uuid.uuid4().hex[:12]}"
