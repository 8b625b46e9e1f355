"""Configuration from the environment, in one place for the API and the worker.

Every setting has a default that runs on a developer machine; deployments override them
with environment variables (see README.md, "Configuration").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (issue 12): the sentinels to ask for the current primary. A bad entry is
    refused at start-up, naming it, rather than found at the first failover."""
    found = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS: {entry!r} is not host:port (e.g. sentinel-1:26379)")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def sentinel_broker_url(sentinels: tuple[tuple[str, int], ...], password: str | None) -> str:
    """kombu's Sentinel transport URL: one ``sentinel://`` URL per sentinel, joined by ``;`` (the
    password in each is the primary's; the sentinels' own goes in ``sentinel_kwargs``)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}" for host, port in sentinels)


def _store_broker(redis_url: str, sentinels: tuple[tuple[str, int], ...], password: str | None) -> str:
    """The broker URL that is the data store itself: the sentinels' primary, or REDIS_URL with
    REDIS_PASSWORD (the broker's default, and what queue.same_redis compares the broker with)."""
    return sentinel_broker_url(sentinels, password) if sentinels else with_password(redis_url, password)


def with_password(url: str, password: str | None) -> str:
    """``url`` with REDIS_PASSWORD in it when it names a Redis and carries no credentials of its own
    (the default broker and result backend are REDIS_URL: without this they would connect without the
    password the data store's client sends). A URL with a user or password is left as it is."""
    parts = urlsplit(url)
    if not password or parts.scheme not in ("redis", "rediss") or "@" in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))


def _non_negative(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {text!r}")
    return value


def _retention_days(text: str) -> float:
    days = float(text)
    if not (math.isfinite(days) and 0 <= days <= 36_500):
        raise ValueError(f"AUDIT_RETENTION_DAYS must be 0 (keep all) to 36500 days, got {text!r}")
    return days


@dataclass(frozen=True)
class Settings:
    redis_url: str
    broker_url: str
    result_backend: str
    # Most items one POST /v1/assay-results may carry; larger batches are split by the sender.
    max_batch: int
    # Largest request body accepted (413 above it): a full batch of results fits well within it.
    max_body_bytes: int
    # The sweeper re-enqueues a dirty patient whose last enqueue is older than this, so a task lost
    # with a killed worker is redone in seconds, not after the broker's one-hour visibility timeout.
    sweep_interval_s: float
    requeue_after_s: float
    # A cohort refresh waits this long after the first change, so a burst of results coalesces
    # into a handful of refreshes; the lock TTL bounds a refresh that died holding it.
    cohort_debounce_s: float
    cohort_lock_ttl_s: float
    # API keys (services/api/auth.py): a JSON object, or a file of one holding sha256 digests.
    api_keys: str | None
    api_keys_file: str | None
    # Per-key request budget (the limits library's notation), kept in Redis so all API processes share it.
    rate_limit: str
    # The hot reads (status, timeline) are limited per key within each API process instead: a Redis
    # round trip for the count would cost them more than the read itself (bench/README.md).
    hot_read_rate_limit: str
    # How long a task tracking document (GET /v1/tasks/{id}) is kept.
    task_ttl_s: int
    # How long the answer to an Idempotency-Key is kept for its retries (deflated: a few KB for a
    # small batch, about 45 KB for 1,000 results each touching another patient).
    idempotency_ttl_s: int
    # Broker visibility timeout: unacked messages of a dead worker come back after this.
    visibility_timeout_s: int
    # Audit entries older than this many days are trimmed by the sweeper; 0 keeps every entry (the
    # default: an audit trail that trims itself by count would drop writes without anyone deciding).
    audit_retention_days: float
    # Interoperability (shared/interop): a JSON file mapping laboratories' local result codes to the
    # service's codes (added to the defaults); which PID-3 assigning authority names the patient id
    # (empty: the first identifier); the MLLP listener's address and the API key name it audits as.
    lab_codes_file: str | None = None
    patient_id_authority: str = ""
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    mllp_caller: str = "mllp"
    # A message must arrive whole within this many seconds of the last one (an idle or stalled connection
    # is closed: engines reconnect), so a silent peer cannot hold a connection forever.
    mllp_read_timeout_s: float = 300.0
    # High availability (issue 12; README "High availability"). With sentinels set they, not REDIS_URL,
    # name the data store, the broker and the rate limiter's Redis: the primary the sentinels elect.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    # A replica the hot reads (status, timeline) may use; stale by at most the replication lag.
    redis_read_url: str | None = None
    # Under Sentinel, REDIS_READ_FROM_REPLICAS=1: the hot reads go to the replicas the sentinels list.
    redis_read_from_replicas: bool = False
    # An acknowledged write has reached this many replicas (WAIT) within the timeout, or the API says
    # 503 "stored on the primary, not yet replicated" (shared.store.replicate_or_raise).
    write_replicas: int = 0
    write_replica_timeout_ms: int = 1000

    @property
    def sentinel(self) -> bool:
        return bool(self.redis_sentinels)

    @property
    def store_broker_url(self) -> str:
        """The broker URL that is the data store itself: REDIS_URL, or kombu's ``sentinel://`` list of
        the same sentinels (kombu takes one URL per sentinel, separated by ``;``)."""
        return _store_broker(self.redis_url, self.redis_sentinels, self.redis_password)


def load_settings() -> Settings:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    sentinels = _sentinels(os.environ.get("REDIS_SENTINELS", ""))
    master = os.environ.get("REDIS_SENTINEL_MASTER", "mymaster")
    if sentinels and not master.strip():
        raise ValueError("REDIS_SENTINEL_MASTER must name the master the sentinels monitor")
    replicas = _non_negative("WRITE_REPLICAS", 0)
    replica_timeout_ms = _non_negative("WRITE_REPLICA_TIMEOUT_MS", 1000)
    if replicas and not replica_timeout_ms:
        # WAIT n 0 blocks until n replicas answer, for ever: a request would hang with its replica.
        raise ValueError("WRITE_REPLICA_TIMEOUT_MS must be > 0 when WRITE_REPLICAS is set")
    password = os.environ.get("REDIS_PASSWORD") or None
    read_from_replicas = os.environ.get("REDIS_READ_FROM_REPLICAS", "0").strip()
    if read_from_replicas not in ("0", "1", ""):
        raise ValueError(f"REDIS_READ_FROM_REPLICAS must be 0 or 1, got {read_from_replicas!r}")
    if read_from_replicas == "1" and not sentinels:
        raise ValueError("REDIS_READ_FROM_REPLICAS=1 needs REDIS_SENTINELS (without them: REDIS_READ_URL)")
    if read_from_replicas == "1" and os.environ.get("REDIS_READ_URL"):
        raise ValueError("set REDIS_READ_URL or REDIS_READ_FROM_REPLICAS=1, not both")
    store_broker = _store_broker(redis_url, sentinels, password)
    # Under Sentinel the result backend is off: results are ignored (task_ignore_result) and nobody
    # reads them (work is tracked in Redis: GET /v1/tasks/{id}), so a second failover-aware client
    # would buy nothing.
    backend_default = "" if sentinels else store_broker
    return Settings(
        redis_url=redis_url,
        broker_url=os.environ.get("CELERY_BROKER_URL", store_broker),
        result_backend=os.environ.get("CELERY_RESULT_BACKEND", backend_default),
        redis_sentinels=sentinels,
        redis_sentinel_master=master.strip(),
        redis_password=password,
        redis_sentinel_password=os.environ.get("REDIS_SENTINEL_PASSWORD") or None,
        redis_read_url=os.environ.get("REDIS_READ_URL") or None,
        redis_read_from_replicas=read_from_replicas == "1",
        write_replicas=replicas,
        write_replica_timeout_ms=replica_timeout_ms,
        max_batch=_int("MAX_BATCH", 1000),
        max_body_bytes=_int("MAX_BODY_BYTES", 2 * 1024 * 1024),
        sweep_interval_s=_float("SWEEP_INTERVAL_S", 2.0),
        requeue_after_s=_float("REQUEUE_AFTER_S", 10.0),
        cohort_debounce_s=_float("COHORT_DEBOUNCE_S", 1.0),
        cohort_lock_ttl_s=_float("COHORT_LOCK_TTL_S", 60.0),
        task_ttl_s=_int("TASK_TTL_S", 86400),
        idempotency_ttl_s=_int("IDEMPOTENCY_TTL_S", 86400),
        api_keys=os.environ.get("API_KEYS"),
        api_keys_file=os.environ.get("API_KEYS_FILE"),
        rate_limit=os.environ.get("RATE_LIMIT", "6000/minute"),
        hot_read_rate_limit=os.environ.get("HOT_READ_RATE_LIMIT", "60000/minute"),
        visibility_timeout_s=_int("VISIBILITY_TIMEOUT_S", 3600),
        audit_retention_days=_retention_days(os.environ.get("AUDIT_RETENTION_DAYS", "0")),
        lab_codes_file=os.environ.get("LAB_CODES_FILE") or None,
        patient_id_authority=os.environ.get("PATIENT_ID_AUTHORITY", ""),
        # Loopback by default: an MLLP port is unauthenticated, so exposing it is a deliberate choice.
        mllp_host=os.environ.get("MLLP_HOST", "127.0.0.1"),
        mllp_port=_int("MLLP_PORT", 2575),
        mllp_caller=os.environ.get("MLLP_CALLER", "mllp"),
        mllp_read_timeout_s=_float("MLLP_READ_TIMEOUT_S", 300.0),
    )
